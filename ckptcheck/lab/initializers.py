"""Initializer specs as users type them (`constant:0.5`, `random_normal:mean=0,stddev=0.05`, `glorot_uniform`).

A spec parses to an `InitSpec` without importing TensorFlow; `InitSpec.keras()` and `InitSpec.tf1()` build the
initializer objects, importing TensorFlow or Keras only when called. Every argument has an explicit default (the
Keras defaults) so that TF1 and Keras builds of the same spec mean the same distribution — TF1's own defaults
differ (`tf.compat.v1.random_normal_initializer` has stddev 1.0, Keras's RandomNormal 0.05).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ckptcheck.errors import UsageError

# name -> (Keras class name, TF1 function name in tf.compat.v1.initializers, {argument: default}, is random)
_KINDS: dict[str, tuple[str, str, dict[str, float], bool]] = {
    "constant": ("Constant", "constant", {"value": 0.0}, False),
    "zeros": ("Zeros", "zeros", {}, False),
    "ones": ("Ones", "ones", {}, False),
    "random_normal": ("RandomNormal", "random_normal", {"mean": 0.0, "stddev": 0.05}, True),
    "truncated_normal": ("TruncatedNormal", "truncated_normal", {"mean": 0.0, "stddev": 0.05}, True),
    "random_uniform": ("RandomUniform", "random_uniform", {"minval": -0.05, "maxval": 0.05}, True),
    "glorot_uniform": ("GlorotUniform", "glorot_uniform", {}, True),
    "glorot_normal": ("GlorotNormal", "glorot_normal", {}, True),
    "he_normal": ("HeNormal", "he_normal", {}, True),
    "he_uniform": ("HeUniform", "he_uniform", {}, True),
    "lecun_normal": ("LecunNormal", "lecun_normal", {}, True),
    "orthogonal": ("Orthogonal", "orthogonal", {"gain": 1.0}, True),
    "identity": ("Identity", "identity", {"gain": 1.0}, False),
}
# Initializers defined only for 2-D (or larger) variables: a bias cannot take them.
MATRIX_ONLY = frozenset({"orthogonal", "identity"})
# The spec a bare positional argument fills, as in `constant:0.5`.
_POSITIONAL = {"constant": "value"}
# One example spec for every initializer kind, in the order users see them.
EXAMPLE_SPECS = (
    "constant:0.5", "zeros", "ones", "random_normal:mean=0,stddev=0.05", "truncated_normal:stddev=0.1",
    "random_uniform:minval=-1,maxval=1", "glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
    "lecun_normal", "orthogonal", "identity",
)
EXAMPLES = ", ".join(EXAMPLE_SPECS)
VARIABLE_ROLES = ("kernel", "bias")


@dataclass(frozen=True)
class InitSpec:
    """One initializer: its name and every argument (defaults filled in)."""

    name: str
    args: tuple[tuple[str, float], ...] = ()

    @property
    def random(self) -> bool:
        return _KINDS[self.name][3]

    def text(self) -> str:
        """The spec in the syntax it was parsed from, with every argument written out."""
        if not self.args:
            return self.name
        if self.name in _POSITIONAL:
            return f"{self.name}:{_num(self.args[0][1])}"
        return self.name + ":" + ",".join(f"{k}={_num(v)}" for k, v in self.args)

    def keras_config(self, seed: int | None) -> dict[str, Any]:
        config: dict[str, Any] = dict(self.args)
        if self.random:
            config["seed"] = seed
        return {"class_name": _KINDS[self.name][0], "config": config}

    def keras(self, seed: int | None) -> Any:
        """A `keras.initializers` object; a random one carries `seed`, so each call draws the same values."""
        import keras

        return keras.initializers.get(self.keras_config(seed))

    def tf1(self, seed: int | None) -> Any:
        """A `tf.compat.v1.initializers` object, for `tf.compat.v1.get_variable(initializer=...)`."""
        import tensorflow as tf

        make = getattr(tf.compat.v1.initializers, _KINDS[self.name][1])
        kwargs: dict[str, Any] = dict(self.args)
        if self.random:
            kwargs["seed"] = seed
        return make(**kwargs)


@dataclass(frozen=True)
class InitPlan:
    """The initializer of each kind of variable a generated model has."""

    kernel: InitSpec
    bias: InitSpec

    def for_role(self, role: str) -> InitSpec:
        return self.kernel if role == "kernel" else self.bias

    def text(self) -> str:
        if self.kernel == self.bias:
            return self.kernel.text()
        return f"kernel={self.kernel.text()} bias={self.bias.text()}"


DEFAULT_PLAN = InitPlan(kernel=InitSpec("glorot_uniform"), bias=InitSpec("zeros"))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _bad(spec: str, why: str) -> UsageError:
    return UsageError(f"bad initializer spec {spec!r}: {why}", hint=f"valid specs: {EXAMPLES}")


def parse_spec(spec: str) -> InitSpec:
    """`name` or `name:arg=value,...` (or `constant:VALUE`) -> InitSpec, every argument checked."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in _KINDS:
        raise _bad(spec, f"unknown initializer {name!r}")
    defaults = _KINDS[name][2]
    values = dict(defaults)
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = part.partition("=")
        if not eq:
            key, raw = _POSITIONAL.get(name, ""), part
            if not key:
                raise _bad(spec, f"{name} takes {_arg_list(defaults)}, written as name=value")
        key = key.strip()
        if key not in defaults:
            raise _bad(spec, f"{name} takes {_arg_list(defaults)}, not {key!r}")
        try:
            values[key] = float(raw)
        except ValueError:
            raise _bad(spec, f"{key} must be a number, not {raw.strip()!r}") from None
    if name == "random_uniform" and values["minval"] >= values["maxval"]:
        raise _bad(spec, "minval must be below maxval")
    if "stddev" in values and values["stddev"] <= 0:
        raise _bad(spec, "stddev must be positive")
    return InitSpec(name, tuple(values.items()))


def _arg_list(defaults: dict[str, float]) -> str:
    return ", ".join(defaults) if defaults else "no arguments"


def parse_plan(specs: Sequence[str] | None) -> InitPlan:
    """`--init SPEC` (every variable) or `--init kernel=SPEC --init bias=SPEC`; unset roles keep the default."""
    if not specs:
        return DEFAULT_PLAN
    chosen: dict[str, InitSpec] = {}
    for raw in specs:
        role, eq, rest = raw.partition("=")
        if eq and role.strip() in VARIABLE_ROLES:
            role = role.strip()
            if role in chosen:
                raise UsageError(f"--init {role}= given twice", hint=f"one --init {role}=SPEC at most")
            chosen[role] = parse_spec(rest)
        else:
            if chosen or len(specs) > 1:
                raise UsageError(
                    f"--init {raw!r}: give one SPEC for all variables, or kernel=SPEC and bias=SPEC",
                    hint="e.g. --init constant:0.5, or --init kernel=glorot_uniform --init bias=zeros",
                )
            spec = parse_spec(raw)
            chosen = {"kernel": spec, "bias": spec}
    plan = InitPlan(kernel=chosen.get("kernel", DEFAULT_PLAN.kernel), bias=chosen.get("bias", DEFAULT_PLAN.bias))
    if plan.bias.name in MATRIX_ONLY:
        raise UsageError(
            f"{plan.bias.name} is defined only for matrices; a bias is a vector",
            hint=f"--init kernel={plan.bias.text()} --init bias=zeros",
        )
    return plan
