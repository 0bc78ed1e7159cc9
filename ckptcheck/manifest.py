"""Manifests: a deterministic JSON description of a checkpoint, meant to be committed and reviewed in git.

Each tensor gets its dtype, shape, byte size, a sha256 digest of its values and summary statistics. No paths,
no timestamps, sorted keys: regenerating an unchanged checkpoint's manifest gives an identical file.
"""

from __future__ import annotations

import hashlib
import json
import struct
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckptcheck.errors import CorruptCheckpointError, UsageError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats.files import open_regular, read_capped
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.numbers import finite_or_null
from ckptcheck.records import TensorInfo
from ckptcheck.render.jsontext import escape_surrogates
from ckptcheck.stats import TensorStats, stats_of_chunks

MANIFEST_VERSION = 1
# Past this a file is refused before it is parsed (JSON in memory takes many times its size).
MAX_MANIFEST_BYTES = 64 << 20
# Added beside manifest_version (which stays, and still decides what load() reads): manifests written before
# it have no schema field and load as before.
MANIFEST_SCHEMA = "ckptcheck.manifest/1"
_STAT_KEYS = ("min", "max", "mean", "std")


def _hashed(chunks: Iterable[np.ndarray], digest: Any) -> Iterator[np.ndarray]:
    """Pass chunks through, feeding the digest: raw little-endian bytes, or length-prefixed strings."""
    for chunk in chunks:
        if chunk.dtype == object:
            for item in chunk.tolist():
                data = item if isinstance(item, bytes) else str(item).encode("utf-8")
                digest.update(struct.pack("<Q", len(data)))
                digest.update(data)
        else:
            digest.update(np.ascontiguousarray(chunk).view(np.uint8))
        yield chunk


def tensor_fingerprint(reader: CheckpointReader, name: str) -> tuple[str, TensorStats]:
    """sha256 of the values in C order, and their statistics, in one streamed pass."""
    info = reader.tensor_info(name)
    digest = hashlib.sha256()
    # A partitioned variable is stored slice by slice; its digest must not depend on how it was cut, and it is
    # streamed in C order of the whole rather than assembled.
    stats = stats_of_chunks(name, info.dtype, _hashed(reader.iter_c_order(name), digest))
    return digest.hexdigest(), stats


def manifest_entry(reader: CheckpointReader, t: TensorInfo) -> dict[str, Any]:
    """One tensor's manifest record (streams its values once)."""
    sha, stats = tensor_fingerprint(reader, t.name)
    return {
        "dtype": t.dtype,
        "shape": list(t.shape),
        "nbytes": t.nbytes,
        "sha256": sha,
        "stats": {
            "count": stats.count,
            "min": finite_or_null(stats.min),
            "max": finite_or_null(stats.max),
            "mean": finite_or_null(stats.mean),
            "std": finite_or_null(stats.std),
            "nan": stats.nan,
            "inf": stats.inf,
        },
    }


def assemble(format_name: str, tensors: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": MANIFEST_SCHEMA,
        "manifest_version": MANIFEST_VERSION,
        "format": format_name,
        "tensor_count": len(tensors),
        "total_bytes": sum(t["nbytes"] for t in tensors.values()),
        "tensors": tensors,
    }


def build_manifest(reader: CheckpointReader, on_tensor: Callable[[str], None] | None = None) -> dict[str, Any]:
    info = reader.info()
    tensors: dict[str, Any] = {}
    for t in info.tensors:
        if on_tensor is not None:
            on_tensor(t.name)
        tensors[t.name] = manifest_entry(reader, t)
    return assemble(info.format, tensors)


def dumps(manifest: dict[str, Any]) -> str:
    return escape_surrogates(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
                              + "\n")


# --- Streaming: the text of dumps(build_manifest(reader)), written a record at a time --------------------------


