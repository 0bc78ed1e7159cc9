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


def test_multiline_and_wide_cells_use_tabulate_itself() -> None:
    rows = [[f"t{i}", "a\nb" if i == 3 else "日本"] for i in range(render.FAST_TABLE_ROWS + 1)]
    assert render.table(["name", "paths"], rows) == tabulate(rows, headers=["name", "paths"], tablefmt="simple",
                                                              disable_numparse=True)


def test_human_bytes() -> None:
    assert render.human_bytes(0) == "0 B"
    assert render.human_bytes(1023) == "1023 B"
    assert render.human_bytes(1536) == "1.5 KiB"
    assert render.human_bytes(3 << 30) == "3.0 GiB"
