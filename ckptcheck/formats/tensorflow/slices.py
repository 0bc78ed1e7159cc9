"""A partitioned variable's elements in C order of the whole tensor, from its slices, in bounded memory.

TF1 partitioners and TF2 sharding policies store a variable as slices (boxes of the full shape, each in C order of
its own box). Digests, statistics and comparisons must not depend on how a variable was cut, so they need the
elements in C order of the whole; assembling the tensor first costs its full size (3 GB for a TF1 variable in four
partitions). Here the whole is walked block by block instead, each block filled from the slices that overlap it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

Extent = tuple[int, int]  # (start, length) along one dimension
# fetch(slice index, first element, count): that many elements of the slice, from ``first`` in its own C order
Fetch = Callable[[int, int, int], "np.ndarray"]


def stream_c_order(
    shape: tuple[int, ...], boxes: Sequence[tuple[Extent, ...]], dtype: np.dtype, chunk_bytes: int, fetch: Fetch
) -> Iterator[np.ndarray]:
    """Yield the tensor's elements in C order, flat, in blocks of about ``chunk_bytes`` (each valid until the next).

    The walk goes along one axis, the first whose trailing dimensions fit in a chunk, in runs of rows, for each
    index of the axes before it. The part of a slice inside a run of rows is contiguous in the slice's storage
    (its trailing dimensions are whole within its box), and the walk meets those parts in the order the slice
    stores them: ``fetch`` is called for each slice with increasing, adjacent element ranges, so a reader can
    stream and checksum each slice once, front to back. ``boxes`` must tile ``shape`` (the readers check it).
    """
    import numpy as np

    itemsize = dtype.itemsize
    axis = len(shape) - 1
    for k in range(len(shape)):
        if math.prod(shape[k + 1 :]) * itemsize <= chunk_bytes:
            axis = k
            break
    inner = shape[axis + 1 :]
    inner_elems = math.prod(inner)
    rows = max(1, min(shape[axis], chunk_bytes // max(1, inner_elems * itemsize)))
    out = np.empty((rows, *inner), dtype=dtype)
    for lead in np.ndindex(*shape[:axis]):
        live = [i for i, box in enumerate(boxes)
                if math.prod(n for _, n in box) and all(s <= x < s + n for x, (s, n) in zip(lead, box, strict=False))]
        for r0 in range(0, shape[axis], rows):
            r1 = min(r0 + rows, shape[axis])
            block = out[: r1 - r0]
            for i in live:
                box = boxes[i]
                s, n = box[axis]
                a, b = max(r0, s), min(r1, s + n)
                if a >= b:
                    continue
                lengths = [length for _, length in box]
                index = 0  # the slice's own C-order position of (lead, a, 0, ...)
                for d in range(axis):
                    index = index * lengths[d] + (lead[d] - box[d][0])
                run = math.prod(lengths[axis + 1 :])
                values = fetch(i, (index * lengths[axis] + (a - s)) * run, (b - a) * run)
                where = (slice(a - r0, b - r0), *(slice(x, x + m) for x, m in box[axis + 1 :]))
                block[where] = values.reshape(b - a, *lengths[axis + 1 :])
                del values  # it may view a large record of the reader's: let it go before the next is read
            yield block.reshape(-1)


def format_extents(extents: tuple[Extent, ...]) -> str:
    return "[" + ", ".join(f"{s}:{s + n}" if n >= 0 else f"{s}:" for s, n in extents) + "]"


def first_overlap(boxes: list[tuple[Extent, ...]]) -> tuple[int, int] | None:
    """Indices of two boxes that share an element, if any: a sweep along the first dimension, comparing each box
    only with the boxes still open there (few, for the row-wise and block-wise slicings TensorFlow writes)."""
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][0][0] if boxes[i] else 0)
    open_boxes: list[int] = []
    for i in order:
        box = boxes[i]
        if box:
            open_boxes = [j for j in open_boxes if boxes[j][0][0] + boxes[j][0][1] > box[0][0]]
        for j in open_boxes:
            if all(max(s1, s2) < min(s1 + n1, s2 + n2) for (s1, n1), (s2, n2) in zip(box, boxes[j], strict=True)):
                return j, i
        open_boxes.append(i)
    return None


def tiling_problem(shape: tuple[int, ...], boxes: Sequence[tuple[Extent, ...]]) -> str | None:
    """What keeps ``boxes`` (full extents written out) from tiling ``shape`` exactly, or None: a box outside the
    shape, boxes covering more or fewer elements than it has, two boxes overlapping."""
    covered = 0
    for box in boxes:
        if len(box) != len(shape) or any(s < 0 or n < 0 or s + n > d for (s, n), d in zip(box, shape, strict=False)):
            return f"slice {format_extents(box)} lies outside the shape {list(shape)}"
        covered += math.prod(n for _, n in box)
    total = math.prod(shape)
    if covered != total:
        return f"slices cover {covered} of the {total} elements"
    clash = first_overlap(list(boxes))
    if clash is not None:
        # Same element count with an overlap means a gap too: part of the tensor would be left unset.
        a, b = (format_extents(boxes[i]) for i in clash)
        return f"slices {a} and {b} overlap"
    return None
