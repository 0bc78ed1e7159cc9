"""`explain`: settle common claims about initializers and checkpoints by running small TensorFlow experiments.

Each question builds, trains, saves and restores real models (through `generate`, `roundtrip` and TensorFlow
itself), reads back what was saved with ckptcheck's own readers, and compares it (`diff`, `stats`). The verdict
and every figure are derived from those runs: nothing here states an answer in advance, so if TensorFlow ever
behaved otherwise, the answer would say so. TensorFlow is imported inside the experiments only.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

import ckptcheck
from ckptcheck.compare import same_bits
from ckptcheck.diff import DiffReport, diff_readers
from ckptcheck.errors import UsageError
from ckptcheck.lab.gate import import_keras, import_tensorflow
from ckptcheck.lab.generate import (
    GENERATE_FORMATS,
    OPTIMIZERS,
    TF1Model,
    build_model,
    generate,
    read_stored,
    training_data,
    written_files,
)
from ckptcheck.lab.initializers import DEFAULT_PLAN, EXAMPLE_SPECS, InitPlan, InitSpec, parse_plan, parse_spec
from ckptcheck.lab.reports import Answer, Evidence, GenerateOptions, GenerateReport, Question, RoundTripReport
from ckptcheck.lab.roundtrip import SENTINEL, roundtrip, work_directory
from ckptcheck.numbers import number_text
from ckptcheck.records import TF1, TF2
from ckptcheck.stats import TensorStats, tensor_stats

StageCallback = Callable[[str], None]

QUESTIONS = (
    Question(1, "constant-does-not-train", "Variables initialized with a constant do not train.",
             "Train a TF1 Estimator-style model from constant:0.5 with SGD and with Adam, diff the checkpoints "
             "before and after, and count the distinct units of its hidden layer against glorot_uniform's."),
    Question(2, "cannot-restore-constant", "TensorFlow cannot restore variables initialized with constants.",
             "Save a tf.constant-, a tf.random.normal- and a zeros-then-assign variable (TF2 tf.train.Checkpoint "
             "and TF1 Saver), restore each into a variable with another initial value, compare bit for bit."),
    Question(3, "reinit-does-not-reset", "Re-running the initializer does not reset variables.",
             "In a TF1 session: initialize, train, run global_variables_initializer() again, restore the trained "
             "checkpoint, run the initializer once more; save after each step and diff."),
    Question(4, "records-initializer", "A checkpoint records the initializer.",
             "Round-trip a model in every format (and a TF1 bundle without its .meta graph) and read where, if "
             "anywhere, the initializer is written."),
    Question(5, "initializer-stats", "What does each initializer put in the checkpoint?",
             "Save a 256x128 kernel from each initializer generate supports, untrained, and compare the stored "
             "tensor's statistics with what the initializer promises."),
)


def find_questions(key: str) -> tuple[Question, ...]:
    """`all`, a question's number, or its name."""
    wanted = key.strip().lower()
    if wanted == "all":
        return QUESTIONS
    for q in QUESTIONS:
        if wanted in (str(q.number), q.slug):
            return (q,)
    known = ", ".join(f"{q.number} ({q.slug})" for q in QUESTIONS)
    raise UsageError(f"no question {key!r}", hint=f"ask one of {known}, or all; `ckptcheck explain --list`")


def explain(
    questions: Sequence[Question], *, keep: str | None = None, on_question: StageCallback | None = None
) -> tuple[Answer, ...]:
    """Run each question's experiment; `keep` keeps each one's files in KEEP/<name>/ (else a temporary directory).
    `on_question` is told each question's name as it finishes."""
    import_tensorflow()  # a missing TensorFlow is reported before any work
    if keep is not None:  # and a --keep directory in the way, before any experiment
        for q in questions:
            path = os.path.join(keep, q.slug)
            if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
                raise UsageError(f"{path} already exists and is not empty", path=keep,
                                 hint="give --keep a new or empty directory")
    answers = []
    for q in questions:
        started = time.perf_counter()
        with work_directory(keep, q.slug) as work:
            found = _EXPERIMENTS[q.slug](work)
        answers.append(Answer(question=q, verdict=found.verdict, depends_on=found.depends_on,
                              conclusion=found.conclusion, evidence=found.evidence,
                              seconds=round(time.perf_counter() - started, 2),
                              kept=os.path.abspath(work) if keep is not None else None))
        if on_question is not None:
            on_question(q.slug)
    return tuple(answers)


class _Found(NamedTuple):
    verdict: str
    depends_on: str | None
    conclusion: str
    evidence: tuple[Evidence, ...]


def _verdict(holds: int, fails: int) -> str:
    """How many cases the claim held in and how many it failed in -> true, false or depends."""
    if fails and not holds:
        return "false"
    if holds and not fails:
        return "true"
    return "depends"


# --- helpers over saved checkpoints -------------------------------------------------------------------------------


def _rel(work: str, path: str) -> str:
    return os.path.relpath(path, work)


def _files(work: str, fmt: str, location: str) -> tuple[str, ...]:
    return tuple(_rel(work, f.path) for f in written_files(fmt, location))


