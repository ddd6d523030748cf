"""The bundle artifacts: a model file plus everything the runtime needs to use it (stdlib + numpy).

Written by `edgemed.export.to_onnx` (ONNX) and `edgemed.export.build_engine` (TensorRT), read
here so device software reads bundles without export (or torch) installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgemed.artifacts._manifest import Manifest, read_manifest
from edgemed.artifacts._records import BundleMeta, EngineMeta
from edgemed.artifacts._specs import SpecsFromMeta, TensorSpec
from edgemed.errors import ArtifactError

__all__ = ["BUNDLE_KIND", "BUNDLE_SCHEMA", "ENGINE_FILE", "ENGINE_KIND", "ENGINE_SCHEMA", "MODEL_FILE", "EngineBundle",
           "OnnxBundle", "open_bundle"]

BUNDLE_KIND = "bundle"
BUNDLE_SCHEMA = 1
MODEL_FILE = "model.onnx"
ENGINE_KIND = "engine"
ENGINE_SCHEMA = 1
ENGINE_FILE = "model.engine"


@dataclass(frozen=True)
class OnnxBundle(SpecsFromMeta):
    """An exported model with its preprocessing, labels, parity record and lineage.

    Example:
        >>> bundle = OnnxBundle.load("out/liver.edgemed")
        >>> bundle.inputs[0]
        TensorSpec(name='image', dtype='float32', shape=('batch', 3, 'height', 'width'))
        >>> bundle.parity["max_abs_logit_diff"] < 1e-3
        True
    """

    path: Path
    manifest: Manifest
    meta: BundleMeta = field(init=False, repr=False)

    KIND: ClassVar[str] = BUNDLE_KIND
    SCHEMAS: ClassVar[tuple[int, ...]] = (BUNDLE_SCHEMA,)
    META: ClassVar[type[BundleMeta]] = BundleMeta
    _REMEDY: ClassVar[str] = "re-export the bundle with edgemed export"

    def __post_init__(self) -> None:
        # Parse every record once, so a malformed one fails here with one clear message, not later.
        try:
            meta = self.META.from_json(self.manifest.metadata)
        except ArtifactError as err:
            raise ArtifactError(f"{self.path}: {err} {self._REMEDY[0].upper()}{self._REMEDY[1:]}.") from err
        object.__setattr__(self, "meta", meta)
        if meta.model not in self.manifest.files:
            raise ArtifactError(f"{self.path}: the model file {meta.model!r} is not among the hashed files; "
                                f"{self._REMEDY}.")
        if len(meta.inputs) != 1 or len(meta.outputs) != 1:
            raise ArtifactError(f"{self.path}: a segmentation bundle has one input and one output, this one has "
                                f"{len(meta.inputs)} and {len(meta.outputs)}.")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> "OnnxBundle":
        """Open a bundle directory, checking kind, schema, the sha256 of every file and the metadata.

        Raises:
            ArtifactError: Not a bundle, a missing or altered file, or incomplete metadata.
        """
        root = Path(path)
        return cls(root, read_manifest(root, kind=cls.KIND, schema_versions=cls.SCHEMAS, verify=verify))

    @classmethod
    def from_manifest(cls, path: str | os.PathLike[str], manifest: Manifest) -> "OnnxBundle":
        """A bundle from a manifest already read and checked (e.g. the exact bytes a signature covered)."""
        if manifest.kind != cls.KIND or manifest.schema_version not in cls.SCHEMAS:
            raise ArtifactError(f"{path} is a {manifest.kind!r} artifact (schema {manifest.schema_version}), but a "
                                f"{cls.KIND!r} artifact is needed here.")
        return cls(Path(path), manifest)

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest's raw metadata block (edgemed itself reads the typed `meta`)."""
        return dict(self.manifest.metadata)

    @property
    def model_path(self) -> Path:
        """The model file inside the bundle (verified at load)."""
        return self.path / self.meta.model

    @property
    def format(self) -> str:
        """The model format: "onnx"."""
        return self.meta.format

    @property
    def precision(self) -> str:
        """"fp32", "fp16" or "int8"."""
        return self.meta.precision

    @property
    def opset(self) -> int | None:
        """The ONNX opset of the default domain."""
        return self.meta.opset

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs (one: the 2.5D slice stack)."""
        return self.meta.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs (one: per-class logits)."""
        return self.meta.outputs

    @property
    def label_map(self) -> str:
        """The name of the label map the organ ids come from, e.g. "totalsegmentator"."""
        return self.meta.label_map

    @property
    def parity(self) -> dict[str, Any]:
        """The parity record of the export (max |Δlogit|, mask Dice per organ, tolerances)."""
        return dict(self.meta.parity)

    @property
    def validation_dice(self) -> dict[str, float]:
        """The student's held-out Dice vs its teacher, per organ, as recorded at distillation."""
        return dict(self.meta.student.validation_dice)


@dataclass(frozen=True)
class EngineBundle(OnnxBundle):
    """A TensorRT engine built from an ONNX bundle (by `edgemed.export.build_engine`).

    It carries a copy of its parent's inputs, outputs, preprocessing, postprocessing, organs and
    label map, so the runtime segments with it exactly as with the ONNX bundle; it runs only on
    the "trt" backend, on the GPU (and TensorRT version) it was built for.

    Example:
        >>> engine = EngineBundle.load("out/liver-orin.engine.d")
        >>> engine.tensorrt_version, engine.compute_capability, engine.precision
        ('10.3.0', (8, 7), 'fp16')
    """

    meta: EngineMeta = field(init=False, repr=False)

    KIND: ClassVar[str] = ENGINE_KIND
    SCHEMAS: ClassVar[tuple[int, ...]] = (ENGINE_SCHEMA,)
    META: ClassVar[type[BundleMeta]] = EngineMeta
    _REMEDY: ClassVar[str] = "rebuild it with edgemed build"

    @property
    def precision(self) -> str:
        """The precision the engine was built in ("precision_built"; may differ from the one asked for
        when a fallback was allowed, see `meta.fallback`)."""
        return self.meta.precision

    @property
    def tensorrt_version(self) -> str:
        """The TensorRT that built the engine, e.g. "10.3.0"."""
        return self.meta.tensorrt_version

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """The compute capability of the GPU it was built on, e.g. (8, 7)."""
        return self.meta.compute_capability


def open_bundle(path: str | os.PathLike[str], *, verify: bool = True, manifest: Manifest | None = None) -> OnnxBundle:
    """Open an ONNX bundle or an engine bundle, whichever `path` holds (sha256 of every file checked).

    Args:
        verify: Check every file's sha256 (off only right after `verify_artifact` did).
        manifest: A manifest already read and checked (`verify_artifact(...).manifest`): the bundle
            is built from that copy and manifest.json is not read again.

    Raises:
        ArtifactError: Neither kind, or a missing or altered file.
    """
    kind = (manifest or read_manifest(path, verify=False)).kind
    if kind not in (BUNDLE_KIND, ENGINE_KIND):
        raise ArtifactError(f"{path} is a {kind!r} artifact, but a 'bundle' artifact is needed here; "
                            "export one with edgemed export.")
    cls = EngineBundle if kind == ENGINE_KIND else OnnxBundle
    return cls.load(path, verify=verify) if manifest is None else cls.from_manifest(path, manifest)
