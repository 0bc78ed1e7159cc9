"""The TF2 object graph (tensorflow/core/protobuf/trackable_object_graph.proto) a checkpoint stores.

A tf.train.Checkpoint stores each variable once, under the key built from the first breadth-first path that
reaches it. Users think in other paths (``model/.../_kernel`` rather than ``optimizer/_trainable_variables/0``),
so for each stored tensor this module lists every path through the graph that reaches it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ckptcheck.formats.tensorflow.keys import SAVE_COUNTER_KEY, VALUE_SUFFIX
from ckptcheck.formats.tensorflow.protobuf import DecodeError, as_bytes, as_int, iter_fields, read_varint
from ckptcheck.records import ObjectRef

# The graph may hold cycles and many diamond paths (a Keras model reaches a kernel through layers, _operations,
# _functional, the optimizer's variable lists...). Enough paths to tell the user what a key is, and no blow-up.
MAX_PATHS_PER_NODE = 8
MAX_PATH_DEPTH = 32  # alternative paths are looked for this deep; the first path is found at any depth
# A hostile graph (a long chain, huge names) could make path strings quadratic in its size: a path longer than
# this is not spelled out, and all paths together stop at a budget far above any real model's.
MAX_PATH_CHARS = 4096
PATH_CHARS_BUDGET = 1 << 26
# Edges of the whole graph, and edge visits spent looking for other paths than the first: a real model's graph has
# a few edges per variable; a dense crafted one (every node linked to every later one) would take minutes and
# gigabytes.
MAX_EDGES = 500_000
MAX_PATH_VISITS = 2_000_000


@dataclass
class Attribute:
    name: str
    full_name: str
    checkpoint_key: str


@dataclass
class SlotRef:
    original_node: int
    slot_name: str
    slot_node: int


@dataclass
class Node:
    children: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    slots: list[SlotRef] = field(default_factory=list)


def parse_graph(data: bytes) -> list[Node]:
    nodes = []
    edges = 0
    for number, _wire, value in iter_fields(data):
        if number != 1:
            continue
        node = Node()
        for n2, _w2, v2 in iter_fields(as_bytes(value, "nodes")):
            if n2 == 1:
                node_id, local_name = 0, ""
                for n3, _w3, v3 in iter_fields(as_bytes(v2, "children")):
                    if n3 == 1:
                        node_id = as_int(v3, "node_id")
                    elif n3 == 2:
                        local_name = as_bytes(v3, "local_name").decode("utf-8", "surrogateescape")
                node.children.append((node_id, local_name))
                edges += 1
                if edges > MAX_EDGES:
                    raise DecodeError(f"it has more than {MAX_EDGES:,} edges, where a model's graph has a few per "
                                      "variable; ckptcheck reads no more")
            elif n2 == 2:
                attr = Attribute("", "", "")
                for n3, _w3, v3 in iter_fields(as_bytes(v2, "attributes")):
                    if n3 in (1, 2, 3):
                        text = as_bytes(v3, "attribute").decode("utf-8", "surrogateescape")
                        if n3 == 1:
                            attr.name = text
                        elif n3 == 2:
                            attr.full_name = text
                        else:
                            attr.checkpoint_key = text
                node.attributes.append(attr)
            elif n2 == 3:
                orig, slot_name, slot_node = 0, "", 0
                for n3, _w3, v3 in iter_fields(as_bytes(v2, "slot_variables")):
                    if n3 == 1:
                        orig = as_int(v3, "original_variable_node_id")
                    elif n3 == 2:
                        slot_name = as_bytes(v3, "slot_name").decode("utf-8", "surrogateescape")
                    elif n3 == 3:
                        slot_node = as_int(v3, "slot_variable_node_id")
                node.slots.append(SlotRef(orig, slot_name, slot_node))
        nodes.append(node)
    return nodes


def escape_name(name: str) -> str:
    """An edge name as checkpoint keys write it (tensorflow/python/trackable/trackable_utils.py): `.` -> `..`,
    then `/` -> `.S`, so that `/` only ever separates edges."""
    return name.replace(".", "..").replace("/", ".S")


OPTIMIZER_SLOT = "/.OPTIMIZER_SLOT/"


def slot_path(variable: str, optimizer: str, slot_name: str) -> str:
    """Where TensorFlow saves an optimizer's slot variable: ``<variable>/.OPTIMIZER_SLOT/<optimizer>/<slot>``."""
    return f"{variable}{OPTIMIZER_SLOT}{optimizer}/{escape_name(slot_name)}"


