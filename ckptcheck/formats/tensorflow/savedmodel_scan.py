"""What a SavedModel's graphs would do to the file system, the network or other processes, read from
``saved_model.pb`` without TensorFlow.

A SavedModel is a program. ``tf.saved_model.load`` (and ``keras.layers.TFSMLayer``) runs some of it at once: the
restore of its variables, each resource's ``_initialize`` / ``_create_resource`` function (lookup tables), the
restore functions of its saveable objects, the ``__saved_model_init_op`` signature, and a TF1 graph's
``saved_model_main_op`` / ``legacy_init_op``. The rest runs when a signature or function is called. Every function
is walked: the graph's nodes, the function library, and what each node calls (an op named after a library
function, or a function attribute: ``StatefulPartitionedCall``'s ``f``, ``If``'s branches, ``tf.data``'s map
functions...). Each op that touches files, the network or other processes is a finding that says what it does,
when it runs, and its path when the path is a constant.

Precision: Save/Restore/MergeV2Checkpoints under the SavedModel's own saver (the model's variables), reads of the
SavedModel's own assets (lookup tables, vocabularies), ``Assert``, ``PrintV2`` to stderr or the log, and an
in-memory ``CacheDataset`` are no findings. An op TensorFlow does not register (a custom op, such as TF Decision
Forests') is a note: its kernel is code in a library the user installs, which ckptcheck cannot see into.

Field numbers: tensorflow/core/protobuf/{saved_model,meta_graph,saver,saved_object_graph}.proto and
tensorflow/core/framework/{graph,node_def,function,attr_value,tensor,op_def}.proto.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from ckptcheck.errors import CorruptCheckpointError
from ckptcheck.formats.tensorflow.protobuf import DecodeError, iter_fields, read_varint
from ckptcheck.records import SafetyFinding

MAX_BYTES = 1 << 31  # protobuf's own limit on one message
INIT_OP_SIGNATURE = "__saved_model_init_op"
_LOAD_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "init_op", "table_initializer")
_LOAD_CHILDREN = ("_initialize", "_create_resource")
_ASSET_COLLECTIONS = ("asset_filepaths", "saved_model_assets")
_SAVE_RESTORE = frozenset({"Save", "SaveSlices", "SaveV2", "Restore", "RestoreSlice", "RestoreV2",
                           "MergeV2Checkpoints", "DTensorRestoreV2"})
_FORWARDING = frozenset({"Identity", "PlaceholderWithDefault", "Snapshot", "StopGradient", "Reshape", "ExpandDims",
                         "Squeeze"})  # ops whose input 0 carries the values through
_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
# tf.data ops whose function is applied to each element of their input dataset (input 0).
_ELEMENT_FUNCTIONS = frozenset({"FlatMapDataset", "InterleaveDataset", "ParallelInterleaveDataset",
                                "ParallelInterleaveDatasetV2", "ParallelInterleaveDatasetV3",
                                "ParallelInterleaveDatasetV4", "LegacyParallelInterleaveDatasetV2", "MapDataset",
                                "ParallelMapDataset", "ParallelMapDatasetV2"})
_ELEMENT_SOURCES = frozenset({"TensorSliceDataset", "TensorDataset"})
_READERS = frozenset({"WholeFileReader", "WholeFileReaderV2", "TFRecordReader", "TFRecordReaderV2", "TextLineReader",
                      "TextLineReaderV2", "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "LMDBReader"})
_SUMMARY_WRITES = frozenset({"WriteSummary", "WriteRawProtoSummary", "WriteScalarSummary", "WriteHistogramSummary",
                             "WriteImageSummary", "WriteAudioSummary", "WriteGraphSummary", "FlushSummaryWriter",
                             "ImportEvent", "StatsAggregatorSetSummaryWriter"})


@dataclass(frozen=True)
class _OpRule:
    does: str  # what the op does, said before the path
    input: int | None = None  # which input names the path
    attr: str | None = None  # or which attribute


# What touches the file system, the network or other processes, from TensorFlow's op registry
# (tensorflow/core/ops: io_ops, data_ops, experimental_dataset_ops, summary_ops, logging_ops, debug_ops,
# script_ops, lookup_ops, checkpoint_ops, rpc_ops, candidate_sampling_ops, ...).
OP_RULES: dict[str, _OpRule] = {
    "WriteFile": _OpRule("writes the file", 0),
    "ReadFile": _OpRule("reads the file", 0),
    "MatchingFiles": _OpRule("lists the files matching", 0),
    "Save": _OpRule("writes a checkpoint to", 0),
    "SaveSlices": _OpRule("writes a checkpoint to", 0),
    "SaveV2": _OpRule("writes a checkpoint to", 0),
    "Restore": _OpRule("reads a checkpoint from", 0),
    "RestoreSlice": _OpRule("reads a checkpoint from", 0),
    "RestoreV2": _OpRule("reads a checkpoint from", 0),
    "DTensorRestoreV2": _OpRule("reads a checkpoint from", 0),
    "MergeV2Checkpoints": _OpRule("merges and deletes checkpoint files into", 1),
    "InitializeTableFromTextFile": _OpRule("fills a lookup table from the file", 1),
    "InitializeTableFromTextFileV2": _OpRule("fills a lookup table from the file", 1),
    "GenerateVocabRemapping": _OpRule("reads the vocabulary file", 0),
    "LoadAndRemapMatrix": _OpRule("reads the checkpoint", 0),
    "CreateSummaryFileWriter": _OpRule("opens a summary writer writing to the directory", 1),
    "CreateSummaryDbWriter": _OpRule("opens the summary database", 1),
    "TFRecordDataset": _OpRule("reads the TFRecord files", 0),
    "TFRecordDatasetV2": _OpRule("reads the TFRecord files", 0),
    "TextLineDataset": _OpRule("reads the text files", 0),
    "FixedLengthRecordDataset": _OpRule("reads the files", 0),
    "FixedLengthRecordDatasetV2": _OpRule("reads the files", 0),
    "CSVDataset": _OpRule("reads the CSV files", 0),
    "CSVDatasetV2": _OpRule("reads the CSV files", 0),
    "ExperimentalCSVDataset": _OpRule("reads the CSV files", 0),
    "LMDBDataset": _OpRule("reads the LMDB files", 0),
    "ExperimentalLMDBDataset": _OpRule("reads the LMDB files", 0),
    "SqlDataset": _OpRule("queries the SQL database", 1),
    "ExperimentalSqlDataset": _OpRule("queries the SQL database", 1),
    "MatchingFilesDataset": _OpRule("lists the files matching", 0),
    "ExperimentalMatchingFilesDataset": _OpRule("lists the files matching", 0),
    "DatasetToTFRecord": _OpRule("writes the TFRecord file", 1),
    "ExperimentalDatasetToTFRecord": _OpRule("writes the TFRecord file", 1),
    "SaveDataset": _OpRule("writes a dataset to", 1),
    "SaveDatasetV2": _OpRule("writes a dataset to", 1),
    "DistributedSave": _OpRule("writes a dataset snapshot to", 1),
    "LoadDataset": _OpRule("reads a saved dataset from", 0),
    "SnapshotDataset": _OpRule("writes and reads a dataset snapshot at", 1),
    "SnapshotDatasetV2": _OpRule("writes and reads a dataset snapshot at", 1),
    "SnapshotDatasetReader": _OpRule("reads a dataset snapshot from", 0),
    "SnapshotChunkDataset": _OpRule("reads a dataset snapshot chunk from", 0),
    "ListSnapshotChunksDataset": _OpRule("lists dataset snapshot chunks at", 0),
    "CacheDataset": _OpRule("caches the dataset in files at", 1),
    "CacheDatasetV2": _OpRule("caches the dataset in files at", 1),
    "DataServiceDataset": _OpRule("reads from a tf.data service over the network at", 2),
    "DataServiceDatasetV2": _OpRule("reads from a tf.data service over the network at", 2),
    "DataServiceDatasetV3": _OpRule("reads from a tf.data service over the network at", 2),
    "DataServiceDatasetV4": _OpRule("reads from a tf.data service over the network at", 2),
    "RecordInput": _OpRule("reads the files matching", attr="file_pattern"),
    "ImmutableConst": _OpRule("maps into memory the file", attr="memory_region_name"),
    "Skipgram": _OpRule("reads the text file", attr="filename"),
    "FixedUnigramCandidateSampler": _OpRule("reads the vocabulary file", attr="vocab_file"),
    "DecodeProtoV2": _OpRule("reads protobuf descriptors from", attr="descriptor_source"),
    "EncodeProto": _OpRule("reads protobuf descriptors from", attr="descriptor_source"),
    "DumpTensor": _OpRule("writes tensor dumps to the directory", attr="log_dir"),
    "CalibrationStatisticsSaver": _OpRule("writes statistics to the file", attr="output_file_path"),
    "FileSystemSetConfiguration": _OpRule("changes the configuration of a file system"),
    "PrintV2": _OpRule("appends its output to", attr="output_stream"),
    "DebugIdentity": _OpRule("dumps tensors to", attr="debug_urls"),
    "DebugIdentityV2": _OpRule("dumps tensors to", attr="debug_urls"),
    "DebugIdentityV3": _OpRule("dumps tensors to", attr="debug_urls"),
    "DebugNanCount": _OpRule("dumps tensors to", attr="debug_urls"),
    "DebugNumericSummary": _OpRule("dumps tensors to", attr="debug_urls"),
    "Copy": _OpRule("dumps tensors as", attr="debug_ops_spec"),
    "CopyHost": _OpRule("dumps tensors as", attr="debug_ops_spec"),
    "PyFunc": _OpRule("calls a Python function registered in the process that saved the model, under the token",
                      attr="token"),
    "PyFuncStateless": _OpRule("calls a Python function registered in the process that saved the model, under "
                               "the token", attr="token"),
    "EagerPyFunc": _OpRule("calls a Python function registered in the process that saved the model, under the "
                           "token", attr="token"),
    "RpcClient": _OpRule("connects over the network to", 0),
    "RpcServer": _OpRule("serves RPCs over the network at", 0),
    "RpcServerStart": _OpRule("starts an RPC server"),
    "RpcServerRegister": _OpRule("registers a function with an RPC server"),
    "RpcCall": _OpRule("makes a remote procedure call"),
    **{op: _OpRule("reads the files a queue names") for op in _READERS},
    **{op: _OpRule("writes to a summary writer") for op in _SUMMARY_WRITES},
}
_ATTR_ONLY_WHEN_SET = frozenset({"FixedUnigramCandidateSampler", "DecodeProtoV2", "EncodeProto", "DebugIdentity",
                                 "DebugIdentityV2", "DebugIdentityV3", "DebugNanCount", "DebugNumericSummary",
                                 "Copy", "CopyHost", "DumpTensor", "CalibrationStatisticsSaver"})


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[str]
    raw_attrs: list[bytes]  # NodeDef.attr map entries, undecoded
    _attrs: dict[str, bytes] | None = None

    @property
    def attrs(self) -> dict[str, bytes]:
        if self._attrs is None:
            self._attrs = dict(_map_entry(entry) for entry in self.raw_attrs)
        return self._attrs


@dataclass
class _Scope:
    """A graph or a library function: its nodes by name, and the functions its nodes call."""

    name: str  # "graph" or the function's name
    nodes: list[_Node] = field(default_factory=list)
    by_name: dict[str, _Node] = field(default_factory=dict)
    calls: dict[str, set[str]] = field(default_factory=dict)  # node name -> library functions it calls
    args: list[str] = field(default_factory=list)  # a function's input arguments, in order
    # Arguments bound at load to an object of the SavedModel: ("asset", "") or ("constant", the string value).
    bound: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class _MetaGraph:
    graph: _Scope
    functions: dict[str, _Scope]
    saver_ops: list[str]  # node names of the saver's restore and save ops
    restore_ops: list[str]  # the restore op alone: run at load
    load_nodes: list[str]  # graph nodes (or tensor names) run at load
    load_functions: list[str]
    saver_functions: list[str]
    signatures: dict[str, list[str]]  # signature -> graph nodes of its outputs
    asset_tensors: set[str]
    tags: str
    callers: dict[str, list[tuple[_Scope, _Node]]] = field(default_factory=dict)  # function -> nodes calling it


def scan_saved_model(pb_path: str, data: bytes, *, known_ops: Iterable[str] | None = None,
                     meta_graph_only: bool = False) -> tuple[list[SafetyFinding], list[str]]:
    """Findings and notes for the bytes of ``saved_model.pb`` (``pb_path`` names it in errors), or with
    ``meta_graph_only`` of a TF1 checkpoint's ``.meta`` (one MetaGraphDef, which ``import_meta_graph`` loads)."""
    if known_ops is None:
        from ckptcheck.formats.tensorflow.op_names import OP_NAMES

        known_ops = OP_NAMES
    known = known_ops if isinstance(known_ops, (set, frozenset)) else frozenset(known_ops)
    try:
        if meta_graph_only:
            metas = [_meta_graph(bytes(data))]
        else:
            metas = [_meta_graph(v) for n, _w, v in iter_fields(bytes(data)) if n == 2 and not isinstance(v, int)]
    except (DecodeError, UnicodeDecodeError, IndexError, ValueError) as exc:
        what = "a MetaGraphDef" if meta_graph_only else "a SavedModel protobuf"
        raise CorruptCheckpointError(f"not {what} ({exc})", path=pb_path) from None
    findings: list[SafetyFinding] = []
    notes: list[str] = []
    for i, meta in enumerate(metas):
        label = f"meta graph {i}: " if len(metas) > 1 else ""
        f, n = _scan_meta(meta, known, label)
        findings += f
        notes += n
    return findings, notes


