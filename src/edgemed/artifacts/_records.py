"""Typed manifest metadata: one dataclass per artifact kind, parsed once at load (stdlib + numpy only).

Every artifact's `manifest.json` carries a `metadata` block. Code outside `edgemed.artifacts`
reads it through these records (`ckpt.meta.validation.dice`, `bundle.meta.quantization`), never
as raw dicts. Keys a record does not model stay in its `extra` and are written back unchanged, so
a bundle written by another edgemed version round-trips byte for byte in content.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, TypeVar

from edgemed.artifacts._specs import OrganChannel, PostprocessSpec, PreprocessSpec, TensorSpec
from edgemed.errors import ArtifactError, ConfigError

__all__ = ["BundleMeta", "EngineBuild", "EngineMeta", "QCRecord", "Record", "ShardEntry", "ShardRecord", "StoreHeader",
           "StudentMeta", "StudentSummary", "TeacherStoreIndex", "TrainingRecord", "ValidationRecord"]

R = TypeVar("R", bound="Record")


def _codec(parse: Callable[[Any], Any], dump: Callable[[Any], Any], **kw: Any) -> Any:
    """A dataclass field converted by `parse` when read from JSON and by `dump` when written."""
    return field(metadata={"parse": parse, "dump": dump}, **kw)


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object, got {type(value).__name__}")
    return dict(value)


def _opt_dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else _dict(value)


def _same(value: Any) -> Any:
    return value


def _float_map(value: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in _dict(value).items()}


def _organs(value: Any) -> tuple[OrganChannel, ...]:
    return tuple(OrganChannel(int(o["channel"]), int(o["label_id"]), str(o["name"])) for o in value)


def _tensors(value: Any) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec.from_json(t) for t in value)


def _dump_list(value: Any) -> list[Any]:
    return [v.to_json() for v in value]


class Record:
    """Base of the typed metadata records: `from_json` parses, `to_json` writes, `extra` keeps the rest.

    Subclasses are frozen dataclasses whose last field is `extra: dict`. A field declared with a
    codec is converted both ways; a plain field is read as it is in the JSON.
    """

    extra: dict[str, Any]
    # Optional fields written as null rather than left out when unset (readers tell "none" from "unknown").
    _KEEP_NONE: tuple[str, ...] = ()

    @classmethod
    def from_json(cls: type[R], raw: Any) -> R:
        """Parse a metadata block.

        Raises:
            ArtifactError: A required key is missing or a value has the wrong form (names the key).
        """
        if not isinstance(raw, Mapping):
            raise ArtifactError(f"{cls.__name__}: expected a JSON object, got {type(raw).__name__}.")
        kwargs: dict[str, Any] = {}
        known = set()
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            known.add(f.name)
            if f.name not in raw:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise ArtifactError(f"{cls.__name__}: the metadata lacks {f.name!r}.")
                continue
            value = raw[f.name]
            try:
                kwargs[f.name] = value if value is None else f.metadata.get("parse", _same)(value)
            except (ArtifactError, ConfigError, KeyError, TypeError, ValueError, AttributeError, IndexError,
                    OverflowError) as err:
                raise ArtifactError(f"{cls.__name__}: the {f.name!r} record is malformed "
                                    f"({type(err).__name__}: {err}).") from err
        return cls(**kwargs, extra={k: v for k, v in raw.items() if k not in known})  # type: ignore[call-arg]

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready metadata block (unset optional fields left out, `extra` merged back)."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                if f.name in self._KEEP_NONE or (f.default is MISSING and f.default_factory is MISSING):
                    out[f.name] = None
                continue
            out[f.name] = f.metadata.get("dump", _same)(value)
        return {**out, **self.extra}

    def with_(self: R, **changes: Any) -> R:
        """A copy with `changes` applied (records are frozen)."""
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True, kw_only=True)
class ValidationRecord(Record):
    """How a student scored against its teacher on data it was not trained on.

    Attributes:
        dice: Organ → Dice vs the teacher on the held-out part.
        holdout: How the held-out part was chosen, in words.
        holdout_kind: "scans" (whole scans, the fair case) or "slices" (a block of the one scan).
        per_scan: Per held-out scan: name, held-out slice range, whole_scan, dice.
    """

    dice: dict[str, float] = _codec(_float_map, dict, default_factory=dict)
    holdout: str | None = None
    holdout_kind: str | None = None
    per_scan: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TrainingRecord(Record):
    """How a student was trained (or pooled, for an ensemble).

    Attributes:
        epochs, members, seconds, seed: The run; seconds is wall time of training.
        parameters: Trainable parameters of the network written.
        member_seeds, member_validation: For pooled ensembles, each member's seed and Dice.
    """

    epochs: int | None = None
    members: int | None = None
    seconds: float | None = None
    seed: int | None = None
    parameters: int | None = None
    member_seeds: list[Any] | None = None
    member_validation: list[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class QCRecord(Record):
    """The runtime quality control's reference ranges, measured at distill time (`edgemed.runtime` QC).

    Written by distillation after training (or `edgemed.compress.calibrate_qc` for an older
    student), carried by export and quantize into the bundle. A bundle without one loads, and its
    QC reports "not calibrated" instead of guessing.

    Attributes:
        method: How the ranges were obtained, in words (scans, teacher, held-out part, perturbations).
        scans: The scans they were measured on.
        samples: (Perturbed) held-out and training slice sets the score model was fitted on.
        spacing_mm: {"inplane": [lo, hi], "thickness": [lo, hi]} of the training scans.
        intensity: The training scans' intensity facts: {"modality", "fractions": {band: share}}.
        organs: Organ name → {"volume_ml": [lo, hi], "components": n, "largest_share": s,
            "side": signed offset from the body's midline (share of its half-width; + = patient's
            right), "ap": the same front-back, "z_extent_mm": craniocaudal extent, "confidence":
            the student's clean held-out mean max-probability, entropy, boundary confidence}.
        score: The Dice estimator: {"features": [names], "weights": [..], "intercept": b,
            "fit": {"samples", "rmse", "spearman"}}; score = sigmoid(intercept + weights · features).
        thresholds: {"warn_below": s, "fail_below": s}: scores under which the verdict is warn / fail.
    """

    method: str = _codec(str, str)
    scans: list[str] = _codec(list, list, default_factory=list)
    samples: int = _codec(int, int, default=0)
    spacing_mm: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    intensity: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    organs: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    score: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    thresholds: dict[str, float] = _codec(_float_map, dict, default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StudentMeta(Record):
    """The metadata of a student checkpoint (written by distill, prune and ensemble).

    Attributes:
        organs: Output channels 1.. and the organs they segment.
        label_map: The teacher's label map {"name", "labels"}.
        preprocess, postprocess: What the runtime applies.
        teacher: The teacher's identity (lineage).
        validation, training: See `ValidationRecord`, `TrainingRecord`.
        pruning: The pruning record, for a pruned student.
        init: The checkpoint a fine-tune started from (digest, pruning).
        qc: The runtime QC's reference ranges (`QCRecord`); None for students distilled before QC.
    """

    organs: tuple[OrganChannel, ...] = _codec(_organs, _dump_list)
    label_map: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    preprocess: PreprocessSpec = _codec(PreprocessSpec.from_json, PreprocessSpec.to_json)
    postprocess: PostprocessSpec = _codec(PostprocessSpec.from_json, PostprocessSpec.to_json,
                                          default_factory=PostprocessSpec)
    teacher: Any = None
    scans: list[str] | None = None
    recipe: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    validation: ValidationRecord = _codec(ValidationRecord.from_json, ValidationRecord.to_json,
                                          default_factory=ValidationRecord)
    training: TrainingRecord = _codec(TrainingRecord.from_json, TrainingRecord.to_json, default_factory=TrainingRecord)
    init: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    pruning: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    qc: QCRecord | None = _codec(QCRecord.from_json, QCRecord.to_json, default=None)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label_map_name(self) -> str:
        """The label map's name, e.g. "totalsegmentator" ("" when not recorded)."""
        return str(self.label_map.get("name", ""))


