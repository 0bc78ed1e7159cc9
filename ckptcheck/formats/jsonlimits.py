"""JSON that a checkpoint (or a manifest) carries, parsed within bounds.

Parsed JSON takes many times its size in memory: 20 million ``[],`` (60 MB) are 20 million Python lists, about
1.5 GB. The items are counted on the raw bytes first (every value but the first of a list or object follows a
comma, every container opens with a bracket), and a text holding more than a real file ever does is refused
before it is parsed. Nesting deeper than Python's recursion allows is refused as well.
"""

from __future__ import annotations

import json
from typing import Any

from ckptcheck.errors import CorruptCheckpointError

# A ResNet50 config.json has ~10,000 items, a manifest of 200,000 tensors ~3,000,000. Parsed, this many items are
# at most a few hundred MiB.
MAX_JSON_ITEMS = 4_000_000


def loads(raw: bytes | str, *, what: str, path: str) -> Any:
    """``json.loads(raw)``, refusing (CorruptCheckpointError naming ``what`` in ``path``) a text of more than
    MAX_JSON_ITEMS items, nesting that exhausts the parser, or text that is not JSON."""
    # Counted on the text as given: encoding a str first would hold a second copy of a text that may be 100 MB.
    if isinstance(raw, str):
        items = raw.count(",") + raw.count("[") + raw.count("{")
    else:
        items = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if items > MAX_JSON_ITEMS:
        raise CorruptCheckpointError(
            f"{what} holds about {items:,} JSON items, more than the {MAX_JSON_ITEMS:,} ckptcheck parses", path=path,
            hint="no real model config or manifest is that large; the file is crafted or damaged")
    try:
        return json.loads(raw)
    except RecursionError:
        raise CorruptCheckpointError(f"{what} nests JSON too deeply to parse", path=path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"{what} is not valid JSON ({exc})", path=path) from None