def _diff(a: str, b: str) -> DiffReport:
    with ckptcheck.open_checkpoint(a) as ra, ckptcheck.open_checkpoint(b) as rb:
        return diff_readers(ra, rb)


def _stats(location: str, names: Sequence[str]) -> dict[str, TensorStats]:
    with ckptcheck.open_checkpoint(location) as reader:
        return {name: tensor_stats(reader, name) for name in names}


def _g(value: float | None) -> str:
    """A measured number, short."""
    if value is None:
        return "-"
    return number_text(value, 4)


def _n(count: int, word: str) -> str:
    """`1 unit`, `8 units`."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def _values(a: np.ndarray) -> list[float]:
    return [float(v) for v in a.reshape(-1)]


def _distinct(rows: np.ndarray) -> int:
    """How many different rows a matrix has, bit for bit."""
    return len({row.tobytes() for row in np.ascontiguousarray(rows)})


def _value_range(s: TensorStats) -> str:
    if s.note:
        return s.note
    return f"{_g(s.min)} .. {_g(s.max)}"


# --- 1. constant initializers and training ------------------------------------------------------------------------

TRAIN_OPTIONS = GenerateOptions(format=TF1, layers=(8, 2), inputs=4, train_steps=20, learning_rate=0.01, seed=0)
CONSTANT_PLAN = parse_plan(["constant:0.5"])


def _is_weight(name: str) -> bool:
    return name.rsplit("/", 1)[-1] in ("kernel", "bias")


def _constant_does_not_train(work: str) -> _Found:
    runs: dict[tuple[str, str], tuple[GenerateReport, GenerateReport]] = {}
    for optimizer in OPTIMIZERS:
        for label, plan in (("constant", CONSTANT_PLAN), ("random", DEFAULT_PLAN)):
            options = replace(TRAIN_OPTIONS, optimizer=optimizer, init=plan)
            start = generate(os.path.join(work, optimizer, label, "initial"), replace(options, train_steps=0))
            end = generate(os.path.join(work, optimizer, label, "trained"), options)
            runs[optimizer, label] = (start, end)

    evidence = []
    moved: dict[str, tuple[int, int]] = {}
    for optimizer in OPTIMIZERS:
        item, variables, changed = _training_diff(work, optimizer, *runs[optimizer, "constant"])
        evidence.append(item)
        moved[optimizer] = (changed, variables)
    symmetry, distinct = _unit_symmetry(work, runs)
    evidence.append(symmetry)

    holds = sum(1 for changed, variables in moved.values() if changed == 0)
    fails = sum(1 for changed, variables in moved.values() if changed == variables)
    verdict = _verdict(holds, fails)
    steps, units = TRAIN_OPTIONS.train_steps, TRAIN_OPTIONS.layers[0]
    per_opt = "; ".join(f"{o}: {c} of {v} variables moved" for o, (c, v) in moved.items())
    if verdict == "false":
        conclusion = (f"They train: after {steps} steps from constant:0.5 every variable had moved ({per_opt}; "
                      f"the diff shows by how much).")
    elif verdict == "true":
        conclusion = f"No variable moved in {steps} steps ({per_opt})."
    else:
        conclusion = f"Some variables moved and some did not ({per_opt})."
    constant_units = [distinct[o, "constant"][0] for o in OPTIMIZERS]
    random_units = [distinct[o, "random"][0] for o in OPTIMIZERS]
    if all(distinct[o, "constant"] == (1, 1, True) for o in OPTIMIZERS):
        conclusion += (f" What a constant initializer really costs is symmetry: every one of the {units} units of "
                       f"the hidden layer received the same update and all stayed identical (1 distinct unit of "
                       f"{units} after training, and one bias value, with {' and with '.join(OPTIMIZERS)}), so the "
                       f"layer computes one feature {units} times; from glorot_uniform the units ended "
                       f"{' and '.join(str(d) for d in random_units)} distinct.")
    else:
        conclusion += (f" From constant:0.5 the hidden layer's {units} units ended "
                       f"{' and '.join(str(d) for d in constant_units)} distinct; from glorot_uniform "
                       f"{' and '.join(str(d) for d in random_units)}.")
    return _Found(verdict, "the variables" if verdict == "depends" else None, conclusion, tuple(evidence))


def _training_diff(work: str, optimizer: str, start: GenerateReport, end: GenerateReport
                   ) -> tuple[Evidence, int, int]:
    report = _diff(start.location, end.location)
    changes = {c.name: c for c in report.changed}
    weights = sorted(t.name for t in end.tensors if _is_weight(t.name))
    before, after = _stats(start.location, weights), _stats(end.location, weights)
    rows: list[dict[str, object]] = []
    changed = elements = elements_changed = 0
    largest = 0.0
    for name in weights:
        values = changes[name].values if name in changes else None
        differing, max_abs = (values.differing, values.max_abs) if values else (0, 0.0)
        rows.append({"tensor": name, "elements": after[name].count, "elements_changed": differing,
                     "max_abs_diff": max_abs, "initial": _value_range(before[name]),
                     "trained": _value_range(after[name])})
        changed += bool(differing)
        elements += after[name].count
        elements_changed += differing
        largest = max(largest, max_abs)
    others = [c.name for c in report.changed if not _is_weight(c.name)]
    a, b = _rel(work, start.location), _rel(work, end.location)
    text = (f"`ckptcheck diff {a} {b}`: {changed} of {len(rows)} variables changed, {elements_changed} of "
            f"{elements} elements, the largest by {_g(largest)}; {_n(len(others), 'other tensor')} changed too "
            f"({', '.join(others)}). The loss went from {_g(end.losses[0])} to {_g(end.losses[-1])}.")
    figures: dict[str, object] = {
        "optimizer": optimizer, "steps": len(end.losses), "variables": len(rows), "variables_changed": changed,
        "elements": elements, "elements_changed": elements_changed, "max_abs_diff": largest,
        "other_tensors_changed": len(others), "loss_first": end.losses[0], "loss_last": end.losses[-1],
    }
    title = (f"{optimizer}: train {len(end.losses)} steps from constant:0.5 (TF1 Estimator-style graph, "
             f"get_variable + minimize + Saver), diff initial -> trained")
    files = _files(work, TF1, start.location) + _files(work, TF1, end.location)
    return Evidence(title, text, figures, tuple(rows), files), len(rows), changed


def _unit_symmetry(work: str, runs: dict[tuple[str, str], tuple[GenerateReport, GenerateReport]]
                   ) -> tuple[Evidence, dict[tuple[str, str], tuple[int, int, bool]]]:
    """Per run: distinct units after training, distinct updates, and whether the hidden bias is one value."""
    hidden, bias, output = "dense/kernel", "dense/bias", "dense_1/kernel"
    rows: list[dict[str, object]] = []
    parts: list[str] = []
    distinct: dict[tuple[str, str], tuple[int, int, bool]] = {}
    figures: dict[str, object] = {}
    for (optimizer, label), (start, end) in runs.items():
        initial, trained = read_stored(start.location)[1], read_stored(end.location)[1]
        k0, k1 = initial[hidden], trained[hidden]
        flags = _stats(end.location, [hidden])[hidden].identical or ()
        before, updates, after = _distinct(k0.T), _distinct((k1 - k0).T), _distinct(k1.T)
        one_bias = bool(np.all(trained[bias] == trained[bias].reshape(-1)[0]))
        distinct[optimizer, label] = (after, updates, one_bias)
        init = end.options.init.kernel.text()
        rows.append({"init": init, "optimizer": optimizer, "units": int(k1.shape[1]),
                     "distinct_units_initial": before, "distinct_updates": updates, "distinct_units_trained": after,
                     "bias_one_value": one_bias, "distinct_rows_of_next_kernel": _distinct(trained[output]),
                     "stats_identical": list(flags), "loss_first": end.losses[0], "loss_last": end.losses[-1]})
        figures[f"{optimizer}.{label}.distinct_units_trained"] = after
        figures[f"{optimizer}.{label}.distinct_updates"] = updates
        parts.append(f"{init} with {optimizer}: {_n(before, 'distinct unit')} before, "
                     f"{_n(updates, 'distinct update')}, {_n(after, 'distinct unit')} after"
                     + (" (inspect --stats: identical columns)" if "columns" in flags else ""))
    units = TRAIN_OPTIONS.layers[0]
    text = (f"The hidden layer ({hidden}, {units} relu units) compared unit by unit (kernel columns, bit for bit) "
            f"in the saved checkpoints: " + "; ".join(parts) + f". {output}'s rows are what each hidden unit feeds "
            f"forward.")
    title = "symmetry: do the units of a layer stay identical?"
    files = tuple(f for start, end in runs.values() for f in _files(work, TF1, end.location)
                  if f.endswith((".index", ".data-00000-of-00001")))
    return Evidence(title, text, figures, tuple(rows), files), distinct


# --- 2. restoring constant-initialized variables -------------------------------------------------------------------

# Each variable's initial value, saved and restored by both APIs (tf.Variable, and tf.compat.v1.Variable in a graph).
MADE_WITH = {
    "constant": "tf.constant([1., 2., 3.])",
    "random": "tf.random.normal([3], seed=1)",
    "assigned": "tf.zeros([3]), then .assign([4., 5., 6.])",
}
# The initial values of the variables restored into: each differs from the saved variable's.
FRESH_WITH = {
    "constant": "tf.random.normal([3], seed=2)",
    "random": f"tf.fill([3], {SENTINEL})",
    "assigned": "tf.zeros([3]), not assigned",
}


def _cannot_restore_constant(work: str) -> _Found:
    tf = import_tensorflow()
    rows: list[dict[str, object]] = []
    evidence = []
    keys_by_api: dict[str, list[str]] = {}
    for api, experiment in (("tf.train.Checkpoint", _restore_tf2), ("tf.compat.v1.train.Saver", _restore_tf1)):
        fmt = TF2 if api == "tf.train.Checkpoint" else TF1
        saved, before, after, location = experiment(tf, os.path.join(work, fmt))
        infos, stored = read_stored(location)
        keys_by_api[api] = [t.name for t in infos]
        api_rows = []
        for name in MADE_WITH:
            key = next(t.name for t in infos if t.name.split("/")[0] == name)
            api_rows.append({
                "variable": name, "initial_value": MADE_WITH[name], "saved": _values(saved[name]),
                "stored_key": key, "stored_equals_saved": same_bits(stored[key], saved[name]),
                "restored_into": FRESH_WITH[name], "before_restore": _values(before[name]),
                "differed_before_restore": not same_bits(before[name], saved[name]),
                "after_restore": _values(after[name]), "restored_exactly": same_bits(after[name], saved[name]),
            })
        rows += api_rows
        exact = sum(1 for r in api_rows if r["restored_exactly"])
        differed = sum(1 for r in api_rows if r["differed_before_restore"])
        evidence.append(Evidence(
            f"{api}: save three variables, restore each into a variable with another initial value",
            f"{exact} of {len(api_rows)} restored bit for bit; before the restore {differed} of them held other "
            f"values; the checkpoint's stored values equal the saved variables in "
            f"{sum(1 for r in api_rows if r['stored_equals_saved'])} of {len(api_rows)}.",
            {"variables": len(api_rows), "restored_exactly": exact, "differed_before_restore": differed},
            tuple(api_rows), _files(work, fmt, location),
            ("variable", "initial_value", "saved", "restored_into", "before_restore", "after_restore",
             "restored_exactly")))
    naming = sorted(k for keys in keys_by_api.values() for k in keys if "init" in k.lower())
    assigned = [r for r in rows if r["variable"] == "assigned"]
    evidence.append(Evidence(
        "what the checkpoints hold (read by ckptcheck)",
        "keys: " + "; ".join(f"{api}: {', '.join(keys)}" for api, keys in keys_by_api.items())
        + f". Keys naming an initializer: {len(naming)}. The zeros-then-assign variable is stored as "
        + ", ".join(str(r["saved"]) for r in assigned[:1]) + " — its value at save time, not how it was made.",
        {"keys_naming_an_initializer": len(naming), "keys": {k: v for k, v in keys_by_api.items()}}))
    exact = sum(1 for r in rows if r["restored_exactly"])
    verdict = _verdict(len(rows) - exact, exact)
    differed = sum(1 for r in rows if r["differed_before_restore"])
    conclusion = (f"{exact} of {len(rows)} variables restored bit for bit — the tf.constant, the tf.random.normal "
                  f"and the zeros-then-assign one, with tf.train.Checkpoint and with the TF1 Saver — into variables "
                  f"whose initial values differed ({differed} of {len(rows)} held other values before the "
                  f"restore). A checkpoint stores values, never how they were made; "
                  f"{len(naming)} of its keys name an initializer.")
    return _Found(verdict, "the variable" if verdict == "depends" else None, conclusion, tuple(evidence))


Arrays = dict[str, np.ndarray]


def _restore_tf2(tf: Any, directory: str) -> tuple[Arrays, Arrays, Arrays, str]:
    made = {"constant": tf.Variable(tf.constant([1.0, 2.0, 3.0])),
            "random": tf.Variable(tf.random.normal([3], seed=1)),
            "assigned": tf.Variable(tf.zeros([3]))}
    made["assigned"].assign([4.0, 5.0, 6.0])
    saved = {k: v.numpy().copy() for k, v in made.items()}
    location = str(tf.train.Checkpoint(**made).save(os.path.join(directory, "ckpt")))
    fresh = {"constant": tf.Variable(tf.random.normal([3], seed=2)),
             "random": tf.Variable(tf.fill([3], SENTINEL)),
             "assigned": tf.Variable(tf.zeros([3]))}
    before = {k: v.numpy().copy() for k, v in fresh.items()}
    status = tf.train.Checkpoint(**fresh).restore(location)
    status.assert_consumed()
    del status  # its deleter needs TensorFlow alive: run it now, not at interpreter exit
    after = {k: v.numpy().copy() for k, v in fresh.items()}
    return saved, before, after, location


def _restore_tf1(tf: Any, directory: str) -> tuple[Arrays, Arrays, Arrays, str]:
    v1 = tf.compat.v1
    config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)

    def build(values: dict[str, Callable[[], Any]], seed: int) -> tuple[Any, dict[str, Any], Any, Any]:
        graph = tf.Graph()
        with graph.as_default():
            v1.set_random_seed(seed)
            variables = {name: v1.Variable(make(), name=name) for name, make in values.items()}
            return graph, variables, v1.train.Saver(), v1.global_variables_initializer()

    graph, made, saver, init = build({"constant": lambda: tf.constant([1.0, 2.0, 3.0]),
                                      "random": lambda: v1.random_normal([3], seed=1),
                                      "assigned": lambda: tf.zeros([3])}, 1)
    with graph.as_default():
        assign = made["assigned"].assign([4.0, 5.0, 6.0])
    with v1.Session(graph=graph, config=config) as session:
        session.run(init)
        session.run(assign)
        saved = {k: np.asarray(v) for k, v in session.run(made).items()}
        location = str(saver.save(session, os.path.join(directory, "model.ckpt")))
    graph, fresh, saver, init = build({"constant": lambda: v1.random_normal([3], seed=2),
                                       "random": lambda: tf.fill([3], SENTINEL),
                                       "assigned": lambda: tf.zeros([3])}, 2)
    with v1.Session(graph=graph, config=config) as session:
        session.run(init)
        before = {k: np.asarray(v) for k, v in session.run(fresh).items()}
        saver.restore(session, location)
        after = {k: np.asarray(v) for k, v in session.run(fresh).items()}
    return saved, before, after, location


# --- 3. re-running the initializer ----------------------------------------------------------------------------------

REINIT_OPTIONS = GenerateOptions(format=TF1, layers=(4, 2), inputs=3, train_steps=5, optimizer="adam", seed=0,
                                 init=InitPlan(kernel=parse_spec("glorot_uniform"), bias=parse_spec("constant:0.5")))


def _reinit_does_not_reset(work: str) -> _Found:
    tf = import_tensorflow()
    options = REINIT_OPTIONS
    model = build_model(options, options.init, options.seed)
    if not isinstance(model, TF1Model):
        raise AssertionError("a TF1 model is needed for a session")
    saved: dict[str, str] = {}
    try:
        with model.graph.as_default():
            init = tf.compat.v1.global_variables_initializer()
        x, y = training_data(options)
        saved["initial"] = model.snapshot(os.path.join(work, "1-initialized"))
        losses = model.train(x, y, options.train_steps, None)
        saved["trained"] = model.snapshot(os.path.join(work, "2-trained"))
        model.session.run(init)
        saved["initializer again"] = model.snapshot(os.path.join(work, "3-initializer-again"))
        model.restore(saved["trained"])
        saved["restored"] = model.snapshot(os.path.join(work, "4-restored"))
        model.session.run(init)  # the classic mistake: the init op run after the restore
        saved["restored, then initializer"] = model.snapshot(os.path.join(work, "5-restored-then-initializer"))
    finally:
        model.close()

    trained = _diff(saved["initial"], saved["trained"])
    vs_initial = _diff(saved["initial"], saved["initializer again"])
    vs_trained = _diff(saved["trained"], saved["initializer again"])
    restored = _diff(saved["trained"], saved["restored"])
    undone = _diff(saved["trained"], saved["restored, then initializer"])
    names = sorted({*trained.unchanged, *(c.name for c in trained.changed)})
    initial_stats = _stats(saved["initial"], names)
    rows: list[dict[str, object]] = []
    back: list[str] = []
    redrawn: list[str] = []
    kept: list[str] = []
    moved = restored_count = survived_init = 0
    for name in names:
        is_moved = name not in trained.unchanged
        is_back = name in vs_initial.unchanged
        is_kept = is_moved and name in vs_trained.unchanged
        (back if is_back else kept if is_kept else redrawn).append(name)
        moved += is_moved
        restored_count += name in restored.unchanged
        survived_init += is_moved and name in undone.unchanged
        rows.append({"tensor": name, "made_by": _made_by(name), "initial": _value_range(initial_stats[name]),
                     "moved_in_training": is_moved,
                     "after_initializer_again": ("initial value" if is_back else "trained value" if is_kept
                                                 else "new values"),
                     "restored_exactly": name in restored.unchanged,
                     "trained_after_restore_then_initializer": is_moved and name in undone.unchanged})
    count = len(rows)
    step = {label: int(read_stored(path)[1]["global_step"]) for label, path in saved.items()}
    kernels = _stats(saved["initial"], redrawn), _stats(saved["initializer again"], redrawn)
    draws = "; ".join(f"{n} std {_g(kernels[0][n].std)} at first, {_g(kernels[1][n].std)} after" for n in redrawn)
    figures: dict[str, object] = {
        "variables": count, "moved_in_training": moved, "back_to_initial": len(back), "new_values": len(redrawn),
        "kept_trained": len(kept), "restored_exactly": restored_count,
        "trained_after_restore_then_initializer": survived_init, "global_step": step,
        "new_draws": {n: {"std_initial": kernels[0][n].std, "std_after": kernels[1][n].std} for n in redrawn},
    }
    files = tuple(f for path in saved.values() for f in _files(work, TF1, path) if not f.endswith("checkpoint"))
    evidence = (Evidence(
        f"one TF1 session (kernels {options.init.kernel.text()}, biases {options.init.bias.text()}, "
        f"{options.optimizer}): initialize, train {len(losses)} steps, run global_variables_initializer() again, "
        f"restore the trained checkpoint, run the initializer once more; saved after each step and diffed",
        f"{moved} of {count} variables moved in training. After the initializer ran again {len(back)} held their "
        f"initial value bit for bit, {len(redrawn)} held new values ({draws}: a new draw from the same "
        f"initializer) and {len(kept)} kept its trained value; global_step went "
        + " -> ".join(str(v) for v in step.values()) + f". Restoring the trained checkpoint brought back "
        f"{restored_count} of {count} bit for bit; running the initializer after that restore left "
        f"{survived_init} of {moved} trained values.",
        figures, tuple(rows), files),)
    verdict = _verdict(1 if moved and len(kept) == moved else 0, 1 if moved and not kept else 0)
    made = sorted({_made_by(n) for n in back})
    if verdict == "false":
        conclusion = (f"Running the initializer again resets every variable it initializes: {len(kept)} of {moved} "
                      f"trained variables kept their values; {len(back)} went back to their initial value bit for "
                      f"bit ({', '.join(made)}), and {len(redrawn)} ({', '.join(redrawn)}) took a new random draw. "
                      f"Restoring the checkpoint brought back {restored_count} of {count} bit for bit — and running "
                      f"the initializer after a restore undoes it ({survived_init} of {moved} trained values "
                      f"survived).")
    else:
        conclusion = (f"{len(kept)} of {moved} trained variables kept their values after the initializer ran "
                      f"again; {len(back)} went back to their initial value; {len(redrawn)} took new values.")
    return _Found(verdict, "the variable" if verdict == "depends" else None, conclusion, evidence)


def _made_by(name: str) -> str:
    role = name.rsplit("/", 1)[-1]
    if role in ("kernel", "bias"):
        return REINIT_OPTIONS.init.for_role(role).text()
    return "the step counter" if name == "global_step" else "the optimizer's state"


# --- 4. where the initializer is recorded ----------------------------------------------------------------------------

RECORD_OPTIONS = GenerateOptions(format=TF1, layers=(4, 2), inputs=3, train_steps=2, optimizer="adam", seed=0,
                                 init=parse_plan(["kernel=constant:0.5", "bias=zeros"]))
BUNDLE_ONLY = "tf1 bundle without .meta"


def _records_initializer(work: str) -> _Found:
    import_keras()
    reports: dict[str, RoundTripReport] = {}
    for fmt in GENERATE_FORMATS:
        reports[fmt] = roundtrip(replace(RECORD_OPTIONS, format=fmt), keep=work)
    # The same TF1 checkpoint with only its tensor bundle: the .index and .data files, no .meta graph.
    original = reports[TF1].source
    bundle = os.path.join(work, "tf1-bundle-only")
    os.makedirs(bundle)
    base = os.path.basename(original)
    for name in os.listdir(os.path.dirname(original)):
        if name.startswith(base + ".") and not name.endswith(".meta"):
            shutil.copy2(os.path.join(os.path.dirname(original), name), bundle)
    reports[BUNDLE_ONLY] = roundtrip(RECORD_OPTIONS, source=os.path.join(bundle, base),
                                     keep=os.path.join(work, "bundle-only"))

    rows: list[dict[str, object]] = []
    evidence = []
    places: dict[str, list[str]] = {}
    for label, report in reports.items():
        fact = report.facts["initializer"]
        places[label] = list(dict.fromkeys(w.rsplit(": ", 1)[0] for w in fact.where))
        rows.append({"checkpoint": label, "initializer_recorded": fact.recorded, "where": places[label],
                     "restored_exactly": report.ok})
        fmt = TF1 if label == BUNDLE_ONLY else label
        evidence.append(Evidence(f"{label}: roundtrip ({report.runs[0].method})", fact.evidence,
                                 {"recorded": fact.recorded, "where": list(fact.where), "restored_exactly": report.ok},
                                 files=_files(work, fmt, report.source)))
    recorded = [str(r["checkpoint"]) for r in rows if r["initializer_recorded"]]
    missing = [str(r["checkpoint"]) for r in rows if not r["initializer_recorded"]]
    exact = sum(1 for r in rows if r["restored_exactly"])
    summary = Evidence("is the initializer recorded? one roundtrip per format, facts read from the files",
                       f"recorded in {len(recorded)} of {len(rows)}: {', '.join(recorded) or 'none'}; not in "
                       f"{', '.join(missing) or 'any'}. Every tensor restored bit for bit in {exact} of {len(rows)}, "
                       f"into fresh models initialized with {reports[TF1].runs[0].init} and "
                       f"{reports[TF1].runs[1].init}.",
                       {"recorded_in": recorded, "not_recorded_in": missing, "restored_exactly": exact},
                       tuple(rows))
    verdict = _verdict(len(recorded), len(missing))
    where = "; ".join(f"{label} ({', '.join(places[label])})" for label in recorded)
    depends_on = f"the format: recorded by {', '.join(recorded)}; not by {', '.join(missing)}" if (
        verdict == "depends") else None
    conclusion = (f"Recorded by {where or 'none of them'}; not by {', '.join(missing) or 'any'}, where no key, "
                  f"object path or HDF5 name names one (each roundtrip's evidence below). Whatever the format, the "
                  f"restored values did not depend on the fresh model's initializer ({exact} of {len(rows)} "
                  f"restored bit for bit).")
    return _Found(verdict, depends_on, conclusion, (summary, *evidence))


# --- 5. what each initializer stores ----------------------------------------------------------------------------------

FAN_IN, FAN_OUT = 256, 128  # the kernel is [fan_in, fan_out], as a Dense layer's
SIGMA_TOLERANCE = 5.0  # a random draw's mean and std may stray this many standard errors


def _truncated_std_factor() -> float:
    """The std of a standard normal truncated to [-2, 2] (values beyond two stddev redrawn)."""
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    return math.sqrt(1 - 4 * phi2 / mass)


@dataclass(frozen=True)
class _Promise:
    """What an initializer's definition says its values will be."""

    text: str
    value: float | None = None
    mean: float | None = None
    std: float | None = None
    low: float | None = None
    high: float | None = None
    orthogonal_gain: float | None = None
    identity_gain: float | None = None

    @property
    def kind(self) -> str:
        if self.value is not None:
            return "constant"
        if self.orthogonal_gain is not None:
            return "orthogonal"
        return "identity" if self.identity_gain is not None else "random"


