"""JSON text: names that are not UTF-8 carry lone surrogates, escaped here and nowhere else."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only where a tensor's values are printed; the reports' classes only where rendered

    pass

if TYPE_CHECKING:
    pass

_SURROGATE = re.compile("[\ud800-\udfff]")


def escape_surrogates(text: str) -> str:
    """JSON ``text`` with each lone surrogate written as its escape: a name or path that is not valid UTF-8 holds
    its undecodable bytes as lone surrogates (surrogateescape); escaped as \\udcXX, the output stays valid UTF-8
    and loads back to the same string. (An ASCII text is known to hold none without looking at it.)"""
    if text.isascii():
        return text
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