@dataclass(frozen=True, kw_only=True)
class StudentSummary(Record):
    """What a bundle records of the student it was exported from."""

    digest: str | None = None
    arch: str | None = None
    architecture: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    parameters: int | None = None
    validation_dice: dict[str, float] = _codec(_float_map, dict, default_factory=dict)
    teacher: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    _KEEP_NONE = ("digest", "arch", "architecture", "parameters", "teacher")


def _precision(value: Any) -> str:
    value = str(value)
    if value not in ("fp32", "fp16", "int8", "bf16", "tf32"):
        raise ValueError(f"precision {value!r} is not one of fp32, fp16, int8")
    return value


def _model_file(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"model must be a file name, got {type(value).__name__}")
    return value


@dataclass(frozen=True, kw_only=True)
class BundleMeta(Record):
    """The metadata of an ONNX bundle (written by export, quantize and the gate's variants).

    Attributes:
        format: "onnx".
        model: The model file inside the bundle.
        precision: "fp32", "fp16" or "int8".
        inputs, outputs: The model's tensors.
        preprocess, postprocess, organs, label_map: How the runtime uses it.
        parity: The export's parity record (torch vs ONNX Runtime).
        student: The student it was exported from.
        quantization: The quantization record (what was tried, Dice, latency, why kept).
        preferred_backend: The backend its model was measured fastest on ("auto" picks it).
        variant: For bundles made by the gate's test variants (slower, biased).
        qc: The runtime QC's reference ranges from the student (`QCRecord`); None: not calibrated.
    """

    format: str = "onnx"
    model: str = _codec(_model_file, str)
    precision: str = _codec(_precision, str)
    opset: int | None = _codec(int, int, default=None)
    inputs: tuple[TensorSpec, ...] = _codec(_tensors, _dump_list)
    outputs: tuple[TensorSpec, ...] = _codec(_tensors, _dump_list)
    preprocess: PreprocessSpec = _codec(PreprocessSpec.from_json, PreprocessSpec.to_json)
    postprocess: PostprocessSpec = _codec(PostprocessSpec.from_json, PostprocessSpec.to_json,
                                          default_factory=PostprocessSpec)
    organs: tuple[OrganChannel, ...] = _codec(_organs, _dump_list)
    label_map: str = _codec(str, str, default="")
    parity: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    student: StudentSummary = _codec(StudentSummary.from_json, StudentSummary.to_json, default_factory=StudentSummary)
    export: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    quantization: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    preferred_backend: str | None = None
    variant: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    qc: QCRecord | None = _codec(QCRecord.from_json, QCRecord.to_json, default=None)
    extra: dict[str, Any] = field(default_factory=dict)

    def runtime_json(self) -> dict[str, Any]:
        """The records a TensorRT engine copies from its ONNX parent, so the runtime uses it the same way."""
        full = self.to_json()
        return {k: full[k] for k in ("inputs", "outputs", "preprocess", "postprocess", "organs", "label_map",
                                     "student", "qc") if k in full}