def _promise(spec: InitSpec, seed: int) -> _Promise:
    args = dict(spec.args)
    trunc = _truncated_std_factor()
    if spec.name in ("constant", "zeros", "ones"):
        value = args.get("value", 1.0 if spec.name == "ones" else 0.0)
        return _Promise(f"every element {_g(value)}", value=value)
    if spec.name == "random_normal":
        return _Promise(f"normal, mean {_g(args['mean'])}, std {_g(args['stddev'])}", mean=args["mean"],
                        std=args["stddev"])
    if spec.name == "truncated_normal":
        m, s = args["mean"], args["stddev"]
        return _Promise(f"normal(mean {_g(m)}, stddev {_g(s)}) redrawn beyond 2 stddev: std {_g(s * trunc)}, "
                        f"within [{_g(m - 2 * s)}, {_g(m + 2 * s)}]", mean=m, std=s * trunc, low=m - 2 * s,
                        high=m + 2 * s)
    if spec.name == "random_uniform":
        lo, hi = args["minval"], args["maxval"]
        return _Promise(f"uniform in [{_g(lo)}, {_g(hi)}): mean {_g((lo + hi) / 2)}, std "
                        f"{_g((hi - lo) / math.sqrt(12))}", mean=(lo + hi) / 2, std=(hi - lo) / math.sqrt(12),
                        low=lo, high=hi)
    if spec.name == "orthogonal":
        return _Promise(f"orthonormal columns times gain {_g(args['gain'])}: K^T K = gain^2 I",
                        orthogonal_gain=args["gain"])
    if spec.name == "identity":
        return _Promise(f"the identity times gain {_g(args['gain'])}", identity_gain=args["gain"])
    # The variance-scaling family (glorot, he, lecun): read scale, mode and distribution from Keras's own object.
    init = spec.keras(seed)
    scale, mode, distribution = float(init.scale), str(init.mode), str(init.distribution)
    n = {"fan_in": FAN_IN, "fan_out": FAN_OUT, "fan_avg": (FAN_IN + FAN_OUT) / 2}[mode]
    std = math.sqrt(scale / n)
    head = f"std sqrt({_g(scale)}/{mode}={_g(n)}) = {_g(std)}, mean 0"
    if distribution == "uniform":
        limit = math.sqrt(3) * std
        return _Promise(f"{head}, uniform within ±{_g(limit)}", mean=0.0, std=std, low=-limit, high=limit)
    if distribution == "truncated_normal":
        bound = 2 * std / trunc
        return _Promise(f"{head}, truncated normal within ±{_g(bound)}", mean=0.0, std=std, low=-bound, high=bound)
    return _Promise(f"{head}, normal", mean=0.0, std=std)