def _join(path: str, name: str) -> str:
    return f"{path}/{escape_name(name)}" if path else escape_name(name)


def node_paths(nodes: list[Node]) -> dict[int, list[str]]:
    """The paths (escaped child names joined by '/') that reach each node from the root.

    The first is TensorFlow's: the path along which a breadth-first walk first reaches the node, the one its
    checkpoint keys are built from. Up to MAX_PATHS_PER_NODE - 1 other cycle-free paths follow, shortest first.
    A node whose first path is too long to spell out (see MAX_PATH_CHARS) has no entry.
    """
    if not nodes:
        return {}
    budget = PATH_CHARS_BUDGET
    # The breadth-first tree: each node's first path, and the edge (parent, edge index) it arrives by.
    first: dict[int, str | None] = {0: ""}
    tree_edge: dict[int, tuple[int, int]] = {}
    order: deque[int] = deque([0])
    while order:
        node_id = order.popleft()
        parent_path = first[node_id]
        for index, (child, name) in enumerate(nodes[node_id].children):
            if not 0 <= child < len(nodes) or child in first:
                continue
            tree_edge[child] = (node_id, index)
            path = None if parent_path is None else _join(parent_path, name)
            if path is not None and (len(path) > MAX_PATH_CHARS or len(path) > budget):
                path = None
            if path is not None:
                budget -= len(path)
            first[child] = path
            order.append(child)
    paths: dict[int, list[str]] = {node_id: [path] for node_id, path in first.items() if path is not None}
    # Other paths: walk the tree edges (once per node) and, from any node, edges off the tree (each distinct path
    # at most once, a few per node), so duplicate edges or dense diamonds cannot blow the walk up.
    queue: deque[tuple[int, str, frozenset[int], bool]] = deque([(0, "", frozenset([0]), True)])
    visits = MAX_PATH_VISITS
    while queue and budget > 0 and visits > 0:
        node_id, path, seen, on_tree = queue.popleft()
        if len(seen) > MAX_PATH_DEPTH:
            continue
        visits -= len(nodes[node_id].children)
        for index, (child, name) in enumerate(nodes[node_id].children):
            if not 0 <= child < len(nodes) or child in seen:
                continue
            child_on_tree = on_tree and tree_edge.get(child) == (node_id, index)
            known = paths.get(child)
            # (A node whose first path is too long to spell gets no others: the first must come first.) Whether a
            # path is wanted is known before it is spelled out.
            if not child_on_tree and (known is None or len(known) >= MAX_PATHS_PER_NODE):
                continue
            child_path = _join(path, name)
            if len(child_path) > MAX_PATH_CHARS:
                continue
            if not child_on_tree:
                if known is None or child_path in known:
                    continue
                known.append(child_path)
                budget -= len(child_path)
            queue.append((child, child_path, seen | {child}, child_on_tree))
    return paths


_ATTRIBUTES = "/.ATTRIBUTES/"


# Lists a Keras 3 optimizer tracks that are not per-variable state.
_KERAS_OPTIMIZER_LISTS = {"_variables", "_trainable_variables"}