# --- decoding ---------------------------------------------------------------------------------------------------


def _str(v: int | bytes) -> str:
    if isinstance(v, int):
        raise DecodeError("a string field has the wrong wire type")
    return v.decode("utf-8", "backslashreplace")


def _view(v: int | bytes) -> bytes:
    if isinstance(v, int):
        raise DecodeError("a message field has the wrong wire type")
    return v


def _map_entry(v: int | bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for n, _w, x in iter_fields(_view(v)):
        if n == 1:
            key = _str(x)
        elif n == 2:
            value = _view(x)
    return key, value


def _length(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A varint at ``pos`` (the common one-byte case inline)."""
    if pos < end and buf[pos] < 0x80:
        return buf[pos], pos + 1
    return read_varint(buf, pos, end)


def _node(buf: bytes) -> _Node:
    """A NodeDef: name (1), op (2), input (3), and its attr entries (5) kept raw, decoded when asked for.

    Hand-decoded in one pass: a SavedModel has tens of thousands of nodes, each with several attributes, and
    decoding every attribute through the generic decoder took most of a scan's time."""
    name = op = ""
    inputs: list[str] = []
    raw: list[bytes] = []
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _length(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, pos = _length(buf, pos, end)
            if pos + size > end:
                raise DecodeError("a NodeDef field runs past its end")
            value = buf[pos : pos + size]
            pos += size
            if number == 1:
                name = value.decode("utf-8", "backslashreplace")
            elif number == 2:
                op = value.decode("utf-8", "backslashreplace")
            elif number == 3:
                inputs.append(value.decode("utf-8", "backslashreplace"))
            elif number == 5:
                raw.append(value)
        elif wire == 0:
            _value, pos = read_varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire}")
    return _Node(name, op, inputs, raw)


def _may_name_function(entry: bytes) -> bool:
    """Whether an attr map entry's AttrValue is a ``func`` (tag 0x52) or a ``list`` of funcs (0x0a, then 0x4a)."""
    end = len(entry)
    if not end or entry[0] != 0x0A:
        return True  # not in the usual order: let the full decoder decide
    size, pos = _length(entry, 1, end)
    pos += size
    if pos >= end or entry[pos] != 0x12:
        return True
    _size, pos = _length(entry, pos + 1, end)
    if pos >= end:
        return False
    if entry[pos] == 0x52:
        return True
    if entry[pos] != 0x0A:
        return False
    # A ListValue holds one kind: its first field says which (func is 9, tag 0x4a; shapes, types... are not).
    size, pos = _length(entry, pos + 1, end)
    return size > 0 and pos < end and entry[pos] == 0x4A


def _attr_functions(attr: bytes) -> list[str]:
    """Function names an AttrValue holds: ``func`` (10, a NameAttrList) or ``list.func`` (1 -> 9)."""
    out = []
    for n, _w, v in iter_fields(attr):
        if n == 10:
            out += [_str(x) for m, _w2, x in iter_fields(_view(v)) if m == 1]
        elif n == 1:
            for m, _w2, x in iter_fields(_view(v)):
                if m == 9:
                    out += [_str(y) for k, _w3, y in iter_fields(_view(x)) if k == 1]
    return out


def _attr_strings(attr: bytes) -> list[str]:
    """An AttrValue's string(s): ``s`` (2) or ``list.s`` (1 -> 2)."""
    out = []
    for n, _w, v in iter_fields(attr):
        if n == 2:
            out.append(_str(v))
        elif n == 1:
            out += [_str(x) for m, _w2, x in iter_fields(_view(v)) if m == 2]
    return out


def _const_strings(node: _Node) -> list[str] | None:
    """A ``Const`` node's string values (TensorProto.string_val, 8), or None when it holds none."""
    value = node.attrs.get("value")
    if value is None:
        return None
    for n, _w, v in iter_fields(value):
        if n == 8:  # AttrValue.tensor
            strings = [_str(x) for m, _w2, x in iter_fields(_view(v)) if m == 8]
            return strings or None
    return None


def _scope(name: str, nodes: Iterable[bytes]) -> _Scope:
    scope = _Scope(name)
    for buf in nodes:
        node = _node(buf)
        scope.nodes.append(node)
        scope.by_name[node.name] = node
    return scope


def _link_calls(scope: _Scope, library: set[str]) -> None:
    for node in scope.nodes:
        called = {node.op} if node.op in library else set()
        if any(_may_name_function(entry) for entry in node.raw_attrs):
            for attr in node.attrs.values():
                if attr and attr[0] in (0x52, 0x0A):  # a func, or a list that may hold funcs
                    called.update(f for f in _attr_functions(attr) if f in library)
        if called:
            scope.calls[node.name] = called


def _meta_graph(buf: bytes) -> _MetaGraph:
    graph_nodes: list[bytes] = []
    function_defs: list[bytes] = []
    saver_ops: list[str] = []
    restore_ops: list[str] = []
    load_nodes: list[str] = []
    signatures: dict[str, list[str]] = {}
    asset_tensors: set[str] = set()
    object_graph: bytes | None = None
    tags: list[str] = []
    for n, _w, v in iter_fields(buf):
        if n == 1:  # meta_info_def: tags (4)
            tags += [_str(x) for m, _w2, x in iter_fields(_view(v)) if m == 4]
        elif n == 2:  # graph_def
            for m, _w2, x in iter_fields(_view(v)):
                if m == 1:
                    graph_nodes.append(_view(x))
                elif m == 2:  # library: function (1)
                    function_defs += [_view(y) for k, _w3, y in iter_fields(_view(x)) if k == 1]
        elif n == 3:  # saver_def: save_tensor_name (2), restore_op_name (3)
            for m, _w2, x in iter_fields(_view(v)):
                if m in (2, 3):
                    saver_ops.append(_str(x))
                if m == 3:
                    restore_ops.append(_str(x))
        elif n == 4:  # collection_def
            key, value = _map_entry(v)
            if key in _LOAD_COLLECTIONS:
                for m, _w2, x in iter_fields(value):
                    if m == 1:  # node_list: value (1)
                        load_nodes += [_str(y) for k, _w3, y in iter_fields(_view(x)) if k == 1]
            elif key in _ASSET_COLLECTIONS:  # TF1 writers list their assets here, not in asset_file_def
                asset_tensors.update(_collection_assets(value))
        elif n == 5:  # signature_def
            key, value = _map_entry(v)
            signatures[key] = [_tensor_name(t) for t in _signature_tensors(value)]
        elif n == 6:  # asset_file_def: tensor_info (1) -> name (1)
            for m, _w2, x in iter_fields(_view(v)):
                if m == 1:
                    asset_tensors.update(_str(y) for k, _w3, y in iter_fields(_view(x)) if k == 1)
        elif n == 7:
            object_graph = _view(v)
    functions: dict[str, _Scope] = {}
    for fdef in function_defs:
        fname = ""
        nodes = []
        args: list[str] = []
        for m, _w2, x in iter_fields(fdef):
            if m == 1:  # signature: OpDef name (1), input_arg (2) -> ArgDef name (1)
                for k, _w3, y in iter_fields(_view(x)):
                    if k == 1:
                        fname = _str(y)
                    elif k == 2:
                        args += [_str(z) for j, _w4, z in iter_fields(_view(y)) if j == 1]
            elif m == 3:
                nodes.append(_view(x))
        functions[fname] = _scope(fname, nodes)
        functions[fname].args = args
    graph = _scope("graph", graph_nodes)
    library = set(functions)
    _link_calls(graph, library)
    for scope in functions.values():
        _link_calls(scope, library)
    load_functions, saver_functions = _object_graph_functions(object_graph) if object_graph is not None else ([], [])
    if object_graph is not None:
        _bind_captures(object_graph, functions, graph)
    load_nodes += signatures.get(INIT_OP_SIGNATURE, [])
    callers: dict[str, list[tuple[_Scope, _Node]]] = {}
    for scope in (graph, *functions.values()):
        for node_name, called in scope.calls.items():
            for fn in called:
                callers.setdefault(fn, []).append((scope, scope.by_name[node_name]))
    return _MetaGraph(graph, functions, saver_ops, restore_ops, load_nodes, load_functions, saver_functions, signatures,
                      {_tensor_name(t) for t in asset_tensors}, ",".join(tags), callers)


def _collection_assets(collection: bytes) -> list[str]:
    """Asset tensor names of a TF1 collection: ``asset_filepaths`` is a node_list (1: value, 1); ``saved_model_assets``
    an any_list (5: value, 1) of Any{value (2): AssetFileDef{tensor_info (1): TensorInfo{name (1)}}}."""
    out = []
    for m, _w, x in iter_fields(collection):
        if m == 1:
            out += [_str(y) for k, _w2, y in iter_fields(_view(x)) if k == 1]
        elif m == 5:
            for k, _w2, y in iter_fields(_view(x)):
                if k != 1:
                    continue
                for j, _w3, z in iter_fields(_view(y)):  # Any
                    if j == 2:
                        for i, _w4, a in iter_fields(_view(z)):  # AssetFileDef
                            if i == 1:
                                out += [_str(b) for h, _w5, b in iter_fields(_view(a)) if h == 1]
    return out


def _signature_tensors(sig: bytes) -> list[str]:
    """Tensor names of a SignatureDef's inputs (1) and outputs (2): map<string, TensorInfo{name (1)}>."""
    out = []
    for n, _w, v in iter_fields(sig):
        if n in (1, 2):
            _key, info = _map_entry(v)
            out += [_str(x) for m, _w2, x in iter_fields(info) if m == 1]
    return out


def _tensor_name(name: str) -> str:
    """The node a tensor name ("x:0", "^x", "x:output:0") comes from."""
    return name.lstrip("^").split(":", 1)[0]


def _object_graph_functions(buf: bytes) -> tuple[list[str], list[str]]:
    """Concrete functions tf.saved_model.load runs: each resource's _initialize/_create_resource, and the
    restore functions of saveable objects (the latter also count as the saver's own)."""
    objects: list[list[tuple[int, int, int | bytes]]] = [
        iter_fields(_view(v)) for n, _w, v in iter_fields(buf) if n == 1
    ]

    def functions_of(node_id: int) -> list[str]:
        if not 0 <= node_id < len(objects):
            return []
        out = []
        for n, _w, v in objects[node_id]:
            # SavedFunction: concrete_functions (1); SavedBareConcreteFunction: concrete_function_name (1)
            if n in (6, 8):
                out += [_str(x) for m, _w2, x in iter_fields(_view(v)) if m == 1]
        return out

    load: list[str] = []
    saver: list[str] = []
    for fields in objects:
        for n, _w, v in fields:
            if n == 1:  # children: ObjectReference {node_id (1), local_name (2)}
                ref = {m: x for m, _w2, x in iter_fields(_view(v))}
                local, target = ref.get(2), ref.get(1)
                if local is not None and isinstance(target, int) and _str(local) in _LOAD_CHILDREN:
                    load += functions_of(target)
            elif n == 11:  # saveable_objects: map<string, SaveableObject{save_function (2), restore_function (3)}>
                _key, value = _map_entry(v)
                for m, _w2, x in iter_fields(value):
                    if m == 3 and isinstance(x, int):
                        load += functions_of(x)
                        saver += functions_of(x)
                    elif m == 2 and isinstance(x, int):
                        saver += functions_of(x)
    return load, saver


def _bind_captures(buf: bytes, functions: dict[str, _Scope], graph: _Scope) -> None:
    """Which arguments of each concrete function are bound at load to one of the SavedModel's assets or constants:
    SavedObjectGraph.concrete_functions (2) maps a function to SavedConcreteFunction.bound_inputs (2, node ids),
    the captures that fill the function's last arguments. An asset node (SavedObject.asset, 5) is a file inside the
    SavedModel; a constant (SavedObject.constant, 9 -> operation, 1) names a Const node of the graph."""
    kinds: list[tuple[str, str]] = []
    for n, _w, v in iter_fields(buf):
        if n != 1:
            continue
        kind = ("", "")
        for m, _w2, x in iter_fields(_view(v)):
            if m == 5:
                kind = ("asset", "")
            elif m == 9:
                op = next((_str(y) for k, _w3, y in iter_fields(_view(x)) if k == 1), "")
                strings = _const_strings(graph.by_name[op]) if op in graph.by_name else None
                if strings is not None:
                    kind = ("constant", ", ".join(strings[:3]))
        kinds.append(kind)
    for n, _w, v in iter_fields(buf):
        if n != 2:
            continue
        name, value = _map_entry(v)
        scope = functions.get(name)
        if scope is None:
            continue
        bound: list[int] = []
        for m, w, x in iter_fields(value):
            if m == 2 and isinstance(x, int):
                bound.append(x)
            elif m == 2 and w == 2:  # packed
                pos = 0
                while pos < len(x):  # type: ignore[arg-type]
                    item, pos = read_varint(x, pos)  # type: ignore[arg-type]
                    bound.append(item)
        if not bound or len(bound) > len(scope.args):
            continue
        for arg, node_id in zip(scope.args[len(scope.args) - len(bound):], bound, strict=True):
            if 0 <= node_id < len(kinds) and kinds[node_id][0]:
                scope.bound[arg] = kinds[node_id]


# --- reachability and the findings ------------------------------------------------------------------------------


def _graph_closure(graph: _Scope, starts: Iterable[str]) -> set[str]:
    """Graph nodes the named nodes depend on (their inputs and control inputs, transitively), themselves included."""
    seen: set[str] = set()
    queue = deque(_tensor_name(s) for s in starts)
    while queue:
        name = queue.popleft()
        if name in seen or name not in graph.by_name:
            continue
        seen.add(name)
        queue.extend(_tensor_name(i) for i in graph.by_name[name].inputs)
    return seen


def _function_closure(meta: _MetaGraph, functions: Iterable[str], graph_nodes: Iterable[str] = ()) -> set[str]:
    """Library functions reached from the given functions and graph nodes."""
    seen: set[str] = set()
    queue = deque(functions)
    for node in graph_nodes:
        queue.extend(meta.graph.calls.get(node, ()))
    while queue:
        name = queue.popleft()
        if name in seen or name not in meta.functions:
            continue
        seen.add(name)
        for called in meta.functions[name].calls.values():
            queue.extend(called)
    return seen


def _scan_meta(meta: _MetaGraph, known: frozenset[str] | set[str], label: str
               ) -> tuple[list[SafetyFinding], list[str]]:
    saver_nodes = _graph_closure(meta.graph, meta.saver_ops)
    load_nodes = _graph_closure(meta.graph, [*meta.load_nodes, *meta.restore_ops])
    saver_fns = _function_closure(meta, meta.saver_functions, saver_nodes)
    load_fns = _function_closure(meta, meta.load_functions, load_nodes) | saver_fns
    signature_of: dict[str, str] = {}  # function -> a signature that reaches it (for the message)
    for sig, outputs in meta.signatures.items():
        if sig == INIT_OP_SIGNATURE:
            continue
        for fn in _function_closure(meta, (), _graph_closure(meta.graph, outputs)):
            signature_of.setdefault(fn, sig)
    grouped: dict[tuple[str, str, str], list[str]] = {}
    unknown: dict[str, list[str]] = {}
    library = set(meta.functions)
    scopes = [(meta.graph, None), *((s, s.name) for s in meta.functions.values())]
    for scope, fname in scopes:
        for node in scope.nodes:
            op = node.op
            if op in library:
                continue
            rule = OP_RULES.get(op)
            if rule is None:
                if op not in known and op:
                    unknown.setdefault(op, []).append(f"{fname or 'graph'}/{node.name}")
                continue
            if fname is None:
                when = "load" if node.name in load_nodes else "call"
                own = node.name in saver_nodes
            else:
                when = "load" if fname in load_fns else "call"
                own = fname in saver_fns
            what = _finding(meta, scope, node, rule, own)
            if what is None:
                continue
            where = fname or "graph"
            if when == "call" and fname in signature_of:
                where += f" (signature {signature_of[fname]})"
            elif when == "call" and fname is None:
                sigs = [s for s, outs in meta.signatures.items()
                        if node.name in _graph_closure(meta.graph, outs)] if len(meta.graph.nodes) < 5000 else []
                if sigs:
                    where += f" (signature {sigs[0]})"
            grouped.setdefault((what, when, op), []).append(f"{label}{where}/{node.name}")
    findings = []
    for (what, when, op), places in grouped.items():
        more = f" (and {len(places) - 1} more place(s))" if len(places) > 1 else ""
        run = "at load (tf.saved_model.load, TFSMLayer)" if when == "load" else "when called"
        findings.append(SafetyFinding(places[0], f"{op} {what}, {run}{more}", "tf-op", when=when))
    for op, places in unknown.items():
        findings.append(SafetyFinding(
            f"{label}{places[0]}",
            f"op '{op}' is not registered by TensorFlow itself ({len(places)} node(s)): a custom op, whose kernel is "
            "code in a library the user loads; the scan cannot see into it",
            "tf-custom-op", severity="note", when="call"))
    return findings, []


def _finding(meta: _MetaGraph, scope: _Scope, node: _Node, rule: _OpRule, own: bool) -> str | None:
    """What the op does, with its path, or None when it is part of the SavedModel's ordinary working."""
    op = node.op
    if op in _SAVE_RESTORE and own:
        return None
    if rule.attr is not None:
        value = node.attrs.get(rule.attr)
        strings = _attr_strings(value) if value is not None else []
        if op == "PrintV2":
            stream = strings[0] if strings else "stderr"
            if not stream.startswith("file://"):
                return None
            return f"{rule.does} '{stream[len('file://'):]}'"
        if op in ("DecodeProtoV2", "EncodeProto") and (not strings or strings[0] in ("", "local://")):
            return None
        if op in _ATTR_ONLY_WHEN_SET and not any(strings):
            return None
        shown = ", ".join(f"'{s}'" for s in strings[:3] if s)
        return f"{rule.does} {shown}" if shown else rule.does
    if rule.input is None:
        return rule.does
    path, origin = _path_input(meta, scope, node, rule.input)
    if origin == "asset":
        return None  # the SavedModel's own asset (a vocabulary, a lookup table's file)
    if op in ("InitializeTableFromTextFile", "InitializeTableFromTextFileV2") and origin == "argument":
        return None  # a table initializer's file arrives as an argument: the captured asset
    if op in ("CacheDataset", "CacheDatasetV2") and origin == "constant" and path == "":
        return None  # an in-memory cache
    if origin == "constant":
        return f"{rule.does} '{path}'"
    return f"{rule.does} named by {'its input' if origin == 'argument' else 'a computed value'}"


def _path_input(meta: _MetaGraph, scope: _Scope, node: _Node, index: int, depth: int = 0) -> tuple[str, str]:
    """(path, origin) of a node's path input: origin "constant", "asset", "argument" (a function's argument or
    a placeholder) or "computed". A function's argument is followed to what its callers pass (a call's input, or
    the elements of the dataset a tf.data function maps over), a few calls deep."""
    if index >= len(node.inputs):
        return "", "computed"
    name = node.inputs[index]
    for _hop in range(8):
        if scope.name == "graph" and _tensor_name(name) in meta.asset_tensors:
            return "", "asset"
        source = scope.by_name.get(_tensor_name(name))
        if source is None:
            kind, value = scope.bound.get(_tensor_name(name), ("", ""))
            if kind:
                return value, kind
            passed = _from_callers(meta, scope, _tensor_name(name), depth) if depth < 4 else None
            return passed if passed is not None else ("", "argument")
        if source.op == "Const":
            strings = _const_strings(source)
            if strings is None:
                return "", "computed"
            return ", ".join(strings[:3]), "constant"
        if source.op in ("Placeholder", "_Arg"):
            return "", "argument"
        if source.op in _FORWARDING and source.inputs:
            name = source.inputs[0]
            continue
        return "", "computed"
    return "", "computed"


def _from_callers(meta: _MetaGraph, scope: _Scope, arg: str, depth: int) -> tuple[str, str] | None:
    """What the callers of function ``scope`` pass as its argument ``arg``: the constant paths (joined), the
    SavedModel's asset, or None when no caller passes something known."""
    constants: list[str] = []
    asset = False
    for caller_scope, caller in meta.callers.get(scope.name, [])[:16]:
        if caller.op in _ELEMENT_FUNCTIONS and caller.inputs:
            source = caller_scope.by_name.get(_tensor_name(caller.inputs[0]))
            if source is None or source.op not in _ELEMENT_SOURCES:
                continue
            path, origin = _path_input(meta, caller_scope, source, 0, depth + 1)
        elif (caller.op in _CALLS or caller.op == scope.name) and arg in scope.args:
            path, origin = _path_input(meta, caller_scope, caller, scope.args.index(arg), depth + 1)
        else:
            continue
        if origin == "constant":
            constants.append(path)
        asset |= origin == "asset"
    if constants:
        return ", ".join(dict.fromkeys(constants)), "constant"
    return ("", "asset") if asset else None
