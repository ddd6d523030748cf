"""Typed artifacts at stage boundaries: directories with a manifest.json (stdlib + numpy only).

Each kind has one class that opens it (checking kind, schema and every file's sha256) and one
typed metadata record parsed once at load: `StudentCheckpoint.meta` is a `StudentMeta`,
`OnnxBundle.meta` a `BundleMeta`, `EngineBundle.meta` an `EngineMeta`. Writers build those
records and call `write_artifact(..., metadata=record.to_json())`; nobody else touches the JSON.
"""

from edgemed._atomic import atomic_dir, atomic_file, atomic_files
from edgemed.artifacts._archive import extract_artifact, pack_artifact
from edgemed.artifacts._bundle import (BUNDLE_KIND, BUNDLE_SCHEMA, ENGINE_FILE, ENGINE_KIND, ENGINE_SCHEMA, MODEL_FILE,
                                       EngineBundle, OnnxBundle, open_bundle)
from edgemed.artifacts._manifest import (MANIFEST, Manifest, combined_sha256, read_manifest, read_payload, sha256_file,
                                         write_artifact)
from edgemed.artifacts._output import check_output, check_output_file, output_kind
from edgemed.artifacts._records import (BundleMeta, EngineBuild, EngineMeta, QCRecord, Record, ShardEntry, ShardRecord,
                                        StoreHeader, StudentMeta, StudentSummary, TeacherStoreIndex, TrainingRecord,
                                        ValidationRecord)
from edgemed.artifacts._signing import (
    SIGNATURE,
    TRUSTED_KEYS_ENV,
    Verification,
    generate_keypair,
    load_public_keys,
    sign_artifact,
    verify_artifact,
)
from edgemed.artifacts._specs import Dim, OrganChannel, PostprocessSpec, PreprocessSpec, TensorSpec
from edgemed.artifacts._student import STUDENT_KIND, STUDENT_SCHEMA, StudentCheckpoint

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_SCHEMA",
    "ENGINE_FILE",
    "ENGINE_KIND",
    "ENGINE_SCHEMA",
    "MANIFEST",
    "MODEL_FILE",
    "SIGNATURE",
    "STUDENT_KIND",
    "STUDENT_SCHEMA",
    "TRUSTED_KEYS_ENV",
    "BundleMeta",
    "Dim",
    "EngineBuild",
    "EngineBundle",
    "EngineMeta",
    "Manifest",
    "OnnxBundle",
    "OrganChannel",
    "PostprocessSpec",
    "PreprocessSpec",
    "QCRecord",
    "Record",
    "ShardEntry",
    "ShardRecord",
    "StoreHeader",
    "StudentCheckpoint",
    "StudentMeta",
    "StudentSummary",
    "TeacherStoreIndex",
    "TensorSpec",
    "TrainingRecord",
    "ValidationRecord",
    "Verification",
    "atomic_dir",
    "atomic_file",
    "atomic_files",
    "check_output",
    "check_output_file",
    "combined_sha256",
    "extract_artifact",
    "generate_keypair",
    "load_public_keys",
    "open_bundle",
    "output_kind",
    "pack_artifact",
    "read_manifest",
    "read_payload",
    "sha256_file",
    "sign_artifact",
    "verify_artifact",
    "write_artifact",
]
