"""Raw Snappy decompression for compressed table blocks, through cramjam (a maintained Rust binding).

Imported only when a compressed block appears: uncompressed indexes, which current TensorFlow builds write,
never load it.
"""

from __future__ import annotations

from ckptcheck.errors import MissingDependencyError


def decompress(compressed: bytes | memoryview, declared: int) -> bytes | None:
    """The block's ``declared`` bytes (its varint length header, already bounded by the caller), or None when
    the stream is damaged: it does not decompress, or not to exactly that many bytes."""
    try:
        import cramjam
    except ImportError:  # pragma: no cover - cramjam is a dependency
        raise MissingDependencyError("reading a Snappy-compressed table block needs cramjam",
                                     hint="pip install cramjam") from None
    out = bytearray(declared)
    try:
        written = cramjam.snappy.decompress_raw_into(compressed, out)
    except cramjam.DecompressionError:
        return None
    return bytes(out) if written == declared else None
