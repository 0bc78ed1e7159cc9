"""Build a small model of Dense layers with chosen initializers, train it a few steps, save it in one format.

The same builders serve `roundtrip`, which rebuilds the model with other initializers and restores into it.
TensorFlow and Keras are imported inside the functions that use them: importing this module costs nothing.

Determinism: every seed is set (Python, NumPy and TensorFlow's global seed through
`keras.utils.set_random_seed`, the TF1 graph seed, one seed per initializer, the training data), TF1 sessions
run on one thread, and Keras trains without XLA. `tf.config.experimental.enable_op_determinism()` is not
called: it is process-wide and irreversible, and makes every unseeded random op in the host program raise —
too much for a library call to impose on its caller. The CPU kernels a tiny Dense model runs are deterministic
without it, and tests/test_fixtures.py checks that the bits do not move.
"""

from __future__ import annotations

import contextlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ckptcheck.compare import same_bits
from ckptcheck.errors import UsageError
from ckptcheck.lab.gate import import_keras, import_tensorflow
from ckptcheck.lab.initializers import InitPlan
from ckptcheck.lab.reports import GenerateOptions, GenerateReport, WrittenFile
from ckptcheck.records import KERAS, KERAS_H5, KERAS_WEIGHTS, TF1, TF2, TensorInfo

GENERATE_FORMATS = (TF1, TF2, KERAS, KERAS_WEIGHTS, KERAS_H5)
OPTIMIZERS = ("sgd", "adam")
KERAS_SUFFIX = {KERAS: ".keras", KERAS_WEIGHTS: ".weights.h5", KERAS_H5: ".h5"}
TF1_PREFIX = "model.ckpt"  # what Estimator named its checkpoints: model.ckpt-<global step>
TF2_PREFIX = "ckpt"  # tf.train.Checkpoint.save appends -<save counter>
STATE_FILE = "checkpoint"
MAX_SEED = 2**31 // 1000 - 1  # variable seeds (seed * 1000 + ...) stay within int32

StepCallback = Callable[[int, float], None]  # (step number from 1, loss before that step's update)


# --- TensorFlow and Keras, imported on demand -------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """Keras logs a warning through absl for every legacy .h5 save; the report says what was written."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- options ----------------------------------------------------------------------------------------------------


def parse_layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--layers {text!r}: expected units per layer, like 64,10") from None
    if not layers or any(u <= 0 for u in layers):
        raise UsageError(f"--layers {text!r}: every layer needs at least one unit")
    return layers


def check_options(options: GenerateOptions) -> None:
    if options.format not in GENERATE_FORMATS:
        raise UsageError(f"cannot generate format {options.format!r}",
                         hint=f"choose one of {', '.join(GENERATE_FORMATS)}")
    if options.optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {options.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
    if not options.layers or any(u <= 0 for u in options.layers):
        raise UsageError("every layer needs at least one unit")
    if options.inputs <= 0 or options.batch_size <= 0:
        raise UsageError("--inputs must be at least 1")
    if options.train_steps < 0:
        raise UsageError("--train-steps cannot be negative")
    if not options.learning_rate > 0:
        raise UsageError("--learning-rate must be positive")
    if not 0 <= options.seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED}")


def layer_name(index: int) -> str:
    """Keras's own default names, fixed so every build (and every format) names its variables alike."""
    return "dense" if index == 0 else f"dense_{index}"


def variable_seed(seed: int, layer: int, role: str) -> int:
    """A distinct, non-zero seed per variable: layers of one shape must not draw the same values (and TF1 reads
    an op seed of 0 as "no seed")."""
    return seed * 1000 + 2 * layer + (role == "bias") + 1


def training_data(options: GenerateOptions) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(options.seed)
    x = rng.standard_normal((options.batch_size, options.inputs), dtype=np.float32)
    y = rng.standard_normal((options.batch_size, options.layers[-1]), dtype=np.float32)
    return x, y


def target_path(fmt: str, out: str) -> str:
    """Bundles go into the directory OUT; a Keras file is OUT itself when it has the right suffix."""
    if fmt in KERAS_SUFFIX:
        suffix = KERAS_SUFFIX[fmt]
        if out.endswith(suffix) and not (fmt == KERAS_H5 and out.endswith(".weights.h5")):
            return out
        return os.path.join(out, "model" + suffix)
    return out


# --- one builder per format -------------------------------------------------------------------------------------


