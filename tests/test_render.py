"""Rendering helpers: tables of plain cells, laid out without tabulate, must print exactly what tabulate prints."""

from __future__ import annotations

import itertools
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from ckptcheck.render.inspect import inspect_dict, inspect_json, inspect_json_pieces, tensor_dict, tensor_text
from ckptcheck.render.jsontext import escape_surrogates
from ckptcheck.render.tables import human_bytes, table

MANY_ROWS = 100  # tables this long and longer, as well as short ones


def tabulated(headers: list[str], rows: list[list[str]]) -> str:
    return str(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))


def test_large_table_matches_tabulate() -> None:
    rng = random.Random(7)
    headers = ["name", "dtype", "shape", "size", "a-long-header-name"]
    rows = [
        [f"layer_{i:05d}/" + "x" * rng.randint(0, 30), rng.choice(["float32", "bfloat16"]),
         f"[{rng.randint(1, 99999)}]", human_bytes(rng.randint(0, 10**9)), rng.choice(["", "constant 0.5"])]
        for i in range(MANY_ROWS + 500)
    ]
    expected = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    assert table(headers, rows) == expected


def test_wide_header_in_the_middle_keeps_its_padding() -> None:
    """A header wider than its cells gets 2 characters of padding from tabulate; the columns after it shift by
    them (ResNet50 `inspect --stats`: the `note` header stood 4 columns right of the notes)."""
    headers = ["name", "a-wide-header", "note"]
    rows = [[f"t{i}", "x", "constant 0.5"] for i in range(MANY_ROWS + 5)]
    out = table(headers, rows)
    assert out == tabulated(headers, rows)
    lines = out.split("\n")
    assert lines[0].index("note") == lines[2].index("constant")


_PLAIN = st.text(alphabet=string.ascii_letters + string.digits + " _/.[],:-", max_size=12)
# Cells that tabulate treats specially (numbers, booleans, surrounding spaces) or that are not plain ASCII.
_ODD = st.sampled_from(["", " ", "True", "False", "1", "-2.5", "1e5", "nan", " x", "x ", "日本", "a\nb", "t\tb",
                        "\x1b[31mred\x1b[0m", "None"])


@settings(max_examples=150, deadline=None)
@given(
    headers=st.lists(st.one_of(_PLAIN, _ODD), min_size=1, max_size=6),
    data=st.data(),
    count=st.one_of(st.integers(min_value=1, max_value=8), st.integers(min_value=MANY_ROWS, max_value=MANY_ROWS + 30)),
)
@pytest.mark.slow
def test_tables_equal_tabulate_byte_for_byte(headers: list[str], data: st.DataObject, count: int) -> None:
    """Whatever the headers and cells, short or long, a table is exactly what tabulate prints."""
    width = len(headers)
    row = st.lists(st.one_of(_PLAIN, _PLAIN, _PLAIN, _ODD), min_size=width, max_size=width)
    sample = data.draw(st.lists(row, min_size=1, max_size=8))
    rows = [sample[i % len(sample)] for i in range(count)]
    assert table(headers, rows) == tabulated(headers, rows)


@settings(max_examples=100, deadline=None)
@given(header_widths=st.lists(st.integers(min_value=0, max_value=20), min_size=2, max_size=7),
       cell_widths=st.lists(st.integers(min_value=0, max_value=20), min_size=7, max_size=7),
       count=st.sampled_from([1, 2, 3, MANY_ROWS + 3]))