def _check(p: _Promise, s: TensorStats, kernel: np.ndarray) -> tuple[bool, str]:
    """Does the stored tensor keep the promise? And what was measured."""
    if p.value is not None:
        want = float(np.float32(p.value))
        ok = s.nan == 0 and s.inf == 0 and s.min == s.max == want
        return ok, f"min = max = {_g(s.min)}" if s.min == s.max else f"min {_g(s.min)}, max {_g(s.max)}"
    if p.orthogonal_gain is not None:
        k = kernel.astype(np.float64)
        gram = k.T @ k if k.shape[0] >= k.shape[1] else k @ k.T
        deviation = float(np.abs(gram - p.orthogonal_gain**2 * np.eye(gram.shape[0])).max())
        return deviation <= 1e-5 * max(1.0, p.orthogonal_gain**2), f"max |K^T K - gain^2 I| = {deviation:.2g}"
    if p.identity_gain is not None:
        eye = (p.identity_gain * np.eye(*kernel.shape)).astype(kernel.dtype)
        equal = int(np.count_nonzero(kernel == eye))
        return equal == kernel.size, f"{equal} of {kernel.size} elements equal gain * I"
    parts, ok = [], True
    n = s.count
    if p.mean is not None and p.std is not None and s.mean is not None and s.std is not None:
        tol_mean = SIGMA_TOLERANCE * p.std / math.sqrt(n)
        ok &= abs(s.mean - p.mean) <= tol_mean
        parts.append(f"mean {s.mean - p.mean:+.2g} off (±{tol_mean:.2g})")
        tol_std = SIGMA_TOLERANCE / math.sqrt(2 * n)
        ratio = s.std / p.std
        ok &= abs(ratio - 1) <= tol_std
        parts.append(f"std {ratio:.4f} x (1 ± {tol_std:.3f})")
    if p.low is not None and p.high is not None and s.min is not None and s.max is not None:
        slack = 1e-6 * max(abs(p.low), abs(p.high))
        inside = s.min >= p.low - slack and s.max <= p.high + slack
        ok &= inside
        parts.append("in bounds" if inside else "OUTSIDE the bounds")
    return bool(ok), "; ".join(parts)


