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
