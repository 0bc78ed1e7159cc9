"""Tables as tabulate lays them out (plain cells without importing it), fitted to a terminal; sizes in words."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from ckptcheck.numbers import number_text

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    pass

if TYPE_CHECKING:
    pass

# Set by the CLI when stdout is a terminal: tables are then fitted to its width (piped output stays whole).
fit_width: int | None = None
_MIN_COLUMN = 12  # a column is not elided below this many characters
_MIN_NAME = 36  # nor the first, which names the row
_ELLIPSIS = "..."


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:

    # disable_numparse: names and shapes stay as written, and tabulate skips its slow number sniffing.
    cells = [list(map(str, row)) for row in rows]
    left_out: list[str] = []
    if fit_width is not None:
        headers, cells, left_out = _fit(list(headers), cells, fit_width)
    text = _layout(headers, cells)
    if left_out:
        import textwrap

        note = (f"({len(left_out)} column(s) left out to fit the terminal: {', '.join(left_out)}; pipe the output "
                "or use --json for all)")
        text += "\n" + textwrap.fill(note, width=max(fit_width or 0, 40))
    return text


def _layout(headers: Sequence[str], cells: list[list[str]]) -> str:
    # Plain cells (printable ASCII, no surrounding whitespace: nearly every table) are laid out here, as tabulate
    # lays them out (tested against it), without importing tabulate (~25 ms with wcwidth, on every command that
    # prints a table); anything else by tabulate itself. Checked and laid out a column at a time, in loops that run
    # in C (map, join): per cell, Python-level loops took 60 ms of a 20,000-row listing.
    if cells and len(headers) == len(cells[0]) and len(set(map(len, cells))) == 1:
        columns = [list(col) for col in zip(*cells, strict=True)]
        if _plain_column(headers) and all(map(_plain_column, columns)):
            return _plain_table(list(headers), columns)
    from tabulate import tabulate

    return str(tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True))


def _fit(headers: list[str], cells: list[list[str]], width: int) -> tuple[list[str], list[list[str]], list[str]]:
    """Elide cells to fit ``width``; when even that is not enough, leave out columns from the right (the first
    three, which name the tensor, always stay). Measured on tabulate's own layout (its padding included). Returns
    the headers and cells to show and the headers left out."""
    left_out: list[str] = []
    budget = width
    for _ in range(4 * len(headers) + 8):  # bounded: each round narrows the budget or drops a column
        fitted = fit_cells(headers, cells, budget)
        over = max((len(line) for line in _layout(headers, fitted).split("\n")), default=0) - width
        if over <= 0:
            return headers, fitted, left_out
        if fit_cells(headers, cells, budget - over) != fitted:
            budget -= over  # tabulate's padding took the rest: elide that much more
            continue
        if len(headers) <= 3:
            break
        left_out.insert(0, headers[-1])
        headers, cells, budget = headers[:-1], [row[:-1] for row in cells], width
    return headers, fit_cells(headers, cells, budget), left_out


def fit_cells(headers: list[str], cells: list[list[str]], width: int) -> list[list[str]]:
    """Cells elided (``head...tail``) in the widest columns, widest first and no column below _MIN_COLUMN, until the
    table's lines fit in ``width``; unchanged when they already do (or cannot)."""
    if not cells:
        return cells
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    caps = list(widths)
    # The first column names the row: it keeps more (columns to its right are left out first).
    floors = [max(_MIN_NAME if i == 0 else _MIN_COLUMN, len(h)) for i, h in enumerate(headers)]
    # One character at a time from whichever column is widest, so the wide columns end up alike.
    while excess > 0:
        widest = max(range(len(caps)), key=lambda i: caps[i] - floors[i])
        if caps[widest] <= floors[widest]:
            break
        caps[widest] -= 1
        excess -= 1
    if caps == widths:
        return cells

    def elide(text: str, cap: int) -> str:
        if len(text) <= cap:
            return text
        keep = cap - len(_ELLIPSIS)  # mostly the head: a key's distinctive part rarely comes last
        return text[: keep - keep // 4] + _ELLIPSIS + text[len(text) - keep // 4 :]

    return [[elide(c, cap) for c, cap in zip(row, caps, strict=True)] for row in cells]


def _plain_table(headers: list[str], columns: list[list[str]]) -> str:
    """tabulate's ``simple`` layout of plain cells, left-aligned (disable_numparse): each column as wide as its widest
    cell, or as its header and tabulate's padding of 2; cells two spaces apart; the header, a rule of dashes, then
    the rows, each line without trailing spaces."""
    widths = [max(len(h) + 2, max(map(len, col))) for h, col in zip(headers, columns, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    padded = [list(map(str.ljust, col, repeat(w))) for col, w in zip(columns, widths, strict=True)]
    return "\n".join(lines + list(map(str.rstrip, map("  ".join, zip(*padded, strict=True)))))


_EDGE_SPACE = re.compile(r"(?:^|\x00)\s|\s(?:\x00|$)")


def _plain_column(col: Sequence[str]) -> bool:
    """Every cell printable ASCII (so one line), without surrounding whitespace."""
    text = "\x00".join(col)
    # Printable too: tabulate treats escape sequences as invisible, so their cells would be laid out differently.
    return text.isascii() and all(map(str.isprintable, col)) and _EDGE_SPACE.search(text) is None


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def number(value: float | None) -> str:
    """A statistic in a table cell: blank when there is none."""
    return "" if value is None else number_text(value)


def aligned_fields(pairs: Sequence[tuple[str, Sequence[str]]], min_width: int = 10) -> str:
    """``key: value`` lines with every value starting in one column (at least ``min_width``, wider when a key is
    longer); a field of several values continues on lines indented to that column."""
    width = max([min_width, *(len(key) + 2 for key, _ in pairs)])
    lines = []
    for key, values in pairs:
        values = list(values) or [""]
        lines.append(f"{key + ':':<{width}}{values[0]}".rstrip())
        lines += [" " * width + v for v in values[1:]]
    return "\n".join(lines)
