"""edgemed: shrink medical-imaging foundation models into fast organ-specific edge models.

Importing this package loads no torch; the stages live in subpackages
(`edgemed.io`, `edgemed.compress`, `edgemed.export`, `edgemed.runtime`, ...).
"""

from edgemed.errors import (
    ArtifactError,
    BackendError,
    CompatibilityError,
    ConfigError,
    EdgemedError,
    InputError,
    MissingDependencyError,
    ParityError,
)

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "BackendError",
    "CompatibilityError",
    "ConfigError",
    "EdgemedError",
    "InputError",
    "MissingDependencyError",
    "ParityError",
    "__version__",
]
