"""The Python API: a small, typed face (open, list, read, verify, diff, manifest) and nothing else."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import ckptcheck

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_only_the_api_is_public() -> None:
    # Importing the submodules must not replace the API's functions (a package attribute a submodule's name).
    import ckptcheck.diff
    import ckptcheck.manifest
    import ckptcheck.verify

    assert callable(ckptcheck.verify_checkpoint) and callable(ckptcheck.checkpoint_manifest)
    public = sorted(n for n in dir(ckptcheck) if not n.startswith("_"))
    assert public == sorted(n for n in ckptcheck.__all__ if not n.startswith("_"))
    for stray in ("Any", "TYPE_CHECKING", "annotations", "typing"):
        assert stray not in public
    for name in ("open_checkpoint", "list_tensors", "read_tensor", "verify_checkpoint", "diff_checkpoints",
                 "checkpoint_manifest"):
        function = getattr(ckptcheck, name)
        signature = inspect.signature(function)
        assert function.__doc__ and signature.return_annotation is not inspect.Signature.empty, name
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()), name
    for name in ("CheckpointInfo", "TensorInfo", "VerifyReport", "DiffReport", "CheckpointReader"):
        assert getattr(ckptcheck, name).__name__ == name


def test_verify_diff_and_manifest_as_the_commands_give_them(tmp_path: Path) -> None:
    fixture = FIXTURES / "tf2"
    golden = FIXTURES / "tf2.manifest.json"
    assert ckptcheck.verify_checkpoint(str(fixture)).ok
    assert ckptcheck.verify_checkpoint(str(fixture), against=str(golden)).ok
    assert ckptcheck.checkpoint_manifest(str(fixture)) == json.loads(golden.read_text())
    assert ckptcheck.diff_checkpoints(str(fixture), str(fixture)).same
    damaged = tmp_path / "tf2"
    shutil.copytree(fixture, damaged)
    shard = next(damaged.glob("*.data-*"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x40
    shard.write_bytes(bytes(data))
    report = ckptcheck.verify_checkpoint(str(damaged))
    assert not report.ok and report.problems[0].kind == "checksum"
    assert not ckptcheck.verify_checkpoint(str(fixture), against=str(golden), atol=0.0).differences
