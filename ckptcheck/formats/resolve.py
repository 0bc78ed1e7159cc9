"""Turn what a user types into a checkpoint location and a format, the way users actually type it.

Accepted: a bundle prefix (``dir/ckpt-3``), ``dir/ckpt-3.index``, a ``.data-*`` or ``.meta`` file, a directory
holding a ``checkpoint`` state file (TF2 CheckpointManager or an Estimator model_dir), a SavedModel directory (or
its ``variables/`` directory, or a file in it: ``saved_model.pb``, ``fingerprint.pb``), a V1 checkpoint (the file
``model.ckpt``, one of its shards ``model.ckpt-00000-of-00002``, the pattern ``model.ckpt-?????-of-00002`` a state
file names, or the base beside its shards), Keras ``.keras``, ``.weights.h5`` and legacy ``.h5`` files
(recognised by their bytes, whatever their name), and ``.safetensors`` files (by their name).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ckptcheck.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedFormatError
from ckptcheck.formats import location as loc
from ckptcheck.formats.files import check_regular, open_regular, read_capped
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS, SAFETENSORS, SAVEDMODEL, CheckpointEntry

STATE_FILE = "checkpoint"
_DATA_RE = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")
_STEP_RE = re.compile(r"-(\d+)$")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')
_MAX_STATE_BYTES = 1 << 20


BUNDLE = "bundle"  # Resolved.kind of a tensor bundle (TF1 Saver V2, tf.train.Checkpoint, SavedModel variables)
V1 = "v1"  # Resolved.kind of a V1 (TensorSliceReader) checkpoint; its format is tf1
# Files that name the SavedModel directory they are in.
_SAVEDMODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb", "keras_metadata.pb")
# Files that are never a V1 checkpoint, by name: looked at no further when a directory is searched.
_NOT_V1 = (".index", ".meta", ".json", ".h5", ".hdf5", ".keras", ".pb", ".pbtxt", ".txt", ".py", ".tfevents",
           ".safetensors")
_SAFETENSORS_SUFFIX = ".safetensors"


class Resolved(NamedTuple):  # a NamedTuple: defined at every start, where a frozen dataclass takes ~1 ms
    """What a path names: ``kind`` is "bundle", V1, one of the Keras formats or SAFETENSORS; ``location`` the
    prefix, V1 file or shard pattern, or the file."""

    kind: str
    location: str
    format_hint: str | None = None  # SAVEDMODEL when reached through a SavedModel directory


class CheckpointState(NamedTuple):
    latest: str | None
    all: tuple[str, ...]
    # Each path that is not what the state file recorded (an absolute path from another machine or store, taken
    # as the file beside the state file), with what it recorded.
    recorded: tuple[tuple[str, str], ...] = ()


_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v"}
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
# Fields of CheckpointState (tensorflow/core/protobuf/checkpoint_state.proto) that hold no path.
_TIMESTAMP_FIELDS = ("all_model_checkpoint_timestamps", "last_preserved_timestamp")


def _unescape(text: str) -> str:
    """Undo protobuf text-format string escaping (C escapes, octal and hex bytes); the bytes are a file name."""
    raw = text.encode("utf-8", "surrogateescape")

    def one(m: re.Match[bytes]) -> bytes:
        octal, hexa, char = m.groups()
        if octal is not None:
            return bytes([int(octal, 8) & 0xFF])
        if hexa is not None:
            return bytes([int(hexa, 16)])
        return _SIMPLE_ESCAPES.get(char.decode("latin-1"), char)

    return os.fsdecode(_ESCAPE.sub(one, raw))


def _state_path(base: str, recorded: str) -> str:
    """Where a checkpoint named in a state file is. Relative names are beside the state file. A TF1 Saver (and
    an Estimator) records absolute paths, often on the machine or bucket that trained: once the directory is
    copied or moved, the checkpoint the user means is the one beside the state file, so that one is preferred
    whenever it exists, even when the recorded path also exists."""
    if not (loc.isabs(recorded) or "://" in recorded):
        return loc.join(base, recorded)
    local = loc.join(base, recorded.rstrip("/").rsplit("/", 1)[-1])
    if loc.is_url(recorded) != loc.is_url(base):
        # A local state file naming a bucket (trained there, copied here), or a store's naming a path on the
        # machine that trained: only the file beside the state file is looked for, never the other place.
        return local
    return local if checkpoint_exists(local) else recorded


def checkpoint_exists(prefix: str) -> bool:
    """A bundle (its .index) or a V1 checkpoint (the file, or shards matching the pattern) is at ``prefix``."""
    if loc.exists(prefix + ".index"):
        return True
    from ckptcheck.formats.tensorflow.v1 import v1_files

    return bool(v1_files(prefix))


def read_state(path: str) -> CheckpointState:
    """Parse a `checkpoint` state file (a CheckpointState text proto); paths are made absolute."""
    try:
        with open_regular(path) as f:
            raw = read_capped(f, _MAX_STATE_BYTES)
        if raw is None:
            raise CorruptCheckpointError("state file is too large to be a checkpoint state", path=path)
        text = raw.decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read the state file: {exc.strerror}", path=path) from None
    base = loc.dirname(path)
    latest: str | None = None
    others: list[str] = []
    recorded: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _STATE_LINE.match(line)
        if m is None:
            if ":" in line and line.split(":", 1)[0].strip() in _TIMESTAMP_FIELDS:
                continue
            raise CorruptCheckpointError(f"unreadable line in the state file: {line.strip()[:80]!r}", path=path,
                                         hint="a `checkpoint` file holds lines like model_checkpoint_path: \"...\"")
        written = _unescape(m.group(2))
        value = _state_path(base, written)
        if loc.isabs(written) and value != written and loc.realpath(value) != loc.realpath(written):
            recorded[value] = written  # another place than the one read (not the same file by another name)
        if m.group(1) == "model_checkpoint_path":
            latest = value
        else:
            others.append(value)
    if latest is None and not others:
        raise CorruptCheckpointError("the state file names no checkpoint", path=path)
    if latest is not None and latest not in others:
        others.append(latest)
    return CheckpointState(latest=latest or others[-1], all=tuple(others), recorded=tuple(recorded.items()))


def step_of(prefix: str) -> int | None:
    from ckptcheck.formats.tensorflow.v1 import V1_SHARD_RE

    m = V1_SHARD_RE.match(prefix)
    if m is not None:  # a V1 shard pattern, model.ckpt-7-?????-of-00002, or one shard of it
        prefix = m.group("base")
    elif prefix.endswith("-?????-of-" + prefix[-5:]):
        prefix = prefix[: -len("-?????-of-00000")]
    m = _STEP_RE.search(prefix)
    return int(m.group(1)) if m else None


def list_state(directory: str) -> list[CheckpointEntry]:
    """Every checkpoint a directory's state file names, oldest first, with its step and whether it exists."""
    state_path = loc.join(directory, STATE_FILE)
    if not loc.isfile(state_path):
        raise CheckpointNotFoundError("no `checkpoint` state file in this directory", path=directory,
                                      hint="--all lists what a state file names; pass a directory that has one")
    state = read_state(state_path)
    named = [CheckpointEntry(prefix=p, step=step_of(p), exists=checkpoint_exists(p), latest=p == state.latest)
             for p in state.all]
    listed = {loc.realpath(p) for p in state.all}
    unnamed = [CheckpointEntry(prefix=p, step=step_of(p), exists=True, latest=False, named=False)
               for p in _bundles_in(directory) + _v1_in(directory) if loc.realpath(p) not in listed]
    # Oldest first: by step where both have one, the unnamed ones by name among themselves.
    return sorted(named + unnamed, key=lambda e: (e.step is None, e.step or 0, not e.named))


