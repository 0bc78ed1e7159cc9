"""Manifests: a deterministic JSON description of a checkpoint, meant to be committed and reviewed in git.

Each tensor gets its dtype, shape, byte size, a sha256 digest of its values, summary statistics, its variable and
its kind. No paths, no timestamps, sorted keys: regenerating an unchanged checkpoint's manifest gives an identical
file. ``verify --against`` pairs the manifest's tensors with the checkpoint's by variable (pairing.py), as ``diff``
does; a manifest written before variables were recorded (ckptcheck.manifest/1) is paired by key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ckptcheck.errors import CorruptCheckpointError, UsageError
from ckptcheck.formats import jsonlimits
from ckptcheck.formats.files import open_regular, read_capped
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.numbers import finite_or_null
from ckptcheck.order import natural_sorted
from ckptcheck.pairing import named, normalize_name
from ckptcheck.records import TensorInfo
from ckptcheck.render.jsontext import escape_surrogates
from ckptcheck.selection import Selection
from ckptcheck.stats import TensorStats, stats_of_chunks

MANIFEST_VERSION = 2
# Past this a file is refused before it is parsed (JSON in memory takes many times its size).
MAX_MANIFEST_BYTES = 64 << 20
# Added beside manifest_version (which stays, and still decides what load() reads): manifests written before
# it have no schema field and load as before. Version 2 records each tensor's variable and kind.
MANIFEST_SCHEMA = "ckptcheck.manifest/2"
_READS = {None: 1, "ckptcheck.manifest/1": 1, MANIFEST_SCHEMA: MANIFEST_VERSION}  # schema -> its manifest_version
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


def manifest_entry(reader: CheckpointReader, t: TensorInfo, kind: str | None = None) -> dict[str, Any]:
    """One tensor's manifest record (streams its values once); ``kind``: its kind (summary.classify_kinds)."""
    sha, stats = tensor_fingerprint(reader, t.name)
    return {
        "variable": named(t),
        "kind": kind,
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


def assemble(format_name: str, tensors: dict[str, Any], selection: Selection | None = None) -> dict[str, Any]:
    """The manifest around its records; ``selection``: --kind/--exclude it was written with (recorded, and applied
    by verify --against to the checkpoint too)."""
    out = {
        "schema": MANIFEST_SCHEMA,
        "manifest_version": MANIFEST_VERSION,
        "format": format_name,
        "tensor_count": len(tensors),
        "total_bytes": sum(t["nbytes"] for t in tensors.values()),
        "tensors": tensors,
    }
    described = selection.describe() if selection is not None else None
    if described is not None:
        out["selection"] = described
    return out


def _selected(reader: CheckpointReader, selection: Selection | None) -> tuple[list[TensorInfo], list[str]]:
    """The tensors a manifest records, in key order (json's sort_keys: by code point), and their kinds."""
    from ckptcheck.summary import classify_kinds

    info = reader.info()
    tensors, kinds = (selection or Selection()).apply(reader, info.tensors, classify_kinds(reader, info.tensors))
    assert kinds is not None
    pairs = sorted(zip(tensors, kinds, strict=True), key=lambda p: p[0].name)
    return [t for t, _ in pairs], [k for _, k in pairs]


def build_manifest(reader: CheckpointReader, on_tensor: Callable[[str], None] | None = None,
                   selection: Selection | None = None) -> dict[str, Any]:
    info = reader.info()
    tensors: dict[str, Any] = {}
    for t, kind in zip(*_selected(reader, selection), strict=True):
        if on_tensor is not None:
            on_tensor(t.name)
        tensors[t.name] = manifest_entry(reader, t, kind)
    return assemble(info.format, tensors, selection)


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
                   on_tensor: Callable[[str], None] | None = None, jobs: int = 1,
                   selection: Selection | None = None) -> int:
    """Write the manifest of ``reader`` through ``write``, one tensor's record at a time: the same text as
    ``dumps(build_manifest(reader))``, in memory that does not grow with the records (a million tensors' records
    held as dicts took gigabytes). ``jobs``: range reads in flight ahead of the digests. Returns the number of
    tensors."""
    info = reader.info()
    tensors, kinds = _selected(reader, selection)  # sort_keys: by code point, as json.dumps sorts
    reader.read_ahead([t.name for t in tensors], jobs, slices=False)  # read in this order, in C order of each
    # The manifest without its records, as dumps writes it; the records go where its empty "tensors" stands.
    skeleton = dumps({**assemble(info.format, {}, selection), "tensor_count": len(tensors),
                      "total_bytes": sum(t.nbytes for t in tensors)})
    if not tensors:
        write(skeleton)
        return 0
    head, tail = skeleton.split('"tensors": {}', 1)
    write(head + '"tensors": {\n')
    for i, (t, kind) in enumerate(zip(tensors, kinds, strict=True)):
        if on_tensor is not None:
            on_tensor(t.name)
        write(("" if i == 0 else ",\n") + _record_text(t.name, manifest_entry(reader, t, kind)))
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
    if schema not in _READS:
        hint = "write one with `ckptcheck manifest CKPT -o FILE`"
        if isinstance(schema, str) and schema.startswith("ckptcheck.") and not schema.startswith("ckptcheck.manifest/"):
            raise UsageError(f"this is {schema} output, not a manifest", path=path, hint=hint)
        raise UsageError(f"schema {schema!r} is not one this ckptcheck reads (ckptcheck.manifest/1, "
                         f"{MANIFEST_SCHEMA})", path=path, hint=hint)
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict):
        raise CorruptCheckpointError("not a ckptcheck manifest (no `tensors` object)", path=path)
    for name, record in data["tensors"].items():
        problem = _record_problem(record)
        if problem is not None:
            raise CorruptCheckpointError(f"not a readable manifest: {problem}", path=path, tensor=name,
                                         hint="regenerate it with `ckptcheck manifest CKPT -o FILE`")
    version = data.get("manifest_version")
    if version != _READS[schema]:
        raise UsageError(f"manifest_version {version!r} is not one this ckptcheck reads with schema "
                         f"{schema or '(none)'} ({_READS[schema]})", path=path)
    return data


