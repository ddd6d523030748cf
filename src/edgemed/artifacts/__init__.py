"""Typed artifacts at stage boundaries: directories with a manifest.json (stdlib + numpy only)."""

from edgemed._atomic import atomic_dir, atomic_file
from edgemed.artifacts._archive import extract_artifact, pack_artifact
from edgemed.artifacts._manifest import MANIFEST, Manifest, read_manifest, sha256_file, write_artifact
from edgemed.artifacts._signing import (
    SIGNATURE,
    TRUSTED_KEYS_ENV,
    Verification,
    generate_keypair,
    load_public_keys,
    sign_artifact,
    verify_artifact,
)
from edgemed.artifacts._specs import OrganChannel, PostprocessSpec, PreprocessSpec, SpecsFromMetadata
from edgemed.artifacts._student import STUDENT_KIND, StudentCheckpoint

__all__ = [
    "MANIFEST",
    "SIGNATURE",
    "STUDENT_KIND",
    "TRUSTED_KEYS_ENV",
    "Manifest",
    "OrganChannel",
    "PostprocessSpec",
    "PreprocessSpec",
    "SpecsFromMetadata",
    "StudentCheckpoint",
    "Verification",
    "atomic_dir",
    "atomic_file",
    "extract_artifact",
    "generate_keypair",
    "load_public_keys",
    "pack_artifact",
    "read_manifest",
    "sha256_file",
    "sign_artifact",
    "verify_artifact",
    "write_artifact",
]