def _sniff(path: str) -> bytes:
    try:
        with open_regular(path) as f:
            return f.read(8)
    except OSError as exc:
        raise CheckpointNotFoundError(f"cannot read: {exc.strerror}", path=path) from None


SHARD_MAP_SUFFIX = ".weights.json"  # Keras 3 sharded weights (save_weights(..., max_shard_size=...))
_SHARD_RE = re.compile(r"^(?P<base>.+)_\d{5}\.weights\.h5$")  # its shards: <base>_00000.weights.h5, ...


def shard_base(name: str) -> str | None:
    """For a Keras shard's file name, the base its map is named after (``x`` for ``x_00003.weights.h5``)."""
    m = _SHARD_RE.match(name)
    return m.group("base") if m else None


def _keras_kind(path: str) -> str | None:
    if path.endswith(SHARD_MAP_SUFFIX):
        return KERAS_WEIGHTS  # the JSON map; its reader checks what it holds
    from ckptcheck.formats.keras.safety import loader_kind

    # What keras.saving.load_model would read decides first: a .keras name on a zip (wherever the zip starts), an
    # .h5 name on HDF5 (whose superblock may follow a user block holding anything, a zip included).
    loaded_as = loader_kind(path)
    if loaded_as == "zip":
        return KERAS
    if loaded_as == "hdf5":
        return KERAS_WEIGHTS if path.endswith(".weights.h5") else KERAS_H5
    head = _sniff(path)
    if not head:  # empty: what its name says it should be, so that verify calls it damaged as it does an .index
        name = path.lower()
        if name.endswith(".keras"):
            return KERAS
        if name.endswith((".h5", ".hdf5")):
            return KERAS_WEIGHTS if name.endswith(".weights.h5") else KERAS_H5
    if head.startswith(_ZIP_MAGIC):
        return KERAS
    if head.startswith(_HDF5_MAGIC):
        return KERAS_WEIGHTS if path.endswith(".weights.h5") else KERAS_H5
    return None