def keras_optimizer_slots(nodes: list[Node]) -> dict[int, tuple[int, str, int]]:
    """Keras 3 optimizers keep per-variable state in plain lists (`_momentums`, `_velocities`, ...) paired by
    index with `_trainable_variables`, not in TF's slot mechanism. slot node -> (variable node, slot, optimizer).

    A list counts when its children are exactly "0".."n-1", n being the number of trainable variables.
    """
    out: dict[int, tuple[int, str, int]] = {}
    for opt_id, node in enumerate(nodes):
        children = {name: child for child, name in node.children}
        trainable = children.get("_trainable_variables")
        if trainable is None or "_variables" not in children or not 0 <= trainable < len(nodes):
            continue
        variables = _indexed(nodes[trainable])
        if not variables:
            continue
        for name, child in children.items():
            if name in _KERAS_OPTIMIZER_LISTS or not name.startswith("_") or not 0 <= child < len(nodes):
                continue
            slots = _indexed(nodes[child])
            if len(slots) != len(variables):
                continue
            slot_name = _singular(name.lstrip("_"))  # _momentums -> momentum, _velocities -> velocity
            for variable, slot in zip(variables, slots, strict=True):
                out.setdefault(slot, (variable, slot_name, opt_id))
    return out


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    return name[:-1] if name.endswith("s") else name


def _indexed(node: Node) -> list[int]:
    """A list's elements in order, when its children are named "0".."n-1" and nothing else."""
    by_index = {name: child for child, name in node.children}
    if not by_index or sorted(by_index) != sorted(str(i) for i in range(len(by_index))):
        return []
    return [by_index[str(i)] for i in range(len(by_index))]


def object_refs(data: bytes, stored: set[str]) -> tuple[ObjectRef, ...]:
    """For each stored checkpoint key the graph names: every object path to it, and slot ownership.

    A stored key is matched to the attribute whose checkpoint_key it is or, for objects that save several
    tensors under one attribute, extends: a tf.data iterator's attribute `it/.ATTRIBUTES/ITERATOR` is stored as
    `.../ITERATOR_STATE`, a MutableHashTable's `t/.ATTRIBUTES/table` as `.../table-keys` and `.../table-values`.
    """
    nodes = parse_graph(data)
    paths = node_paths(nodes)
    # A slot variable node is reached through its optimizer, not through children edges.
    slot_of: dict[int, tuple[int, str, int]] = {}
    for opt_id, node in enumerate(nodes):
        for slot in node.slots:
            slot_of[slot.slot_node] = (slot.original_node, slot.slot_name, opt_id)

    keras_slots = keras_optimizer_slots(nodes)
    for slot_node, keras_owner in keras_slots.items():
        slot_of.setdefault(slot_node, keras_owner)

    def first(node_id: int) -> str:
        found = paths.get(node_id)
        return found[0] if found else f"<node {node_id}>"

    def outside(node_id: int, optimizer: str) -> str:
        """The variable's path as the model reaches it, rather than through the optimizer's own lists."""
        found = paths.get(node_id, [])
        return next((p for p in found if not p.startswith(optimizer + "/")), first(node_id))

    owners: dict[str, int] = {}  # attribute checkpoint_key -> node
    full_names: dict[str, str] = {}  # attribute checkpoint_key -> the variable's name when saved
    for node_id, node in enumerate(nodes):
        for attr in node.attributes:
            owners.setdefault(attr.checkpoint_key, node_id)
            if attr.full_name:
                full_names.setdefault(attr.checkpoint_key, attr.full_name)
    # Edge names are escaped, so "/.ATTRIBUTES/" occurs in a key only where the object path ends.
    by_object: dict[str, list[str]] = {}
    for key in owners:
        at = key.find(_ATTRIBUTES)
        if at >= 0:
            by_object.setdefault(key[:at], []).append(key)

    refs: list[ObjectRef] = []
    for key in sorted(stored):
        at = key.find(_ATTRIBUTES)
        attribute_key = key
        if key not in owners:
            extended = [k for k in by_object.get(key[:at], ()) if key.startswith(k)] if at >= 0 else []
            if not extended:
                continue
            attribute_key = max(extended, key=len)
        node_id = owners[attribute_key]
        node_paths_ = list(paths.get(node_id, []))
        owner = slot_of.get(node_id)
        original = slot_name = optimizer = None
        if owner is not None:
            orig_id, slot_name, opt_id = owner
            optimizer = first(opt_id)
            original = outside(orig_id, optimizer)
            if node_id not in keras_slots:  # TF slots are keyed by this path; Keras 3 lists by their own
                node_paths_.append(slot_path(original, optimizer, slot_name))
        # A variable's value is its only tensor worth no name; others (iterator state, table keys) are named.
        tensor = key[at + len(_ATTRIBUTES) :] if at >= 0 else ""
        suffix = "" if tensor == "VARIABLE_VALUE" else tensor
        full = tuple("/".join(x for x in (p, suffix) if x) for p in node_paths_)
        refs.append(ObjectRef(key=key, paths=full, slot_of=original, slot_name=slot_name, optimizer=optimizer,
                              saved_name=full_names.get(attribute_key)))
    return tuple(refs)


