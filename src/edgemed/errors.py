"""The error family. Every message says what happened and what to do next."""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BackendError",
    "CompatibilityError",
    "EdgemedWarning",
    "ConfigError",
    "EdgemedError",
    "InputError",
    "MissingDependencyError",
    "OutputError",
    "ParityError",
]


class EdgemedError(Exception):
    """Base class of every error edgemed raises on purpose."""


class ConfigError(EdgemedError, ValueError):
    """A configuration value, recipe key or CLI flag is invalid."""


class InputError(EdgemedError, ValueError):
    """An input file (scan, label map, DICOM series) is missing, corrupt or inconsistent."""


class ArtifactError(EdgemedError):
    """An artifact directory is missing files, altered, or of the wrong kind or schema."""


class OutputError(EdgemedError):
    """An output cannot be written where it was asked for: the path holds something edgemed must not
    replace, or the file system refused (full, read-only, no permission, name too long...).

    Attributes:
        path: The output path the message names.
    """

    def __init__(self, message: str, *, path: object = None) -> None:
        super().__init__(message)
        self.path = path


class CompatibilityError(EdgemedError):
    """An artifact does not fit this host (GPU, TensorRT version, backend)."""


class ParityError(EdgemedError):
    """Two implementations of the same model disagree beyond tolerance."""


class BackendError(EdgemedError):
    """An inference backend failed to load or run a model."""


class MissingDependencyError(EdgemedError, ImportError):
    """An optional dependency needed for this operation is not installed."""


class EdgemedWarning(UserWarning):
    """Something works but the user should know it may not mean what it seems (shown by the CLI)."""