def _natural(name: str) -> list[str | int]:
    """Sort key putting ckpt-9 before ckpt-10 (text and numbers alternate, so items always compare)."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def _bundles_in(directory: str) -> list[str]:
    """The bundle prefixes in a directory, oldest step first (hints show the last few)."""
    try:
        names = sorted((n for n in loc.listdir(directory) if n.endswith(".index")), key=_natural)
    except OSError:
        return []
    return [loc.join(directory, n[: -len(".index")]) for n in names]


def _near_misses(path: str) -> str | None:
    parent = loc.dirname(path) or "."
    prefixes = [loc.basename(p) for p in _bundles_in(parent)]
    if prefixes:
        return "checkpoints here: " + ", ".join(prefixes[-5:])
    return None


def _resolve_prefix(prefix: str, given: str) -> Resolved:
    if not loc.exists(prefix + ".index"):
        raise CheckpointNotFoundError(f"no index file {loc.basename(prefix)}.index beside it", path=given,
                                      hint="a bundle needs its .index file; pass the prefix")
    return _bundle(prefix)


def _bundle(prefix: str) -> Resolved:
    """A bundle prefix; a SavedModel's own variables/variables is reported as a SavedModel however it is named."""
    directory = loc.dirname(prefix)
    if (
        loc.basename(prefix) == "variables"
        and loc.basename(directory) == "variables"
        and any(loc.isfile(loc.join(loc.dirname(directory), f))
                for f in ("saved_model.pb", "saved_model.pbtxt"))
    ):
        return Resolved(BUNDLE, prefix, format_hint=SAVEDMODEL)
    return Resolved(BUNDLE, prefix)


def _v1(location: str) -> Resolved | None:
    """A V1 checkpoint at ``location`` (the file, its shard pattern, or the base of its shards), if there is one."""
    from ckptcheck.formats.tensorflow.v1 import V1_SHARD_RE, is_v1_pattern, looks_like_table, shard_pattern, v1_files

    files = v1_files(location)
    if not files or not looks_like_table(files[0]):
        return None
    if is_v1_pattern(location):
        return Resolved(V1, location)
    if loc.isfile(location):
        name = loc.basename(location)
        return Resolved(V1, shard_pattern(location) if V1_SHARD_RE.match(name) else location)
    return Resolved(V1, shard_pattern(files[0]))


def _v1_in(directory: str) -> list[str]:
    """The V1 checkpoints in a directory (a file, or one pattern for a set of shards), natural order."""
    from ckptcheck.formats.tensorflow.v1 import V1_SHARD_RE, looks_like_table, shard_pattern

    try:
        names = sorted(loc.listdir(directory), key=_natural)
    except OSError:
        return []
    found: dict[str, None] = {}
    for name in names:
        if name == STATE_FILE or name.endswith(_NOT_V1) or _DATA_RE.match(name) or ".tfevents." in name:
            continue
        path = loc.join(directory, name)
        if loc.isfile(path) and looks_like_table(path):
            found.setdefault(shard_pattern(path) if V1_SHARD_RE.match(name) else path, None)
    return list(found)


