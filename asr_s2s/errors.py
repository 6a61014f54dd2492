"""The project's error types: every user-facing failure is one of these, with a one-line message."""

from __future__ import annotations

from pathlib import Path


class AsrError(Exception):
    """Base class for errors caused by user input (files, configs, options), not by bugs."""


class ConfigError(AsrError):
    """A configuration file or override is invalid."""


class AudioError(AsrError):
    """An audio file cannot be read or is unusable."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Pickled from worker processes: rebuild from the parts, not from the joined message.
        return type(self), (self.path, self.reason)


class ManifestError(AsrError):
    """A manifest file or one of its lines is invalid."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str, int | None]]:
        return type(self), (self.path, self.reason, self.line)


class CheckpointError(AsrError):
    """A checkpoint or model file is missing, corrupt or incompatible."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.path, self.reason)


class DeviceError(AsrError):
    """The requested device (``--device``) does not exist or cannot be used."""


class TrainingError(AsrError):
    """Training cannot continue (for example, too many non-finite losses in a row)."""