def records_variables(manifest: dict[str, Any]) -> bool:
    """Whether the manifest records each tensor's variable and kind (version 2 on)."""
    return bool(manifest.get("manifest_version", 1) >= 2)


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
    nbytes = record.get("nbytes")
    if nbytes is not None and (not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0):
        return "its nbytes is not a size"
    if not all(record.get(k) is None or isinstance(record.get(k), str) for k in ("variable", "kind")):
        return "its variable or kind is not text"
    stats = record.get("stats", {})
    if not isinstance(stats, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in stats.values()):
        return "its stats are not an object of numbers"
    return None


@dataclass(frozen=True)
class ManifestDifference:
    tensor: str  # its key: the checkpoint's (the manifest's for a missing tensor)
    kind: str  # one of DIFFERENCE_KINDS
    message: str
    variable: str | None = None  # the variable it holds (None: none recorded, or bookkeeping)
    tensor_kind: str | None = None  # weights, optimizer, counters or bookkeeping (None: not recorded)


# The kinds of differences, most severe first: the order verify --against lists them in.
DIFFERENCE_KINDS = ("missing", "extra", "dtype", "shape", "non-finite", "values")


@dataclass(frozen=True)
class ManifestComparison:
    differences: list[ManifestDifference]  # most severe first, then weights before optimizer state, then by name
    notes: list[str]  # how tensors were paired, variables stored elsewhere, bookkeeping set aside


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
    """What changed from ``expected`` (the committed manifest) to ``actual`` (compare_with's differences)."""
    return compare_with(actual, expected, atol, rtol).differences