def checkpoints_in(directory: str) -> list[str]:
    """Every checkpoint directly in ``directory``, each kind in natural order: bundle prefixes, V1 checkpoints (a
    file, or the pattern of a set of shards), then Keras files (.keras, .weights.h5, .h5; sharded weights by their
    map). What ``history`` reads in a directory that has no state file."""
    return _bundles_in(directory) + _v1_in(directory) + _keras_files_in(directory)


def _warn_relocated(state: CheckpointState, latest: str, state_path: str) -> None:
    """A state file from another machine or store, read through the file beside it: said, since the user may
    have meant the recorded one (the CLI prints it as a warning line)."""
    written = dict(state.recorded).get(latest)
    if written is not None:
        import warnings

        from ckptcheck.errors import RelocatedCheckpointWarning

        warnings.warn(RelocatedCheckpointWarning(
            f"{state_path}: the state file records {written}; reading {loc.basename(latest)} beside it"),
            stacklevel=3)


def _resolve_directory(directory: str) -> Resolved:
    state_path = loc.join(directory, STATE_FILE)
    if loc.exists(state_path) and not loc.isdir(state_path):  # a pipe there is refused, not skipped
        state = read_state(state_path)
        latest = state.latest or ""
        if not loc.exists(latest + ".index"):
            v1 = _v1(latest)
            if v1 is not None:
                _warn_relocated(state, latest, state_path)
                return v1
            present = [loc.basename(p) for p in _bundles_in(directory) + _v1_in(directory)]
            hint = ("checkpoints present: " + ", ".join(present[-5:])) if present else "no checkpoint is left here"
            written = dict(state.recorded).get(latest)
            if written is not None:  # an absolute path from where it was written: say where it was
                hint = f"it records {written}; {hint}"
            elif loc.dirname(latest) != loc.dirname(state_path):
                hint = f"it names {latest}; {hint}"
            raise CheckpointNotFoundError(
                f"the state file points at {loc.basename(latest)}, which is gone", path=state_path, hint=hint
            )
        _warn_relocated(state, latest, state_path)
        return Resolved(BUNDLE, latest)
    for variables in (loc.join(directory, "variables", "variables"), loc.join(directory, "variables")):
        if loc.isfile(variables + ".index"):
            return Resolved(BUNDLE, variables, format_hint=SAVEDMODEL)
    if loc.isfile(loc.join(directory, "saved_model.pb")) or loc.isfile(
        loc.join(directory, "saved_model.pbtxt")
    ):
        raise CheckpointNotFoundError("SavedModel has no variables/variables.index", path=directory,
                                      hint="a SavedModel without variables stores no checkpoint")
    bundles = _bundles_in(directory)
    if len(bundles) == 1:
        return Resolved(BUNDLE, bundles[0])
    v1_found = _v1_in(directory) if not bundles else []
    if len(v1_found) == 1:
        return Resolved(V1, v1_found[0])
    bundles += v1_found
    if bundles:
        names = ", ".join(loc.basename(b) for b in bundles[-5:])
        raise CheckpointNotFoundError(f"{len(bundles)} checkpoints and no `checkpoint` state file to choose one",
                                      path=directory, hint=f"pass one prefix: {names}")
    keras_files = _keras_files_in(directory)
    if len(keras_files) == 1:
        kind = _keras_kind(keras_files[0])
        if kind is not None:
            return Resolved(kind, keras_files[0])
    if keras_files:
        names = ", ".join(loc.basename(f) for f in keras_files[:5])
        raise CheckpointNotFoundError(f"{len(keras_files)} Keras files here and nothing to choose one",
                                      path=directory, hint=f"pass one file: {names}")
    safetensors = _safetensors_in(directory)
    if len(safetensors) == 1:
        return Resolved(SAFETENSORS, safetensors[0])
    if safetensors:
        names = ", ".join(loc.basename(f) for f in safetensors[:5])
        raise CheckpointNotFoundError(f"{len(safetensors)} .safetensors files here; ckptcheck reads one at a time",
                                      path=directory, hint=f"pass one file: {names}")
    raise CheckpointNotFoundError("no checkpoint in this directory", path=directory,
                                  hint="pass a checkpoint prefix, a .index file, a .keras or .h5 file")