def _cc(value: Any) -> tuple[int, int]:
    return (int(value[0]), int(value[1]))


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, kw_only=True)
class EngineBuild(Record):
    """What the runtime checks of an engine before deserializing it: the build's versions and GPU.

    Attributes:
        tensorrt_version: The TensorRT that built it, e.g. "10.3.0.30".
        compute_capability: The GPU it was built on, e.g. (8, 7).
        version_compatible: Built with TensorRT's version-compatible flag (runs on later TensorRT).
        hardware_compatibility: "none" or "ampere_plus" (runs on any Ampere or later GPU).
        dla_core: The DLA core it was built for, or None (GPU).
        precision_requested: The precision asked for (for the rebuild command).
        onnx_bundle: The ONNX bundle it was built from (digest, path, precision, opset, parity).
    """

    tensorrt_version: str = _codec(str, str)
    compute_capability: tuple[int, int] = _codec(_cc, list)
    gpu_name: str | None = None
    version_compatible: bool = _codec(bool, bool, default=False)
    hardware_compatibility: str = _codec(str, str, default="none")
    dla_core: int | None = _codec(_opt_int, int, default=None)
    precision_requested: str | None = None
    onnx_bundle: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EngineMeta(BundleMeta):
    """The metadata of a TensorRT engine bundle (written by `edgemed.export.build_engine`).

    It carries its ONNX parent's inputs, outputs, preprocessing, organs and label map, plus the
    build: TensorRT/CUDA versions, the GPU, precision asked for and built, the fallback taken.
    """

    format: str = "tensorrt"
    tensorrt_version: str = _codec(str, str)
    compute_capability: tuple[int, int] = _codec(_cc, list)
    shape_profiles: dict[str, Any] = _codec(_dict, dict)
    precision_requested: str | None = None
    precision_built: str | None = None
    fallback: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    gpu_name: str | None = None
    cuda_version: Any = None
    layer_precision_counts: dict[str, int] = _codec(_dict, dict, default_factory=dict)
    build_seconds: float | None = None
    timing_cache: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    _KEEP_NONE = ("fallback", "cuda_version", "gpu_name", "timing_cache")

    @property
    def build(self) -> EngineBuild:
        """The build facts the runtime checks against the local GPU before deserializing."""
        return EngineBuild.from_json(self.to_json())


