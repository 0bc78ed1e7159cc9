"""Typed errors. The CLI turns each into one line on stderr and an exit code."""

from __future__ import annotations


class CkptcheckError(Exception):
    """Base class: something about the input or the request that ckptcheck cannot work with.

    ``path`` names the file at fault, ``tensor`` the tensor (when one is), ``hint`` what the user can try.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        tensor: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.tensor = tensor
        self.hint = hint

    def __str__(self) -> str:
        parts = []
        if self.path:
            parts.append(str(self.path))
        if self.tensor is not None:
            parts.append(f"tensor '{self.tensor}'")
        parts.append(self.message)
        text = ": ".join(parts)
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class CheckpointNotFoundError(CkptcheckError):
    """The path does not exist, or names no checkpoint ckptcheck can find."""


class UnsupportedFormatError(CkptcheckError):
    """The file exists but is not a checkpoint format ckptcheck reads."""


class NotRegularFileError(UnsupportedFormatError):
    """A path where a checkpoint file is expected is a FIFO, device, socket or directory: never read."""


class CorruptCheckpointError(CkptcheckError):
    """The checkpoint's structure or data is damaged (bad magic, checksum, truncation...)."""


class TensorNotFoundError(CkptcheckError):
    """A tensor name asked for is not in the checkpoint."""


class UsageError(CkptcheckError):
    """The command was called with options that do not fit together or do not apply."""


class RemoteError(CkptcheckError):
    """A URL could not be read: the store refused it (HTTP 403, another status), timed out, does not answer range
    requests, or no credentials were found. What is simply not there is CheckpointNotFoundError."""


class CkptcheckWarning(UserWarning):
    """Something the user should know that does not stop the command; the CLI prints it as a warning line."""


class RelocatedCheckpointWarning(CkptcheckWarning):
    """A ``checkpoint`` state file names an absolute path from where it was written (another machine, a bucket);
    the checkpoint beside the state file was read instead."""


class MissingDependencyError(CkptcheckError):
    """An optional dependency (TensorFlow) is needed for this command and is not installed."""