# A variable's SerializedTensor begins with its name field, "VARIABLE_VALUE", then (when set) its full_name.
_VALUE_ATTRIBUTE = b"\x0a\x0eVARIABLE_VALUE\x12"
_VALUE_KEY_END = VALUE_SUFFIX.encode()


def _short_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A varint of at most two bytes (any length below 16 KiB) at ``pos``: (value, next position); (-1, pos) for
    anything longer or cut short."""
    b = data[pos] if pos < len(data) else 0xFF
    if b < 0x80:
        return b, pos + 1
    c = data[pos + 1] if pos + 1 < len(data) else 0xFF
    if c < 0x80:
        return (b & 0x7F) | (c << 7), pos + 2
    return -1, pos


def variable_saved_names(data: bytes) -> dict[str, str] | None:
    """saved_names() for the graph's VARIABLE_VALUE attributes that record a full_name, found by splitting the
    graph at their name field instead of decoding every node: half the time of saved_names on 20,000 variables.

    Each piece must prove to be such an attribute: full_name then checkpoint_key (then optionally
    optional_restore) parse, the attribute field's length just before it covers exactly them, and the key ends as a
    variable's does. Anything else (a name that happens to hold those bytes, another layout) returns None, and
    the caller decodes the graph in full. A variable without a full_name is not found here: the caller checks that
    every stored key was.
    """
    out: dict[str, str] = {}
    pieces = data.split(_VALUE_ATTRIBUTE)
    before = pieces[0]
    prefixes: dict[int, bytes] = {}
    try:  # a piece cut short raises IndexError: not an attribute
        for piece in pieces[1:]:
            size = piece[0]  # one-byte lengths inline: this loop runs once per variable
            if size < 0x80:
                at = 1 + size
                full_name = piece[1:at]
            else:
                size, at = _short_varint(piece, 0)
                if size < 0:
                    return None
                full_name = piece[at : at + size]
                at += size
            if piece[at] != 0x1A:
                return None
            size = piece[at + 1]
            if size < 0x80:
                at += 2
            else:
                size, at = _short_varint(piece, at + 1)
                if size < 0:
                    return None
            stop = at + size
            key = piece[at:stop]
            if stop > len(piece) or not key.endswith(_VALUE_KEY_END):
                return None
            length = stop + len(_VALUE_ATTRIBUTE)  # the attribute: name field, full_name tag, the rest
            if len(piece) > stop + 1 and piece[stop] == 0x20 and piece[stop + 1] < 2:  # optional_restore
                length += 2
            prefix = prefixes.get(length)
            if prefix is None:
                if length >= 1 << 14:
                    return None
                prefix = prefixes[length] = (bytes((0x12, length)) if length < 0x80
                                             else bytes((0x12, (length & 0x7F) | 0x80, length >> 7)))
            if not before.endswith(prefix):
                return None
            out[key.decode()] = full_name.decode()
            before = piece
    except (IndexError, UnicodeDecodeError):  # (saved_names decodes what is not UTF-8 with escapes)
        return None
    if len(out) != len(pieces) - 1:  # a key found twice
        return None
    return out


def saved_names(data: bytes) -> dict[str, str]:
    """checkpoint_key -> full_name (the name the variable had when saved: for Keras 3, its Variable.path) for
    every attribute of the graph that records one.

    Listing a checkpoint names every tensor through this, so it decodes only what it needs, in one loop without
    calls for one-byte tags and lengths: each node's attributes, stepping over children and slot references by
    their lengths (the generic decoder took 150 ms on a 20,000-variable graph).
    """
    out: dict[str, str] = {}
    # Every message here is a sequence of fields; `stack` holds the ends of the messages entered: the graph
    # (depth 0), a node (1), an attribute (2).
    end = len(data)
    pos = 0
    ends = [end, 0, 0]
    depth = 0
    full_name = key = b""
    while True:
        if pos >= ends[depth]:
            if pos > ends[depth]:
                raise DecodeError("a field runs past the end of its message")
            if depth == 0:
                return out
            if depth == 2 and full_name and key:
                text = key.decode("utf-8", "surrogateescape")
                if text not in out:
                    out[text] = full_name.decode("utf-8", "surrogateescape")
            depth -= 1
            continue
        if depth == 1:  # a node's children first (fields are written in order): step over short ones in a row
            stop = ends[1]
            while pos + 1 < stop and data[pos] == 0x0A and data[pos + 1] < 0x80:
                pos += 2 + data[pos + 1]
            if pos >= stop:
                continue
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(data, pos, ends[depth])
        wire = tag & 7
        if wire == 2:
            size = data[pos] if pos < end else 0x80
            if size < 0x80:
                pos += 1
            else:
                size, pos = read_varint(data, pos, ends[depth])
            stop = pos + size
            if stop > ends[depth]:
                raise DecodeError("length-delimited field runs past the end of its message")
            if (tag == 0x0A and depth == 0) or (tag == 0x12 and depth == 1):  # a node; a node's attribute
                depth += 1
                ends[depth] = stop
                full_name = key = b""
                continue
            if depth == 2:
                if tag == 0x12:
                    full_name = data[pos:stop]
                elif tag == 0x1A:
                    key = data[pos:stop]
            pos = stop
        elif wire == 0:
            pos = read_varint(data, pos, ends[depth])[1]
        elif wire == 5 or wire == 1:
            pos += 4 if wire == 5 else 8
        else:
            raise DecodeError(f"unsupported wire type {wire}")


OBJECT_GRAPH_VARIABLE = "(object graph)"
SAVE_COUNTER_VARIABLE = "(save counter)"


def key_variables(keys: Iterable[str], saved: dict[str, str], graph_key: str) -> dict[str, str]:
    """The ``variable`` of each key of an object-based bundle: ``saved`` (saved_names() of its graph, completed in
    place and returned), bookkeeping named in parentheses. A key the graph gives no saved name (a tf.data
    iterator's state, a table's keys, a graph that could not be read) is named by its object path, attribute
    appended unless it is the variable's value.
    """
    for key in keys:
        if key not in saved:
            if key.endswith(VALUE_SUFFIX):
                saved[key] = key[: -len(VALUE_SUFFIX)]
            else:
                at = key.find(_ATTRIBUTES)
                saved[key] = key if at < 0 else key[:at] + "/" + key[at + len(_ATTRIBUTES) :]
    saved[graph_key] = OBJECT_GRAPH_VARIABLE
    if SAVE_COUNTER_KEY in saved:
        saved[SAVE_COUNTER_KEY] = SAVE_COUNTER_VARIABLE
    return saved