def test_header_wider_or_narrower_than_cells_in_any_column(header_widths: list[int], cell_widths: list[int],
                                                           count: int) -> None:
    headers = ["h" * w for w in header_widths]
    rows = [["c" * (cell_widths[j] if i % 3 == 0 else cell_widths[j] // 2) for j in range(len(headers))]
            for i in range(count)]
    assert table(headers, rows) == tabulated(headers, rows)


def test_multiline_wide_and_padded_cells_use_tabulate_itself() -> None:
    for odd, count in itertools.product(("a\nb", "日本", " padded ", "tab\t"), (4, MANY_ROWS + 1)):
        rows = [[f"t{i}", odd if i == 3 else "x", ""] for i in range(count)]
        headers = ["name", "paths", "empty"]
        assert table(headers, rows) == tabulate(rows, headers=headers, tablefmt="simple",
                                                       disable_numparse=True), repr(odd)


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1023) == "1023 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(3 << 30) == "3.0 GiB"


def test_inspect_json_is_json_dumps_of_inspect_dict(tf2_all_dtypes: str, tf1_model_dir: object) -> None:
    """The row-by-row JSON writer prints exactly the text json.dumps prints for the same listing."""
    import json

    import ckptcheck
    from ckptcheck.records import CheckpointInfo, TensorInfo

    for path in (tf2_all_dtypes, str(tf1_model_dir)):
        with ckptcheck.open_checkpoint(path) as reader:
            info = reader.info()
            expected = json.dumps(inspect_dict(info, info.tensors), ensure_ascii=False, allow_nan=False)
            assert inspect_json(info, info.tensors) == expected
    odd = [
        TensorInfo('quote"back\\slash', "float32", (), 4, 0, None),
        TensorInfo("ctrl\x00\x1b\n\ttab", "bfloat16", (0, 3), 0, 2, "x.data-00000-of-00001"),
        TensorInfo("日本/層 é 🙂", "string", (1, 2, 3), 10**15, 0, 'f"ile'),
        TensorInfo("\ud800lone-surrogate", "int4", (7,), 4, 0, None),
    ]
    info = CheckpointInfo("tf2", "p", "p", ("a", "b"), tuple(odd), shards=1, writer=None, metadata={"k": "v"})
    expected = json.dumps(inspect_dict(info, odd), ensure_ascii=False, allow_nan=False)
    assert inspect_json(info, odd) == expected
    assert inspect_json(info, []) == json.dumps(inspect_dict(info, []), ensure_ascii=False)
    # Written a piece at a time, the seams between pieces leave the same text, however the rows fall into pieces.
    for per_piece in (1, 2, 3, 4, 5):
        pieces = list(inspect_json_pieces(info, odd, rows_per_piece=per_piece))
        assert len(pieces) == 2 + -(-len(odd) // per_piece) and "".join(pieces) == expected
    # Escaped, a lone surrogate (an undecodable byte of a name) leaves valid UTF-8 that loads back the same.
    escaped = escape_surrogates(expected)
    escaped.encode("utf-8")
    assert json.loads(escaped) == json.loads(expected) and "\\ud800lone" in escaped and "日本/層 é 🙂" in escaped
    assert escape_surrogates("plain") == "plain"


def test_string_elements_are_unambiguous() -> None:
    """UTF-8 text prints as a str literal and is a JSON string; other bytes print as a bytes literal and are
    {"base64": ...} in JSON — so the text backslash-x-e-a and the byte 0xEA never look alike."""
    import numpy as np

    from ckptcheck.records import TensorInfo

    values = np.array([[b"\\xea", b"\xea"], ["caf\u00e9", b""]], dtype=object)
    info = TensorInfo("s", "string", (2, 2), 5)
    text = tensor_text(info, values)
    assert "'\\\\xea'" in text and "b'\\xea'" in text and "'café'" in text
    assert tensor_dict(info, values)["values"] == [["\\xea", {"base64": "6g=="}], ["café", ""]]
    scalar = tensor_dict(TensorInfo("s", "string", (), 1), np.array(b"\x80", dtype=object))
    assert scalar["values"] == {"base64": "gA=="}


def test_tables_fit_a_terminal_width() -> None:
    from ckptcheck.render.tables import fit_cells

    headers = ["name", "dtype", "note"]
    cells = [[f"model/layer_{i}/very/long/object/path/.ATTRIBUTES/VARIABLE_VALUE", "float32", "constant " + "9" * 30]
             for i in range(5)]
    fitted = fit_cells(headers, cells, 60)
    for row in fitted:
        assert sum(map(len, row)) + 2 * (len(row) - 1) <= 60
    assert fitted[3][0].startswith("model/layer_3/") and fitted[3][0].endswith("UE") and "..." in fitted[3][0]
    assert fitted[0][1] == "float32"  # narrow columns are left alone
    assert fit_cells(headers, cells, 500) == cells  # nothing to do


def test_inspect_in_a_real_terminal_fits_its_width() -> None:
    """Through a pseudo-terminal 80 columns wide, every line of a wide listing fits; piped, it stays whole."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    fixture = str(Path(__file__).resolve().parents[1] / "fixtures" / "tf2")
    args = [sys.executable, "-m", "ckptcheck", "inspect", fixture, "--stats", "--objects"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    proc = subprocess.Popen(args, stdout=secondary, stderr=subprocess.PIPE, env=env)
    os.close(secondary)
    out = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(primary)
    # The header's lines name this checkout's paths, which may be long anywhere; the tables must fit.
    lines = [line for line in out.decode().replace("\r", "").splitlines() if fixture not in line]
    assert proc.returncode == 0 and lines
    assert max(map(len, lines)) <= 80, max(lines, key=len)
    piped = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert max(map(len, piped.stdout.splitlines())) > 80  # the same listing, whole
