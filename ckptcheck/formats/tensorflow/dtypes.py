"""TensorFlow's DataType enum (tensorflow/core/framework/types.proto) mapped to names and numpy dtypes.

Names are the ones ``tf.DType.name`` prints. bfloat16, float8 and 4/2-bit types come from ml_dtypes, the same
package TensorFlow and JAX use for them, so arrays read here compare equal to TensorFlow's.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # numpy is imported where values are read, not for listing
    import numpy as np


STRING = 7
VARIANT = 21


class DType(NamedTuple):  # a NamedTuple: defined at every start, where a frozen dataclass takes ~1 ms
    enum: int
    name: str
    itemsize: int  # bytes per element on disk; 0 for string and other variable-size types
    numpy_name: str | None  # numpy / ml_dtypes name, None when values cannot be read as an array

    @property
    def is_string(self) -> bool:
        return self.enum == STRING

    @property
    def is_variant(self) -> bool:
        """DT_VARIANT (a tf.data iterator's state, a TensorList...): each element is stored as its serialized
        VariantTensorDataProto, which is what ckptcheck reads as the element's value (bytes)."""
        return self.enum == VARIANT

    @property
    def is_bytes(self) -> bool:
        """Elements read as Python bytes in an object array (strings and variants), not as a numeric array."""
        return self.enum in (STRING, VARIANT)

    @property
    def readable(self) -> bool:
        return self.numpy_name is not None

    @property
    def numpy(self) -> np.dtype:
        return numpy_dtype(self.numpy_name or "")

    @property
    def kind(self) -> str:
        """'float', 'complex', 'int', 'bool', 'string' or 'other': what statistics make sense."""
        if self.is_string:
            return "string"
        if not self.readable:
            return "other"
        if self.name == "bool":
            return "bool"
        if self.name.startswith("complex"):
            return "complex"
        if self.name.startswith(("float", "bfloat", "half")):
            return "float"
        return "int"


_TABLE: list[tuple[int, str, int, str | None]] = [
    (1, "float32", 4, "float32"),
    (2, "float64", 8, "float64"),
    (3, "int32", 4, "int32"),
    (4, "uint8", 1, "uint8"),
    (5, "int16", 2, "int16"),
    (6, "int8", 1, "int8"),
    (7, "string", 0, "object"),
    (8, "complex64", 8, "complex64"),
    (9, "int64", 8, "int64"),
    (10, "bool", 1, "bool"),
    # Quantized types are stored as their underlying integers.
    (11, "qint8", 1, "int8"),
    (12, "quint8", 1, "uint8"),
    (13, "qint32", 4, "int32"),
    (14, "bfloat16", 2, "bfloat16"),
    (15, "qint16", 2, "int16"),
    (16, "quint16", 2, "uint16"),
    (17, "uint16", 2, "uint16"),
    (18, "complex128", 16, "complex128"),
    (19, "float16", 2, "float16"),
    (20, "resource", 0, None),
    (21, "variant", 0, None),
    (22, "uint32", 4, "uint32"),
    (23, "uint64", 8, "uint64"),
    (24, "float8_e5m2", 1, "float8_e5m2"),
    (25, "float8_e4m3fn", 1, "float8_e4m3fn"),
    (26, "float8_e4m3fnuz", 1, "float8_e4m3fnuz"),
    (27, "float8_e4m3b11fnuz", 1, "float8_e4m3b11fnuz"),
    (28, "float8_e5m2fnuz", 1, "float8_e5m2fnuz"),
    (29, "int4", 1, "int4"),
    (30, "uint4", 1, "uint4"),
    (31, "int2", 1, "int2"),
    (32, "uint2", 1, "uint2"),
]

BY_ENUM: dict[int, DType] = {e: DType(e, n, s, np_name) for e, n, s, np_name in _TABLE}
BY_NAME: dict[str, DType] = {d.name: d for d in BY_ENUM.values()}


def from_enum(enum: int) -> DType:
    """The DType for an enum value; reference types (enum + 100) are the same on disk."""
    if enum > 100:
        enum -= 100
    known = BY_ENUM.get(enum)
    if known is not None:
        return known
    return DType(enum, f"unknown_dtype_{enum}", 0, None)


_ML_DTYPES = {"bfloat16", "float8_e5m2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e4m3b11fnuz",
              "float8_e5m2fnuz", "int4", "uint4", "int2", "uint2"}


@cache
def numpy_dtype(name: str) -> np.dtype:
    import numpy as np

    if name in _ML_DTYPES:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))  # type: ignore[no-any-return]
    return np.dtype(name)


def from_numpy(dtype: np.dtype) -> DType | None:
    """The TensorFlow DType matching a numpy dtype (used to name HDF5 datasets' dtypes the same way)."""
    name = dtype.name
    if dtype.kind in "OSU":
        return BY_NAME["string"]
    if name == "float16":
        return BY_NAME["float16"]
    return BY_NAME.get(name)