def _record_text(name: str, record: dict[str, Any]) -> str:
    """``"name": {...}`` of one tensor as it stands in the manifest: json's own layout of ``{name: record}``, its
    lines moved in one level (the record sits inside ``tensors``)."""
    text = json.dumps({name: record}, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    return escape_surrogates(textwrap.indent(text[2:-2], "  "))  # without the outer "{\n" and "\n}"


def write_manifest(reader: CheckpointReader, write: Callable[[str], object],
                   on_tensor: Callable[[str], None] | None = None, jobs: int = 1) -> int:
    """Write the manifest of ``reader`` through ``write``, one tensor's record at a time: the same text as
    ``dumps(build_manifest(reader))``, in memory that does not grow with the records (a million tensors' records
    held as dicts took gigabytes). ``jobs``: range reads in flight ahead of the digests. Returns the number of
    tensors."""
    info = reader.info()
    tensors = sorted(info.tensors, key=lambda t: t.name)  # sort_keys: by code point, as json.dumps sorts
    reader.read_ahead([t.name for t in tensors], jobs, slices=False)  # read in this order, in C order of each
    # The manifest without its records, as dumps writes it; the records go where its empty "tensors" stands.
    skeleton = dumps({**assemble(info.format, {}), "tensor_count": len(tensors),
                      "total_bytes": sum(t.nbytes for t in tensors)})
    if not tensors:
        write(skeleton)
        return 0
    head, tail = skeleton.split('"tensors": {}', 1)
    write(head + '"tensors": {\n')
    for i, t in enumerate(tensors):
        if on_tensor is not None:
            on_tensor(t.name)
        write(("" if i == 0 else ",\n") + _record_text(t.name, manifest_entry(reader, t)))
    write("\n  }" + tail)
    return len(tensors)


def load(path: str) -> dict[str, Any]:
    try:
        with open_regular(path) as f:
            raw = read_capped(f, MAX_MANIFEST_BYTES)
        if raw is None:
            raise CorruptCheckpointError(f"larger than the {MAX_MANIFEST_BYTES >> 20} MiB a manifest may be",
                                         path=path, hint="a manifest of 200,000 tensors is about 60 MiB")
        data = jsonlimits.loads(raw, what="the manifest", path=path)
    except FileNotFoundError:
        raise UsageError("manifest file does not exist", path=path,
                         hint="write one with `ckptcheck manifest CKPT -o FILE`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(f"not a readable manifest: {exc}", path=path) from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema is not None and schema != MANIFEST_SCHEMA:
        hint = "write one with `ckptcheck manifest CKPT -o FILE`"
        if isinstance(schema, str) and schema.startswith("ckptcheck.") and not schema.startswith("ckptcheck.manifest/"):
            raise UsageError(f"this is {schema} output, not a manifest", path=path, hint=hint)
        raise UsageError(f"schema {schema!r} is not one this ckptcheck reads ({MANIFEST_SCHEMA})", path=path,
                         hint=hint)
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict):
        raise CorruptCheckpointError("not a ckptcheck manifest (no `tensors` object)", path=path)
    for name, record in data["tensors"].items():
        problem = _record_problem(record)
        if problem is not None:
            raise CorruptCheckpointError(f"not a readable manifest: {problem}", path=path, tensor=name,
                                         hint="regenerate it with `ckptcheck manifest CKPT -o FILE`")
    version = data.get("manifest_version")
    if version != MANIFEST_VERSION:
        raise UsageError(f"manifest_version {version!r} is not one this ckptcheck reads ({MANIFEST_VERSION})",
                         path=path)
    return data


def _record_problem(record: Any) -> str | None:
    """What is wrong with one tensor's record, as a manifest ckptcheck wrote would never have it; None when fine."""
    if not isinstance(record, dict):
        return f"its record is {type(record).__name__}, not an object"
    if not isinstance(record.get("dtype"), str):
        return "its dtype is not text"
    shape = record.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape):
        return "its shape is not a list of sizes"
    if not isinstance(record.get("sha256"), str):
        return "its sha256 is not text"
    stats = record.get("stats", {})
    if not isinstance(stats, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in stats.values()):
        return "its stats are not an object of numbers"
    return None


@dataclass(frozen=True)
class ManifestDifference:
    tensor: str
    kind: str  # "missing", "extra", "dtype", "shape", "values"
    message: str


def _close(a: float | None, b: float | None, atol: float, rtol: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= atol + rtol * abs(b)


def distinct_texts(a: float, b: float) -> tuple[str, str]:
    """Two numbers printed with the fewest significant digits (6 at least, 17 at most) that tell them apart:
    ``0.5 -> 0.500123``, not 17 digits of each."""
    for digits in range(6, 18):
        ta, tb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if ta != tb or a == b:
            return ta, tb
    return ta, tb


def _drift_text(key: str, expected: float | None, actual: float | None, atol: float, rtol: float) -> str:
    if expected is None or actual is None:
        return f"{key} {expected} -> {actual}"
    want, have = distinct_texts(float(expected), float(actual))
    allowed = atol + rtol * abs(float(expected))
    return f"{key} {want} -> {have} (differs by {abs(float(actual) - float(expected)):.3g}, allowed {allowed:.3g})"


def compare_manifests(
    actual: dict[str, Any], expected: dict[str, Any], atol: float = 0.0, rtol: float = 0.0
) -> list[ManifestDifference]:
    """What changed from ``expected`` (the committed manifest) to ``actual``.

    Values compare by digest when exact; with a tolerance, by the recorded statistics (a manifest holds no
    element values), each within atol + rtol * |expected|.
    """
    out: list[ManifestDifference] = []
    have, want = actual["tensors"], expected["tensors"]
    for name in sorted(set(want) - set(have)):
        out.append(ManifestDifference(name, "missing", "in the manifest, not in the checkpoint"))
    for name in sorted(set(have) - set(want)):
        out.append(ManifestDifference(name, "extra", "in the checkpoint, not in the manifest"))
    for name in sorted(set(have) & set(want)):
        h, w = have[name], want[name]
        if h.get("dtype") != w.get("dtype"):
            out.append(ManifestDifference(name, "dtype", f"dtype {w.get('dtype')} -> {h.get('dtype')}"))
            continue
        if list(h.get("shape", [])) != list(w.get("shape", [])):
            out.append(ManifestDifference(name, "shape", f"shape {w.get('shape')} -> {h.get('shape')}"))
            continue
        if h.get("sha256") == w.get("sha256"):
            continue
        if atol == 0.0 and rtol == 0.0:
            out.append(ManifestDifference(name, "values", "values changed (digest differs)"))
            continue
        hs, ws = h.get("stats", {}), w.get("stats", {})
        drift = [
            _drift_text(k, ws.get(k), hs.get(k), atol, rtol)
            for k in _STAT_KEYS if not _close(hs.get(k), ws.get(k), atol, rtol)
        ] + [f"{k} {ws.get(k)} -> {hs.get(k)}" for k in ("nan", "inf", "count") if hs.get(k) != ws.get(k)]
        if drift:
            out.append(ManifestDifference(name, "values", "values changed beyond tolerance: " + ", ".join(drift)))
    return out
