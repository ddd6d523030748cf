"""Typed artifacts at stage boundaries: directories with a manifest.json (stdlib + numpy only)."""

from edgemed.artifacts._manifest import MANIFEST, Manifest, read_manifest, sha256_file, write_artifact
from edgemed.artifacts._specs import OrganChannel, PostprocessSpec, PreprocessSpec, SpecsFromMetadata
from edgemed.artifacts._student import STUDENT_KIND, StudentCheckpoint

__all__ = [
    "MANIFEST",
    "STUDENT_KIND",
    "Manifest",
    "OrganChannel",
    "PostprocessSpec",
    "PreprocessSpec",
    "SpecsFromMetadata",
    "StudentCheckpoint",
    "read_manifest",
    "sha256_file",
    "write_artifact",
]
