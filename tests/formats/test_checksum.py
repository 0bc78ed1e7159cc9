"""The crc32c ckptcheck loads without the package's slow __init__ is the package's own function."""

from __future__ import annotations

import subprocess
import sys

import crc32c as package
import pytest

from ckptcheck.formats.tensorflow import checksum

SAMPLES = [b"", b"a", b"123456789", bytes(range(256)) * 300, memoryview(bytearray(b"\xff" * 70_000))[3:]]


@pytest.mark.parametrize("data", SAMPLES, ids=lambda d: f"{len(d)}-bytes")
def test_same_function_as_the_package(data: bytes) -> None:
    assert checksum.crc32c(data) == package.crc32c(data)
    assert checksum.crc32c(data, 12345) == package.crc32c(data, value=12345)
    half = len(data) // 2
    assert checksum.crc32c(data[half:], checksum.crc32c(data[:half])) == package.crc32c(data)


def test_known_value() -> None:
    assert checksum.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_extension_is_loaded_directly_and_the_fallback_works(monkeypatch: pytest.MonkeyPatch) -> None:
    code = ("import sys; from ckptcheck.formats.tensorflow.checksum import crc32c; "
            "print(crc32c(b'123456789'), 'crc32c' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(0xE3069283), "False"]  # the package's __init__ (and its metadata lookup) never ran
    monkeypatch.setattr(checksum, "_load_extension", lambda: None)
    assert checksum._crc32c_function()(b"123456789") == 0xE3069283
