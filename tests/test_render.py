"""Rendering helpers: the fast path for large tables must print exactly what tabulate prints."""

from __future__ import annotations

import random

from tabulate import tabulate

from ckptcheck import render


def test_large_table_matches_tabulate() -> None:
    rng = random.Random(7)
    headers = ["name", "dtype", "shape", "size", "a-long-header-name"]
    rows = [
        [f"layer_{i:05d}/" + "x" * rng.randint(0, 30), rng.choice(["float32", "bfloat16"]),
         f"[{rng.randint(1, 99999)}]", render.human_bytes(rng.randint(0, 10**9)), rng.choice(["", "constant 0.5"])]
        for i in range(render.FAST_TABLE_ROWS + 500)
    ]
    expected = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    assert render.table(headers, rows) == expected


def test_multiline_wide_and_padded_cells_use_tabulate_itself() -> None:
    for odd in ("a\nb", "日本", " padded ", "tab\t"):
        rows = [[f"t{i}", odd if i == 3 else "x", ""] for i in range(render.FAST_TABLE_ROWS + 1)]
        headers = ["name", "paths", "empty"]
        assert render.table(headers, rows) == tabulate(rows, headers=headers, tablefmt="simple",
                                                       disable_numparse=True), repr(odd)


def test_human_bytes() -> None:
    assert render.human_bytes(0) == "0 B"
    assert render.human_bytes(1023) == "1023 B"
    assert render.human_bytes(1536) == "1.5 KiB"
    assert render.human_bytes(3 << 30) == "3.0 GiB"


def test_inspect_json_is_json_dumps_of_inspect_dict(tf2_all_dtypes: str, tf1_model_dir: object) -> None:
    """The row-by-row JSON writer prints exactly the text json.dumps prints for the same listing."""
    import json

    import ckptcheck
    from ckptcheck.model import CheckpointInfo, TensorInfo

    for path in (tf2_all_dtypes, str(tf1_model_dir)):
        with ckptcheck.open_checkpoint(path) as reader:
            info = reader.info()
            expected = json.dumps(render.inspect_dict(info, info.tensors), ensure_ascii=False, allow_nan=False)
            assert render.inspect_json(info, info.tensors) == expected
    odd = [
        TensorInfo('quote"back\\slash', "float32", (), 4, 0, None),
        TensorInfo("ctrl\x00\x1b\n\ttab", "bfloat16", (0, 3), 0, 2, "x.data-00000-of-00001"),
        TensorInfo("日本/層 é 🙂", "string", (1, 2, 3), 10**15, 0, 'f"ile'),
        TensorInfo("\ud800lone-surrogate", "int4", (7,), 4, 0, None),
    ]
    info = CheckpointInfo("tf2", "p", "p", ("a", "b"), tuple(odd), shards=1, writer=None, metadata={"k": "v"})
    expected = json.dumps(render.inspect_dict(info, odd), ensure_ascii=False, allow_nan=False)
    assert render.inspect_json(info, odd) == expected
    assert render.inspect_json(info, []) == json.dumps(render.inspect_dict(info, []), ensure_ascii=False)


def test_string_elements_are_unambiguous() -> None:
    """UTF-8 text prints as a str literal and is a JSON string; other bytes print as a bytes literal and are
    {"base64": ...} in JSON — so the text backslash-x-e-a and the byte 0xEA never look alike."""
    import numpy as np

    from ckptcheck.model import TensorInfo

    values = np.array([[b"\\xea", b"\xea"], ["caf\u00e9", b""]], dtype=object)
    info = TensorInfo("s", "string", (2, 2), 5)
    text = render.tensor_text(info, values)
    assert "'\\\\xea'" in text and "b'\\xea'" in text and "'café'" in text
    assert render.tensor_dict(info, values)["values"] == [["\\xea", {"base64": "6g=="}], ["café", ""]]
    scalar = render.tensor_dict(TensorInfo("s", "string", (), 1), np.array(b"\x80", dtype=object))
    assert scalar["values"] == {"base64": "gA=="}