class BuiltModel(ABC):
    """A freshly built model: train it, save it, or restore a checkpoint into it."""

    restore_method: str

    def __init__(self, options: GenerateOptions, plan: InitPlan, seed: int) -> None:
        self.options = options
        self.plan = plan
        self.seed = seed

    @abstractmethod
    def train(self, x: np.ndarray, y: np.ndarray, steps: int, on_step: StepCallback | None) -> list[float]:
        """Run `steps` optimizer steps on one batch; the loss before each update."""

    @abstractmethod
    def save(self, target: str) -> str:
        """Write the checkpoint; returns its location (a bundle prefix or the Keras file)."""

    def snapshot(self, target: str) -> str:
        """Save the current values the way `save` does, without advancing any save counter."""
        return self.save(target)

    @abstractmethod
    def restore(self, location: str) -> tuple[str, ...]:
        """Restore the checkpoint at `location`; notes on anything the plain restore call did not do."""

    def close(self) -> None:  # noqa: B027 - only graph-mode models hold a session
        pass


def _restore_error(location: str, exc: BaseException) -> UsageError:
    text = str(exc)
    if "Original error:" in text:  # TF1 Saver wraps the useful line in a paragraph of generic advice
        text = text.split("Original error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if any(w in line for w in ("not found", "shape", "mismatch", "Key "))]
    first = (telling or lines or [type(exc).__name__])[0]
    return UsageError(f"the checkpoint does not fit a model built with these options: {first[:300]}",
                      path=location,
                      hint="pass the --layers, --inputs and --optimizer it was generated with")


class TF1Model(BuiltModel):
    """Estimator-style graph mode: get_variable with initializers, optimizer.minimize with a global step, Saver."""

    restore_method = "tf.compat.v1.train.Saver.restore"

    def __init__(self, options: GenerateOptions, plan: InitPlan, seed: int) -> None:
        super().__init__(options, plan, seed)
        tf = import_tensorflow()
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(seed)
            self.x = v1.placeholder(tf.float32, [None, options.inputs], name="features")
            self.y = v1.placeholder(tf.float32, [None, options.layers[-1]], name="labels")
            global_step = v1.train.get_or_create_global_step()
            h, fan_in = self.x, options.inputs
            for i, units in enumerate(options.layers):
                with v1.variable_scope(layer_name(i)):
                    kernel = v1.get_variable("kernel", [fan_in, units], dtype=tf.float32,
                                             initializer=plan.kernel.tf1(variable_seed(seed, i, "kernel")))
                    bias = v1.get_variable("bias", [units], dtype=tf.float32,
                                           initializer=plan.bias.tf1(variable_seed(seed, i, "bias")))
                    h = tf.nn.bias_add(tf.matmul(h, kernel), bias)
                    if i < len(options.layers) - 1:
                        h = tf.nn.relu(h)
                fan_in = units
            self.loss = v1.losses.mean_squared_error(self.y, h)
            if options.optimizer == "adam":
                optimizer = v1.train.AdamOptimizer(options.learning_rate)
            else:
                optimizer = v1.train.GradientDescentOptimizer(options.learning_rate)
            self.train_op = optimizer.minimize(self.loss, global_step=global_step)
            self.global_step = global_step
            # Relative paths in the `checkpoint` state file, so a model_dir can be moved (and committed).
            self.saver = v1.train.Saver(max_to_keep=1, save_relative_paths=True)
            init = v1.global_variables_initializer()
        config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        self.session = v1.Session(graph=self.graph, config=config)
        self.session.run(init)

    def train(self, x: np.ndarray, y: np.ndarray, steps: int, on_step: StepCallback | None) -> list[float]:
        losses = []
        for step in range(1, steps + 1):
            _, loss = self.session.run([self.train_op, self.loss], {self.x: x, self.y: y})
            losses.append(float(loss))
            if on_step:
                on_step(step, float(loss))
        return losses

    def save(self, target: str) -> str:
        os.makedirs(target, exist_ok=True)
        # Forget earlier saves: the state file names only this one, and nothing saved elsewhere is deleted.
        self.saver.set_last_checkpoints_with_time([])
        with self.graph.as_default():
            return str(self.saver.save(self.session, os.path.join(target, TF1_PREFIX), global_step=self.global_step))

    def restore(self, location: str) -> tuple[str, ...]:
        tf = import_tensorflow()
        try:
            with self.graph.as_default():
                self.saver.restore(self.session, location)
        except (tf.errors.OpError, ValueError) as exc:
            raise _restore_error(location, exc) from None
        return ()

    def close(self) -> None:
        self.session.close()


class TF2Model(BuiltModel):
    """tf.Variables in a tf.Module, a tf.keras optimizer, and tf.train.Checkpoint(model, optimizer, step)."""

    restore_method = "tf.train.Checkpoint.restore"

    def __init__(self, options: GenerateOptions, plan: InitPlan, seed: int) -> None:
        super().__init__(options, plan, seed)
        tf = import_tensorflow()
        import_keras().utils.set_random_seed(seed)

        class Dense(tf.Module):  # type: ignore[misc, name-defined]
            def __init__(self, index: int, fan_in: int, units: int, relu: bool) -> None:
                super().__init__(name=layer_name(index))
                shape = (fan_in, units)
                self.kernel = tf.Variable(plan.kernel.keras(variable_seed(seed, index, "kernel"))(shape, "float32"),
                                          name="kernel")
                self.bias = tf.Variable(plan.bias.keras(variable_seed(seed, index, "bias"))((units,), "float32"),
                                        name="bias")
                self.relu = relu

            def __call__(self, h: Any) -> Any:
                out = tf.matmul(h, self.kernel) + self.bias
                return tf.nn.relu(out) if self.relu else out

        class MLP(tf.Module):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                super().__init__(name="mlp")
                fan_ins = (options.inputs, *options.layers[:-1])
                last = len(options.layers) - 1
                pairs = enumerate(zip(fan_ins, options.layers, strict=True))
                self.layers = [Dense(i, f, u, i < last) for i, (f, u) in pairs]

            def __call__(self, h: Any) -> Any:
                for layer in self.layers:
                    h = layer(h)
                return h

        self.tf = tf
        self.model = MLP()
        make = tf.keras.optimizers.Adam if options.optimizer == "adam" else tf.keras.optimizers.SGD
        self.optimizer = make(learning_rate=options.learning_rate, name=options.optimizer)
        self.variables = [v for layer in self.model.layers for v in (layer.kernel, layer.bias)]
        self.optimizer.build(self.variables)  # its state exists (and is saved) even with --train-steps 0
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step)

    def train(self, x: np.ndarray, y: np.ndarray, steps: int, on_step: StepCallback | None) -> list[float]:
        tf = self.tf
        losses = []
        for step in range(1, steps + 1):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self.model(x) - y))
            grads = tape.gradient(loss, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
            self.step.assign_add(1)
            losses.append(float(loss))
            if on_step:
                on_step(step, float(loss))
        return losses

    def save(self, target: str) -> str:
        os.makedirs(target, exist_ok=True)
        return str(self.checkpoint.save(os.path.join(target, TF2_PREFIX)))

    def snapshot(self, target: str) -> str:
        # Checkpoint.write, unlike save, leaves save_counter alone: a restored counter is written as restored.
        os.makedirs(target, exist_ok=True)
        return str(self.checkpoint.write(os.path.join(target, TF2_PREFIX)))

    def restore(self, location: str) -> tuple[str, ...]:
        try:
            status = self.checkpoint.restore(location)
        except (self.tf.errors.OpError, ValueError) as exc:
            raise _restore_error(location, exc) from None
        try:
            status.assert_consumed()
        except AssertionError as exc:
            return (f"tf.train.Checkpoint.restore did not match everything: {str(exc)[:300]}",)
        return ()


class KerasModel(BuiltModel):
    """A Keras Sequential of Dense layers, compiled and fitted; saved as .keras, .weights.h5 or legacy .h5."""

    restore_method = "keras.Model.load_weights"

    def __init__(self, options: GenerateOptions, plan: InitPlan, seed: int) -> None:
        super().__init__(options, plan, seed)
        keras = import_keras()
        keras.utils.set_random_seed(seed)
        last = len(options.layers) - 1
        layers = [keras.Input((options.inputs,))]
        for i, units in enumerate(options.layers):
            layers.append(keras.layers.Dense(
                units, activation="relu" if i < last else None, name=layer_name(i),
                kernel_initializer=plan.kernel.keras(variable_seed(seed, i, "kernel")),
                bias_initializer=plan.bias.keras(variable_seed(seed, i, "bias"))))
        self.keras = keras
        self.model = keras.Sequential(layers, name="sequential")
        make = keras.optimizers.Adam if options.optimizer == "adam" else keras.optimizers.SGD
        # A loss object, not the string "mse": Keras 3 cannot deserialize the string from a legacy .h5.
        self.model.compile(optimizer=make(learning_rate=options.learning_rate, name=options.optimizer),
                           loss=keras.losses.MeanSquaredError(), jit_compile=False)
        self.model.optimizer.build(self.model.trainable_variables)  # state exists even with --train-steps 0

    def train(self, x: np.ndarray, y: np.ndarray, steps: int, on_step: StepCallback | None) -> list[float]:
        if steps == 0:
            return []
        callbacks = []
        if on_step:
            callbacks.append(self.keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_step(epoch + 1, float(logs["loss"]))))
        # One batch per epoch, so epochs are optimizer steps.
        history = self.model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0,
                                 callbacks=callbacks)
        return [float(v) for v in history.history["loss"]]

    def save(self, target: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        fmt = self.options.format
        if fmt == KERAS_WEIGHTS:
            self.model.save_weights(target)
        else:
            with _quiet_absl():
                self.model.save(target)
        return target

    def restore(self, location: str) -> tuple[str, ...]:
        try:
            self.model.load_weights(location)
        except (ValueError, KeyError, OSError) as exc:
            raise _restore_error(location, exc) from None
        if self.options.format == KERAS_H5:
            return self._restore_h5_optimizer(location)
        return ()

    def _restore_h5_optimizer(self, location: str) -> tuple[str, ...]:
        """`load_weights` reads only `model_weights` from a legacy .h5; `keras.saving.load_model` also sets the
        optimizer from `optimizer_weights`, in the order of its `weight_names`. Measure, then do the same."""
        import h5py

        with h5py.File(location, "r") as f:
            group = f.get("optimizer_weights")
            if group is None:
                return ()
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
            stored = [np.asarray(group[n]) for n in names]
        variables = self.model.optimizer.variables
        if len(variables) != len(stored):
            return (f"the file's optimizer_weights hold {len(stored)} tensors, the optimizer has "
                    f"{len(variables)} variables; optimizer state not restored",)
        left = sum(not same_bits(np.asarray(v.numpy()), s) for v, s in zip(variables, stored, strict=True))
        if not left:
            return ()
        self.model.optimizer.set_weights(stored)
        return (f"model.load_weights() restored the layers' weights but left {left} of {len(stored)} optimizer "
                f"variables different from the file's optimizer_weights; roundtrip set them with "
                f"optimizer.set_weights(), as keras.saving.load_model() does",)


def build_model(options: GenerateOptions, plan: InitPlan, seed: int) -> BuiltModel:
    if options.format == TF1:
        return TF1Model(options, plan, seed)
    if options.format == TF2:
        return TF2Model(options, plan, seed)
    return KerasModel(options, plan, seed)


# --- reading back what was written --------------------------------------------------------------------------------


def written_files(fmt: str, location: str) -> tuple[WrittenFile, ...]:
    if fmt in (TF1, TF2):
        directory, base = os.path.split(location)
        names = sorted(n for n in os.listdir(directory) if n.startswith(base + "."))
        if os.path.exists(os.path.join(directory, STATE_FILE)):
            names.append(STATE_FILE)
        paths = [os.path.join(directory, n) for n in names]
    else:
        paths = [location]
    return tuple(WrittenFile(p, os.path.getsize(p)) for p in paths)


def read_stored(location: str) -> tuple[tuple[TensorInfo, ...], dict[str, np.ndarray]]:
    """Every tensor a checkpoint stores, read with ckptcheck's own readers (no TensorFlow)."""
    import ckptcheck

    with ckptcheck.open_checkpoint(location) as reader:
        infos = reader.tensors()
        return infos, {t.name: reader.read(t.name) for t in infos}


def list_stored(location: str) -> tuple[TensorInfo, ...]:
    import ckptcheck

    with ckptcheck.open_checkpoint(location) as reader:
        return reader.tensors()


# --- the command ----------------------------------------------------------------------------------------------------


def generate(out: str, options: GenerateOptions, *, on_step: StepCallback | None = None) -> GenerateReport:
    """Build, train `options.train_steps` steps, save into OUT; what was written, read back natively."""
    check_options(options)
    x, y = training_data(options)
    model = build_model(options, options.init, options.seed)
    try:
        losses = model.train(x, y, options.train_steps, on_step)
        location = model.save(target_path(options.format, out))
    finally:
        model.close()
    infos = list_stored(location)
    return GenerateReport(options=options, out=out, location=location,
                          files=written_files(options.format, location), tensors=infos, losses=tuple(losses))