def _infos(manifest: dict[str, Any], with_variables: bool) -> list[TensorInfo]:
    return [TensorInfo(key, str(r.get("dtype")), tuple(r.get("shape", ())), int(r.get("nbytes") or 0),
                       variable=r.get("variable") if with_variables else None)
            for key, r in manifest["tensors"].items()]


def _is_bookkeeping(key: str, record: dict[str, Any]) -> bool:
    from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
    from ckptcheck.summary import BOOKKEEPING

    return record.get("kind") == BOOKKEEPING or key == OBJECT_GRAPH_KEY


def compare_with(
    actual: dict[str, Any], expected: dict[str, Any], atol: float = 0.0, rtol: float = 0.0,
    selections: Sequence[Selection] = (),
    skipped: Sequence[TensorInfo] = (),
) -> ManifestComparison:
    """What changed from ``expected`` (the committed manifest) to ``actual`` (the checkpoint's records, as
    manifest_entry makes them).

    Tensors are paired by variable where the manifest records variables (pairing.py: the checkpoint may store a
    variable under another key, and the manifest may be of another format), by key for older manifests. Values
    compare by digest when exact; with a tolerance, by the recorded statistics (a manifest holds no element
    values), each within atol + rtol * |expected|. NaN and Inf counts that changed are their own difference.
    ``selections``: each narrows the manifest's tensors as the checkpoint's were narrowed; ``skipped``: the
    checkpoint's tensors they left out (unread). Tensors are paired before they are selected, so that a pattern
    matching a key (a storage position) on one side only selects the pair: a manifest tensor paired with a skipped
    one is not compared, and one paired with none is missing only if the selections select it.
    """
    from ckptcheck.formats.tensorflow.keys import OBJECT_GRAPH_KEY
    from ckptcheck.pairing import optimizer_names, pair_tensors, same_keys
    from ckptcheck.summary import KINDS

    have, want = actual["tensors"], expected["tensors"]
    by_variable = records_variables(expected)
    notes: list[str] = []
    exp_infos = _infos(expected, by_variable)
    act_infos = _infos(actual, by_variable)
    skipped_infos = [TensorInfo(t.name, t.dtype, t.shape, t.nbytes, variable=t.variable if by_variable else None)
                     for t in skipped if t.name not in have]
    unread = {id(t) for t in skipped_infos}

    tests = [(sel.by_names(), sel.kinds) for sel in selections]

    def selected(t: TensorInfo) -> bool:
        kind = want[t.name].get("kind") or (have.get(t.name) or {}).get("kind")
        return all(by_names(t) and (kinds is None or kind is None or kind in kinds) for by_names, kinds in tests)

    # Bookkeeping only one side keeps (the object graph of a manifest of another format) is set aside; the
    # manifest's, when the selections leave the checkpoint's out, silently.
    unread_keys = {t.name for t in skipped_infos}
    aside_e = [t for t in exp_infos if _is_bookkeeping(t.name, want[t.name]) and t.name not in have]
    aside_a = [t for t in act_infos if _is_bookkeeping(t.name, have[t.name]) and t.name not in want]
    said = [t for t in aside_e if t.name not in unread_keys and selected(t)] + aside_a
    if said:
        notes.append(f"not compared (format bookkeeping only one side keeps): {', '.join(t.name for t in said)}")
    exp_infos = [t for t in exp_infos if not any(t is x for x in aside_e)]
    act_infos = [t for t in act_infos if not any(t is x for x in aside_a)]
    keys_alike = same_keys(str(expected.get("format")), str(actual.get("format"))) if by_variable else True
    pairing = pair_tensors(exp_infos, [*act_infos, *skipped_infos], keys_alike)
    pairing = dataclasses.replace(
        pairing, pairs=[(e, a) for e, a in pairing.pairs if id(a) not in unread],
        moved=[(e, a) for e, a in pairing.moved if id(a) not in unread],
        removed=[t for t in pairing.removed if selected(t)], added=[t for t in pairing.added if id(t) not in unread])
    exp_infos = [t for t in exp_infos if selected(t) or any(e is t for e, _ in pairing.pairs)]
    if not by_variable:
        notes.append("the manifest records no variables (ckptcheck.manifest/1): tensors were paired by key; "
                     "regenerate it with `ckptcheck manifest` to pair them by variable")
    if pairing.moved:
        first = pairing.moved[0]
        more = f", ... {len(pairing.moved) - 1} more" if len(pairing.moved) > 1 else ""
        notes.append(f"{len(pairing.moved)} variable(s) are stored under other keys than in the manifest "
                     f"({first[0].variable}: {normalize_name(first[0].name)} -> {normalize_name(first[1].name)}"
                     f"{more}); where a value is stored is no change of the model")
    opt_e = optimizer_names(exp_infos, [want[t.name].get("kind") or "" for t in exp_infos])
    opt_a = optimizer_names(act_infos, [have[t.name].get("kind") or "" for t in act_infos])
    if opt_e != opt_a and by_variable:
        notes.append(f"optimizer: {', '.join(opt_e) or 'none'} in the manifest, {', '.join(opt_a) or 'none'} in "
                     "the checkpoint: its state is reported missing and extra")

    out: list[ManifestDifference] = []

    def add(key: str, record: dict[str, Any], kind: str, message: str) -> None:
        variable = record.get("variable")  # a manifest/1 records none: the checkpoint's, where there is one
        out.append(ManifestDifference(key, kind, message, variable, record.get("kind")))

    for t in pairing.removed:
        add(t.name, want[t.name], "missing", "in the manifest, not in the checkpoint")
    for t in pairing.added:
        add(t.name, have[t.name], "extra", "in the checkpoint, not in the manifest")
    for e, a in pairing.pairs:
        found = _record_difference(have[a.name], want[e.name], atol, rtol)
        if found is not None and found[0] == "values" and a.name == OBJECT_GRAPH_KEY:
            found = ("values", "the object graph differs (digest): objects are linked or named otherwise, and a "
                     "restore binds values to objects through it")
        if found is not None:
            add(a.name, have[a.name], *found)
    rank = {k: i for i, k in enumerate(KINDS)}
    out = natural_sorted(out, lambda d: d.variable or d.tensor)
    out.sort(key=lambda d: (DIFFERENCE_KINDS.index(d.kind), rank.get(d.tensor_kind or "", len(rank))))
    return ManifestComparison(out, notes)


