"""Step 3: the format's matching rule, to say why: the stored name each variable is looked up by (TF2: its
object path, bound edge by edge from the root as TensorFlow does; TF1: its name; Keras 3: the key Keras's own
writer gives it; legacy .h5: its position among the layers with weights)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ckptcheck.compare import same_bits
from ckptcheck.formats.interface import CheckpointReader
from ckptcheck.formats.tensorflow.keys import VALUE_SUFFIX
from ckptcheck.formats.tensorflow.object_graph import escape_name, parse_graph, slot_path
from ckptcheck.records import TensorInfo
from ckptcheck.restore_check.user_model import LoadedModel
from ckptcheck.restore_check.variables import Var, children_of, live_slot, walk_trackables

# --- what the format looks each variable up by ----------------------------------------------------------------------


def short_key(key: str) -> str:
    """A TF2 key without its `/.ATTRIBUTES/VARIABLE_VALUE` tail: the object path of the variable."""
    return key[: -len(VALUE_SUFFIX)] if key.endswith(VALUE_SUFFIX) else key


def tf2_root(loaded: LoadedModel, reader: CheckpointReader, tf: Any) -> tuple[Any, Any, str, list[str]]:
    """The tf.train.Checkpoint to restore with, the object its graph's root stands for, how it is written, and
    notes. A dict names the root's children; else the model becomes `model=` when the checkpoint's root has a
    `model` child (tf.train.Checkpoint(model=...), as `ckptcheck generate` writes), and the root itself otherwise
    (a SavedModel, or tf_keras's save_weights)."""
    target = loaded.target
    root_children = _root_children(reader)
    if isinstance(target, dict):
        ckpt = tf.train.Checkpoint(**target)
        return ckpt, ckpt, f"tf.train.Checkpoint({', '.join(f'{k}=...' for k in target)})", []
    if "model" in root_children or not root_children:
        ckpt = tf.train.Checkpoint(model=target)
        return ckpt, ckpt, "tf.train.Checkpoint(model=<model>)", []
    note = (f"the checkpoint's root has no `model` child (it has {', '.join(root_children)}): the model was "
            f"restored as the root; return a dict from FUNCTION to name its objects otherwise")
    return tf.train.Checkpoint(root=target), target, "tf.train.Checkpoint(root=<model>)", [note]


def _root_children(reader: CheckpointReader) -> list[str]:
    data = getattr(reader, "object_graph_bytes", lambda: None)()
    if not data:
        return []
    nodes = parse_graph(data)
    return [name for _, name in nodes[0].children] if nodes else []


@dataclass
class _Tf2Match:
    keys: dict[int, str]  # id(live object) -> the VARIABLE_VALUE key of the checkpoint node bound to it
    others: dict[str, str]  # key -> path of a bound live object that is not a model variable (save_counter...)


def match_tf2(reader: CheckpointReader, root: Any, variables: Sequence[Var], tf: Any, keras: Any) -> _Tf2Match:
    """Bind checkpoint nodes to live objects as TensorFlow's object-based restore does: from the root, each
    checkpoint child edge to the live child of the same name, breadth first; a node is bound once."""
    data = getattr(reader, "object_graph_bytes", lambda: None)()
    if not data:
        return _Tf2Match({}, {})
    nodes = parse_graph(data)
    bound: dict[int, Any] = {0: root}
    path_of: dict[int, str] = {0: ""}
    queue: deque[int] = deque([0])
    while queue:
        node_id = queue.popleft()
        live = children_of(bound[node_id], tf)
        for child_id, name in nodes[node_id].children:
            if child_id in bound or not 0 <= child_id < len(nodes) or name not in live:
                continue
            bound[child_id] = live[name]
            parent = path_of[node_id]
            path_of[child_id] = f"{parent}/{escape_name(name)}" if parent else escape_name(name)
            queue.append(child_id)
    # Slot variables are bound through their optimizer's slot records: the optimizer's slot of that name for the
    # variable the original node is bound to (when the optimizer has created it; else TensorFlow defers it).
    for node_id, obj in list(bound.items()):
        for slot in nodes[node_id].slots:
            original = bound.get(slot.original_node)
            if original is None or slot.slot_node in bound or not 0 <= slot.slot_node < len(nodes):
                continue
            live = live_slot(obj, original, slot.slot_name)
            if live is not None:
                bound[slot.slot_node] = live
                path_of[slot.slot_node] = slot_path(path_of[slot.original_node], path_of[node_id], slot.slot_name)
    wanted = {id(v.obj) for v in variables}
    keys: dict[int, str] = {}
    others: dict[str, str] = {}
    for node_id, obj in bound.items():
        for attr in nodes[node_id].attributes:
            if id(obj) in wanted and attr.name == "VARIABLE_VALUE":
                keys.setdefault(id(obj), attr.checkpoint_key)
            elif id(obj) not in wanted:
                others[attr.checkpoint_key] = path_of[node_id] or "(root)"
    return _Tf2Match(keys, others)


def predict_tf2(variables: Sequence[Var], match: _Tf2Match, root: Any, tf: Any, keras: Any) -> None:
    """The key each variable is restored from; for one the restore does not reach, the key it would be saved
    under (its object path through the model, for a weight)."""
    model_side = walk_trackables([("", root)], tf, keras, into_optimizers=False, escaped=True)
    everything = walk_trackables([("", root)], tf, keras, into_optimizers=True, escaped=True)
    for v in variables:
        found = match.keys.get(id(v.obj))
        if found is not None:
            v.key = found
            continue
        path = (model_side.get(id(v.obj)) or everything.get(id(v.obj)) or ("", None))[0]
        v.key = path + VALUE_SUFFIX if path else None


def predict_keras3(model: Any, variables: Sequence[Var], work: str) -> None:
    """Keras 3 keys layers by class and position (layers/dense_1/vars/0), not by name: save the fingerprinted
    model with Keras's own writer and see where each fingerprint lands."""
    import ckptcheck

    probe = os.path.join(work, "probe.weights.h5")
    model.save_weights(probe)
    by_group: dict[tuple[str, tuple[int, ...]], list[Var]] = {}
    for v in variables:
        by_group.setdefault((v.dtype, v.shape), []).append(v)
    with ckptcheck.open_checkpoint(probe) as reader:
        for t in reader.tensors():
            group = [v for v in by_group.get((t.dtype, t.shape), []) if v.key is None]
            if not group:
                continue
            value = reader.read(t.name)
            hit = next((v for v in group if v.fingerprint is not None and same_bits(v.fingerprint, value)), None)
            if hit is not None:
                hit.key = t.name


def predict_legacy_h5(model: Any, variables: Sequence[Var], stored: Sequence[TensorInfo]) -> None:
    """Keras loads a legacy .h5 by position: the k-th layer with weights takes the k-th layer group of the file,
    weight by weight in order (trainable, then non-trainable). Optimizer state is not read."""
    groups: list[list[str]] = []
    last = None
    for t in stored:
        if t.name.startswith("optimizer_weights/"):
            continue
        layer = t.name.split("/", 1)[0]
        if layer != last:
            groups.append([])
            last = layer
        groups[-1].append(t.name)
    by_id = {id(v.obj): v for v in variables}
    layers = [layer for layer in getattr(model, "layers", []) if layer.weights]
    for layer, names in zip(layers, groups, strict=False):
        weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        for w, name in zip(weights, names, strict=False):
            v = by_id.get(id(w))
            if v is not None:
                v.key = name
