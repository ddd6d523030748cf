"""Configs of the distillation stage (frozen dataclasses that validate themselves)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

from edgemed.artifacts import PostprocessSpec, PreprocessSpec
from edgemed.errors import ConfigError

__all__ = ["AugmentConfig", "DistillConfig", "config_from_dict"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AugmentConfig:
    """Training-time augmentation: scanner/contrast robustness without new labels.

    Attributes:
        prob: Probability that a slice is augmented at all.
        rotate_deg: Max in-plane rotation.
        scale: (min, max) zoom: body size, and a field of view wider or tighter than the scan's.
        aspect: Max relative change of width vs height (body habitus: broad or slim patients).
        elastic: Amplitude of a smooth random deformation, as a fraction of the slice size
            (organ shape varies between patients; one training scan shows only one shape).
        translate_frac: Max shift as a fraction of the slice size.
        intensity_scale: Max relative contrast change (windowed units).
        intensity_shift: Max brightness shift (windowed units; 0.05 ≈ 35 HU at the default window).
        gamma: (min, max) gamma on windowed intensities (contrast-phase-like changes).
        noise_std: Max Gaussian noise sigma (windowed units).
        organ_contrast: Max brightness change of the teacher's organ region alone (windowed
            units; 0.1 ≈ 70 HU at the default window): contrast phases enhance organs by
            different amounts (a liver is ~50 HU native, ~100 HU portal venous), and a student
            trained on one phase must not learn the organ's exact brightness.
        flip: Mirror left-right. Off by default: organs are lateralised (liver right, spleen left),
            and mirrored anatomy teaches the student that a liver may sit on the left.
        context_truncate: Probability that a slice's 2.5D context is cut short on each side by a
            random number of neighbours (repeating the last one kept), as the runtime feeds the
            first and last slices of a scan and every slice of a scan a few slices thick.
        context_flat: Probability that a slice's whole 2.5D context is replaced by the slice itself,
            which is what the runtime feeds for a scan one slice or a few thin slices thick. Off by
            default: it makes students consistent on their training scan's slices fed one at a
            time, yet it cost them 6-21 points on dcmqi's 3-slice CT (README "Thin scans").
    """

    prob: float = 0.8
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.65, 1.25)
    aspect: float = 0.2
    elastic: float = 0.06
    translate_frac: float = 0.05
    intensity_scale: float = 0.1
    intensity_shift: float = 0.05
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.03
    organ_contrast: float = 0.1
    flip: bool = False
    context_truncate: float = 0.25
    context_flat: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "gamma", tuple(float(v) for v in self.gamma))
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"augment.prob={self.prob} must be in [0, 1].")
        if not 0.0 <= self.context_truncate <= 1.0:
            raise ConfigError(f"augment.context_truncate={self.context_truncate} must be in [0, 1].")
        if not 0.0 <= self.context_flat <= 1.0:
            raise ConfigError(f"augment.context_flat={self.context_flat} must be in [0, 1].")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augment.scale={self.scale} must be (min, max) with 0 < min <= max.")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ConfigError(f"augment.gamma={self.gamma} must be (min, max) with 0 < min <= max.")
        if self.rotate_deg < 0 or self.translate_frac < 0 or self.noise_std < 0 or self.organ_contrast < 0:
            raise ConfigError("augment.rotate_deg, translate_frac, noise_std and organ_contrast must be >= 0.")
        if not 0.0 <= self.aspect < 0.5 or not 0.0 <= self.elastic < 0.2:
            raise ConfigError(f"augment.aspect={self.aspect} must be in [0, 0.5) and elastic={self.elastic} in [0, 0.2).")


@dataclass(frozen=True, slots=True, kw_only=True)
class DistillConfig:
    """Label-free, organ-specific distillation of a teacher into a student.

    Attributes:
        organs: Organs by name or id in `label_map` (one student segments these, plus background).
        label_map: "totalsegmentator", "totalsegmentator_mr" or a JSON file.
        student: A zoo architecture (see `edgemed.models.list_students()`).
        student_kwargs: Architecture options, e.g. {"widths": [8, 16, 32, 64]}.
        preprocess: Student input spacing, window and 2.5D context.
        epochs: Passes over the training slices.
        batch_size: Slices per step.
        lr: Peak AdamW learning rate (one-cycle schedule).
        weight_decay: AdamW weight decay.
        temperature: Softmax temperature for soft-label KD (used when the teacher gives scores).
        dice_weight: Weight of the soft Dice loss beside the KD / cross-entropy term.
        holdout_fraction: Fraction of each scan's organ-bearing slices held out as one contiguous
            block for validation (never trained on).
        organ_slice_ratio: Share of each batch drawn from slices containing an organ (the rest from
            slices without), so small organs are not drowned in background slices.
        augment: Augmentation settings.
        ema_decay: Keep an exponential moving average of the weights (per step) and ship it; it
            smooths the noise of small-batch training on few scans. None turns it off.
        ensemble: Students trained (seeds seed, seed+1, ...) and shipped as one model that averages
            their probabilities (one ONNX graph). Averaging removes the failures single students
            show on scans unlike the training scans; it costs that many times the training time
            and inference FLOPs.
        seed: Seeds torch and numpy: the same inputs and seed give the same weights.
        threads: torch intra-op threads (None: $EDGEMED_THREADS, else the CPUs free when training starts;
            see edgemed._threads).
    """

    organs: tuple[str, ...]
    label_map: str = "totalsegmentator"
    student: str = "unet2d"
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 2.0
    dice_weight: float = 1.0
    holdout_fraction: float = 0.2
    organ_slice_ratio: float = 0.75
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    ema_decay: float | None = 0.99
    ensemble: int = 1
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.organs:
            raise ConfigError("no organ given; name at least one, e.g. --organ liver.")
        if self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be >= 1.")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr={self.lr} is outside (0, 1); try 3e-3.")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be > 0; 1-4 is usual.")
        if not 0.0 <= self.holdout_fraction < 0.9:
            raise ConfigError(f"holdout_fraction={self.holdout_fraction} must be in [0, 0.9).")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay} must be in (0, 1), e.g. 0.99, or None to turn EMA off.")
        if not 1 <= self.ensemble <= 16:
            raise ConfigError(f"ensemble={self.ensemble} must be 1 (one student) to 16.")
        if not 0.0 <= self.organ_slice_ratio <= 1.0:
            raise ConfigError(f"organ_slice_ratio={self.organ_slice_ratio} must be in [0, 1].")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the recipe recorded in the student's manifest)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (PreprocessSpec, PostprocessSpec)):
                value = value.to_json()
            elif isinstance(value, AugmentConfig):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            out[f.name] = value
        return out


def config_from_dict(raw: dict[str, Any]) -> DistillConfig:
    """Build a DistillConfig from recipe/CLI keys, suggesting the right name for a typo.

    Raises:
        ConfigError: Unknown key (with a "did you mean" hint) or invalid value.
    """
    known = {f.name for f in fields(DistillConfig)}
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown distill option {key!r}.{hint}")
    values = dict(raw)
    if isinstance(values.get("preprocess"), dict):
        values["preprocess"] = PreprocessSpec(**values["preprocess"])
    if isinstance(values.get("postprocess"), dict):
        unknown = set(values["postprocess"]) - {"argmax", "largest_component"}
        if unknown:
            raise ConfigError(f"unknown postprocess option(s) {sorted(unknown)}; known: largest_component.")
        values["postprocess"] = PostprocessSpec.from_json(values["postprocess"])
    if isinstance(values.get("augment"), dict):
        values["augment"] = AugmentConfig(**values["augment"])
    if "organs" in values:
        values["organs"] = tuple(str(o) for o in values["organs"])
    try:
        return DistillConfig(**values)
    except TypeError as err:
        raise ConfigError(f"invalid distill options: {err}") from err