def _initializer_stats(work: str) -> _Found:
    specs = [parse_spec(text) for text in EXAMPLE_SPECS]
    rows: list[dict[str, object]] = []
    files: list[str] = []
    for spec in specs:
        options = GenerateOptions(format=TF1, layers=(FAN_OUT,), inputs=FAN_IN, train_steps=0, optimizer="sgd",
                                  seed=0, init=InitPlan(kernel=spec, bias=parse_spec("zeros")))
        report = generate(os.path.join(work, spec.name), options)
        with ckptcheck.open_checkpoint(report.location) as reader:
            s = tensor_stats(reader, "dense/kernel")
            kernel = reader.read("dense/kernel")
        promise = _promise(spec, seed=1)
        ok, measured = _check(promise, s, kernel)
        rows.append({"initializer": spec.text(), "kind": promise.kind, "promise": promise.text, "mean": s.mean,
                     "std": s.std,
                     "min": s.min, "max": s.max, "measured": measured, "as_promised": ok, "stats_note": s.note})
        files += [f for f in _files(work, TF1, report.location) if f.endswith(".data-00000-of-00001")]
    kept = [r for r in rows if r["as_promised"]]
    broken = [str(r["initializer"]) for r in rows if not r["as_promised"]]
    evidence = [Evidence(
        f"generate --format tf1 --layers {FAN_OUT} --inputs {FAN_IN} --train-steps 0 --init kernel=SPEC, once per "
        f"initializer; the stored dense/kernel [{FAN_IN}, {FAN_OUT}] read back with inspect --stats",
        f"{len(kept)} of {len(rows)} initializers stored what they promise"
        + (f"; not: {', '.join(broken)}" if broken else "") + f". Random draws are allowed "
        f"{_g(SIGMA_TOLERANCE)} standard errors of mean and std ({FAN_IN * FAN_OUT} elements).",
        {"initializers": len(rows), "as_promised": len(kept), "not_as_promised": broken,
         "kernel_shape": [FAN_IN, FAN_OUT]}, tuple(rows), tuple(files),
        ("initializer", "promise", "mean", "std", "measured", "as_promised", "stats_note"))]
    truncated = next((r for r in rows if str(r["initializer"]).startswith("truncated_normal")), None)
    if truncated is not None:
        spec = parse_spec(str(truncated["initializer"]))
        stddev = dict(spec.args)["stddev"]
        measured_std = float(str(truncated["std"]))
        evidence.append(Evidence(
            "truncated normals: the stddev argument is not the stored std",
            f"{truncated['initializer']} stored std {_g(measured_std)} = {measured_std / stddev:.3f} x its "
            f"stddev argument: values beyond 2 stddev are redrawn, which narrows a normal by "
            f"{_truncated_std_factor():.4f}. glorot_normal, he_normal and lecun_normal (Keras VarianceScaling) "
            f"divide their stddev by that factor first, so what they store has the std they promise.",
            {"stddev_argument": stddev, "stored_std": measured_std, "ratio": measured_std / stddev,
             "truncation_factor": _truncated_std_factor()}))
    constants = [str(r["initializer"]) for r in rows if r["kind"] == "constant" and r["stats_note"]]
    draws = [str(r["initializer"]).split(":")[0] for r in rows if r["as_promised"] and r["kind"] == "random"]
    matrices = [f"{str(r['initializer']).split(':')[0]} ({r['measured']})" for r in rows
                if r["as_promised"] and r["kind"] in ("orthogonal", "identity")]
    conclusion = (f"It depends on the initializer, and the checkpoint holds only the values it drew: in a "
                  f"{FAN_IN}x{FAN_OUT} kernel, {len(kept)} of {len(rows)} initializers stored what they promise. "
                  f"{', '.join(constants) or 'None'} stored one value (std 0; `inspect --stats` notes it); "
                  f"{len(draws)} random ones ({', '.join(draws)}) a draw whose mean, std and bounds match their "
                  f"definition; " + ("; ".join(matrices) or "no structured matrix") + ".")
    if broken:
        conclusion += f" Not as promised: {', '.join(broken)}."
    # A question, not a claim: the answer depends on the initializer when they store different values.
    different = len({(r["mean"], r["std"], r["min"], r["max"]) for r in rows})
    verdict = "depends" if different > 1 else "true"
    return _Found(verdict, "the initializer" if verdict == "depends" else None, conclusion, tuple(evidence))


_EXPERIMENTS: dict[str, Callable[[str], _Found]] = {
    "constant-does-not-train": _constant_does_not_train,
    "cannot-restore-constant": _cannot_restore_constant,
    "reinit-does-not-reset": _reinit_does_not_reset,
    "records-initializer": _records_initializer,
    "initializer-stats": _initializer_stats,
}
