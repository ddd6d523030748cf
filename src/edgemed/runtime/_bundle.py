"""The bundle artifact: a model file plus everything the runtime needs to use it (stdlib + numpy).

Written by `edgemed.export.to_onnx`, read here so device software reads bundles without export
(or torch) installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from edgemed.artifacts import Manifest, SpecsFromMetadata, read_manifest
from edgemed.errors import ArtifactError, ConfigError
from edgemed.runtime._types import TensorSpec

__all__ = ["BUNDLE_KIND", "BUNDLE_SCHEMA", "ENGINE_FILE", "ENGINE_KIND", "ENGINE_SCHEMA", "MODEL_FILE", "EngineBundle",
           "OnnxBundle", "open_bundle"]

BUNDLE_KIND = "bundle"
BUNDLE_SCHEMA = 1
MODEL_FILE = "model.onnx"
ENGINE_KIND = "engine"
ENGINE_SCHEMA = 1
ENGINE_FILE = "model.engine"


@dataclass(frozen=True)
class OnnxBundle(SpecsFromMetadata):
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

    KIND: ClassVar[str] = BUNDLE_KIND
    SCHEMAS: ClassVar[tuple[int, ...]] = (BUNDLE_SCHEMA,)
    _REMEDY: ClassVar[str] = "re-export the bundle with edgemed export"
    _PARSED: ClassVar[tuple[str, ...]] = ("preprocess", "postprocess", "organs", "inputs", "outputs", "precision",
                                          "opset", "label_map", "parity", "validation_dice", "format")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify: bool = True) -> "OnnxBundle":
        """Open a bundle directory, checking kind, schema, the sha256 of every file and the metadata.

        Raises:
            ArtifactError: Not a bundle, a missing or altered file, or incomplete metadata.
        """
        root = Path(path)
        bundle = cls(root, read_manifest(root, kind=cls.KIND, schema_versions=cls.SCHEMAS, verify=verify))
        meta = bundle.manifest.metadata
        missing = [k for k in ("model", "inputs", "outputs", "preprocess", "organs", "precision") if k not in meta]
        if missing:
            raise ArtifactError(f"{root}: manifest metadata lacks {missing}; {cls._REMEDY}.")
        if not isinstance(meta["model"], str) or meta["model"] not in bundle.manifest.files:
            raise ArtifactError(f"{root}: the model file {meta['model']!r} is not among the hashed files; "
                                f"{cls._REMEDY}.")
        try:
            # Parse every record once, so a malformed one fails here with one clear message, not later.
            for name in cls._PARSED:
                getattr(bundle, name)
        except (ConfigError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
            raise ArtifactError(f"{root}: the manifest's {name} record is malformed ({type(err).__name__}: {err}); "
                                f"{cls._REMEDY}.") from err
        if len(bundle.inputs) != 1 or len(bundle.outputs) != 1:
            raise ArtifactError(f"{root}: a segmentation bundle has one input and one output, this one has "
                                f"{len(bundle.inputs)} and {len(bundle.outputs)}.")
        return bundle

    @property
    def metadata(self) -> dict[str, Any]:
        """The manifest's metadata block."""
        return dict(self.manifest.metadata)

    @property
    def model_path(self) -> Path:
        """The model file inside the bundle (verified at load)."""
        return self.path / str(self.metadata["model"])

    @property
    def format(self) -> str:
        """The model format: "onnx"."""
        return str(self.metadata.get("format", "onnx"))

    @property
    def precision(self) -> str:
        """"fp32", "fp16" or "int8"."""
        return str(self.metadata["precision"])

    @property
    def opset(self) -> int | None:
        """The ONNX opset of the default domain."""
        value = self.metadata.get("opset")
        return None if value is None else int(value)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs (one: the 2.5D slice stack)."""
        return tuple(TensorSpec.from_json(t) for t in self.metadata["inputs"])

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs (one: per-class logits)."""
        return tuple(TensorSpec.from_json(t) for t in self.metadata["outputs"])

    @property
    def label_map(self) -> str:
        """The name of the label map the organ ids come from, e.g. "totalsegmentator"."""
        return str(self.metadata.get("label_map", ""))

    @property
    def parity(self) -> dict[str, Any]:
        """The parity record of the export (max |Δlogit|, mask Dice per organ, tolerances)."""
        return dict(self.metadata.get("parity", {}))

    @property
    def validation_dice(self) -> dict[str, float]:
        """The student's held-out Dice vs its teacher, per organ, as recorded at distillation."""
        return {k: float(v) for k, v in self.metadata.get("student", {}).get("validation_dice", {}).items()}


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

    KIND: ClassVar[str] = ENGINE_KIND
    SCHEMAS: ClassVar[tuple[int, ...]] = (ENGINE_SCHEMA,)
    _REMEDY: ClassVar[str] = "rebuild it with edgemed build"
    _PARSED: ClassVar[tuple[str, ...]] = (*OnnxBundle._PARSED, "tensorrt_version", "compute_capability")

    @property
    def format(self) -> str:
        """The model format: "tensorrt"."""
        return str(self.metadata.get("format", "tensorrt"))

    @property
    def precision(self) -> str:
        """The precision the engine was built in ("precision_built"; may differ from the one asked for
        when a fallback was allowed, see `metadata["fallback"]`)."""
        return str(self.metadata["precision"])

    @property
    def tensorrt_version(self) -> str:
        """The TensorRT that built the engine, e.g. "10.3.0"."""
        return str(self.metadata.get("tensorrt_version", ""))

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """The compute capability of the GPU it was built on, e.g. (8, 7)."""
        cc = self.metadata.get("compute_capability")
        return None if cc is None else (int(cc[0]), int(cc[1]))


def open_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> OnnxBundle:
    """Open an ONNX bundle or an engine bundle, whichever `path` holds (sha256 of every file checked).

    Args:
        verify: Check every file's sha256 (off only right after `verify_artifact` did).

    Raises:
        ArtifactError: Neither kind, or a missing or altered file.
    """
    kind = read_manifest(path, verify=False).kind
    if kind not in (BUNDLE_KIND, ENGINE_KIND):
        raise ArtifactError(f"{path} is a {kind!r} artifact, but a 'bundle' artifact is needed here; "
                            "export one with edgemed export.")
    return (EngineBundle if kind == ENGINE_KIND else OnnxBundle).load(path, verify=verify)