def _record_difference(h: dict[str, Any], w: dict[str, Any], atol: float,
                       rtol: float) -> tuple[str, str] | None:
    """(kind, message) of how the checkpoint's record ``h`` differs from the manifest's ``w``, or None."""
    from ckptcheck.render.checks import nonfinite_text

    if h.get("dtype") != w.get("dtype"):
        return "dtype", f"dtype {w.get('dtype')} -> {h.get('dtype')}"
    if list(h.get("shape", [])) != list(w.get("shape", [])):
        return "shape", f"shape {w.get('shape')} -> {h.get('shape')}"
    if h.get("sha256") == w.get("sha256"):
        return None
    hs, ws = h.get("stats", {}), w.get("stats", {})
    count = hs.get("count") or 0
    nonfinite = [t for t in (nonfinite_text("NaN", (ws.get("nan") or 0, hs.get("nan") or 0), count),
                             nonfinite_text("Inf", (ws.get("inf") or 0, hs.get("inf") or 0), count)) if t]
    if nonfinite:
        return "non-finite", "; ".join(nonfinite)
    if atol == 0.0 and rtol == 0.0:
        return "values", "values changed (digest differs)"
    drift = [
        _drift_text(k, ws.get(k), hs.get(k), atol, rtol)
        for k in _STAT_KEYS if not _close(hs.get(k), ws.get(k), atol, rtol)
    ] + [f"{k} {ws.get(k)} -> {hs.get(k)}" for k in ("count",) if hs.get(k) != ws.get(k)]
    if drift:
        return "values", "values changed beyond tolerance: " + ", ".join(drift)
    return None