def _store_organs(value: Any) -> tuple[tuple[int, str], ...]:
    return tuple((int(o["label_id"]), str(o["name"])) for o in value)


def _dump_store_organs(value: Any) -> list[dict[str, Any]]:
    return [{"label_id": i, "name": n} for i, n in value]


@dataclass(frozen=True, kw_only=True)
class StoreHeader(Record):
    """What a teacher store was filled with; a store holds one teacher's outputs for one set of organs.

    Attributes:
        organs: (label id, name) of each stored organ, in channel order.
        label_map: The label map's name.
        temperature: KD temperature the probabilities are stored at.
        dtype: "float16" or "uint8".
        teacher: The teacher's identity.
    """

    organs: tuple[tuple[int, str], ...] = _codec(_store_organs, _dump_store_organs)
    label_map: str = _codec(str, str)
    temperature: float = _codec(float, float)
    dtype: str = _codec(str, str)
    teacher: dict[str, Any] = _codec(_dict, dict, default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ShardEntry(Record):
    """One scan's shard in a teacher store (its index entry; the shard's own record adds the header)."""

    scan: str = _codec(str, str)
    scan_sha256: str = _codec(str, str)
    shape: tuple[int, ...] = _codec(lambda v: tuple(int(d) for d in v), list)
    soft: bool = _codec(bool, bool)
    shard: str = _codec(str, str)
    shard_sha256: str = _codec(str, str)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ShardRecord(ShardEntry):
    """A shard's own record beside its .npz: the entry plus the header it was computed under."""

    header: StoreHeader = _codec(StoreHeader.from_json, StoreHeader.to_json)
    organs: list[dict[str, Any]] | None = None
    dtype: str | None = None
    computed_by_rank: int | None = None
    _KEEP_NONE = ("dtype",)

    def entry(self) -> ShardEntry:
        """The index entry of this shard."""
        return ShardEntry(scan=self.scan, scan_sha256=self.scan_sha256, shape=self.shape, soft=self.soft,
                          shard=self.shard, shard_sha256=self.shard_sha256)


@dataclass(frozen=True, kw_only=True)
class TeacherStoreIndex(Record):
    """A teacher store's store.json: its header and one entry per scan."""

    kind: str = "teacher_store"
    schema: int = _codec(int, int)
    header: StoreHeader = _codec(StoreHeader.from_json, StoreHeader.to_json)
    shards: tuple[ShardEntry, ...] = _codec(lambda v: tuple(ShardEntry.from_json(e) for e in v), _dump_list)
    last_run: dict[str, Any] | None = _codec(_opt_dict, dict, default=None)
    extra: dict[str, Any] = field(default_factory=dict)
