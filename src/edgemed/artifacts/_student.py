"""The student checkpoint artifact: safetensors weights + architecture spec + manifest (no pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.artifacts._manifest import Manifest, read_manifest
from edgemed.artifacts._records import StudentMeta
from edgemed.artifacts._specs import SpecsFromMeta
from edgemed.errors import ArtifactError

__all__ = ["STUDENT_KIND", "STUDENT_SCHEMA", "StudentCheckpoint"]

STUDENT_KIND = "student"
STUDENT_SCHEMA = 1
WEIGHTS = "weights.safetensors"
ARCHITECTURE = "architecture.json"


@dataclass(frozen=True)
class StudentCheckpoint(SpecsFromMeta):
    """A distilled (or pruned) student on disk.

    Example:
        >>> ckpt = StudentCheckpoint.load("runs/liver")
        >>> ckpt.organs[0].name, ckpt.preprocess.spacing_mm
        ('liver', (3.0, 3.0))
    """

    path: Path
    manifest: Manifest
    meta: StudentMeta = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "meta", StudentMeta.from_json(self.manifest.metadata))
        except ArtifactError as err:
            raise ArtifactError(f"{self.path}: {err} Re-create the student (edgemed distill).") from err

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> "StudentCheckpoint":
        """Open a student directory, checking kind, schema and file hashes.

        Raises:
            ArtifactError: Not a student, or damaged.
        """
        root = Path(path)
        return cls(root, read_manifest(root, kind=STUDENT_KIND, verify=verify))

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest's raw metadata block (edgemed itself reads the typed `meta`)."""
        return dict(self.manifest.metadata)

    @property
    def architecture(self) -> dict[str, Any]:
        """The architecture spec (arch, in_channels, num_classes, kwargs)."""
        return json.loads((self.path / ARCHITECTURE).read_text())

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """The weights as numpy arrays (safetensors; no pickle, no torch needed)."""
        from safetensors.numpy import load_file

        try:
            return load_file(str(self.path / WEIGHTS))
        except (OSError, ValueError) as err:
            raise ArtifactError(f"{self.path / WEIGHTS} is not a readable safetensors file ({err}).") from err