def _keras_files_in(directory: str) -> list[str]:
    """The .keras / .h5 / .hdf5 / .weights.json files directly in a directory (a directory holding one stands for
    it). The shards of a sharded weights file beside their .weights.json are part of it, not files of their own."""
    try:
        names = sorted(loc.listdir(directory))
    except OSError:
        return []
    maps = {n[: -len(SHARD_MAP_SUFFIX)] for n in names if n.endswith(SHARD_MAP_SUFFIX)}
    found = [loc.join(directory, n) for n in names
             if n.endswith((".keras", ".h5", ".hdf5", SHARD_MAP_SUFFIX)) and shard_base(n) not in maps]
    return [f for f in found if loc.isfile(f)]


def _safetensors_in(directory: str) -> list[str]:
    try:
        names = sorted(n for n in loc.listdir(directory) if n.lower().endswith(_SAFETENSORS_SUFFIX))
    except OSError:
        return []
    return [f for f in (loc.join(directory, n) for n in names) if loc.isfile(f)]


def _resolve_url(url: str) -> Resolved | None:
    """The common shapes of a URL answered by a few existence checks, before anything lists a directory (an
    object store's listing is slow and an HTTP server has none): a prefix (its .index: the header then names
    the shards), a model_dir (its state file), a SavedModel. None: resolve goes on as for a local path."""
    url = url.rstrip("/")
    name = loc.basename(url)
    if name.endswith((".index", ".meta")) or _DATA_RE.match(name) or name == STATE_FILE:
        return None  # named files: the general path checks them one by one
    if name.endswith((".keras", ".h5", ".hdf5", SHARD_MAP_SUFFIX, _SAFETENSORS_SUFFIX)):
        return None
    if loc.exists(url + ".index"):
        return _bundle(url)
    state = loc.join(url, STATE_FILE)
    if loc.isfile(state):
        return _resolve_directory(url)
    for variables in (loc.join(url, "variables", "variables"), loc.join(url, "variables")):
        if loc.isfile(variables + ".index"):
            return Resolved(BUNDLE, variables, format_hint=SAVEDMODEL)
    return None


def resolve(path: str) -> Resolved:
    """Find the checkpoint ``path`` names; raise CheckpointNotFoundError with a hint when there is none."""
    if loc.is_url(path):
        found = _resolve_url(path)
        if found is not None:
            return found
        path = path.rstrip("/")
    if loc.exists(path) and not loc.isdir(path) and not loc.isfile(path):
        check_regular(path)  # a FIFO or device: say what it is, rather than "no such file"
    if loc.isdir(path):
        return _resolve_directory(path)
    if loc.isfile(path):
        if path.endswith(".index"):
            return _resolve_prefix(path[: -len(".index")], path)
        m = _DATA_RE.match(path)
        if m:
            return _resolve_prefix(m.group("prefix"), path)
        if path.endswith(".meta") and loc.exists(path[: -len(".meta")] + ".index"):
            return _bundle(path[: -len(".meta")])
        if path.endswith(".meta"):
            v1 = _v1(path[: -len(".meta")])
            if v1 is not None:
                return v1
        if loc.basename(path) == STATE_FILE:
            return _resolve_directory(loc.dirname(path) or ".")
        if loc.basename(path) in _SAVEDMODEL_FILES:
            return _resolve_directory(loc.dirname(path) or ".")
        if path.lower().endswith(_SAFETENSORS_SUFFIX):  # by its name: the format has no magic bytes
            return Resolved(SAFETENSORS, path)
        kind = _keras_kind(path)
        if kind is not None:
            return Resolved(kind, path)
        if loc.exists(path + ".index"):
            return _bundle(path)
        v1 = _v1(path)
        if v1 is not None:
            return v1
        if loc.getsize(path) == 0:
            raise UnsupportedFormatError("file is empty", path=path)
        raise UnsupportedFormatError(
            "not a checkpoint format ckptcheck reads", path=path,
            hint="ckptcheck reads TensorFlow bundles (.index/.data), V1 checkpoints, .keras, .weights.h5, .h5 and "
                 ".safetensors files",
        )
    if loc.exists(path + ".index"):
        return _bundle(path)
    v1 = _v1(path)
    if v1 is not None:
        return v1
    if loc.is_url(path):
        raise CheckpointNotFoundError("not found: no object at this URL, nor a checkpoint prefix, `checkpoint` "
                                      "state file or SavedModel under it", path=path)
    raise CheckpointNotFoundError("no such file or directory", path=path, hint=_near_misses(path))
