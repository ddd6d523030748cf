"""The `edgemed compress` recipe: a TOML file whose keys are the CLI's flag names (stdlib only)."""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgemed.errors import ConfigError, InputError
from edgemed.pipeline._search import LATENCY_TIE

__all__ = ["PRECISIONS", "SEARCH_BACKENDS", "ProfileStageConfig", "PruneStageConfig", "QuantizeStageConfig",
           "RecipeConfig", "SearchConfig", "load_recipe", "recipe_from_dict"]

PRECISIONS = ("fp32", "int8")
SEARCH_BACKENDS = ("ort", "openvino")


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchConfig:
    """The grid explored per organ: student width x pruning ratio x precision x backend.

    Attributes:
        widths: Student channel widths per encoder level, one list per grid point
            (e.g. [[8, 16, 32, 64], [16, 32, 64, 128]]).
        prune_ratios: Channel shares removed; 0 keeps the unpruned student.
        precisions: "fp32" and/or "int8".
        backends: "ort" and/or "openvino" (INT8 for ort is ONNX Runtime QDQ, for openvino NNCF).
        latency_tie: Models within this share of the fastest qualifying one count as equally fast
            and the most accurate of them ships (0.25 = 25 %, the default; 0 = strictly the fastest).
    """

    widths: tuple[tuple[int, ...], ...] = ((16, 32, 64, 128),)
    prune_ratios: tuple[float, ...] = (0.0, 0.5)
    precisions: tuple[str, ...] = PRECISIONS
    backends: tuple[str, ...] = ("ort",)
    latency_tie: float = LATENCY_TIE

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(tuple(int(c) for c in w) for w in self.widths))
        object.__setattr__(self, "prune_ratios", tuple(float(r) for r in self.prune_ratios))
        object.__setattr__(self, "precisions", tuple(self.precisions))
        object.__setattr__(self, "backends", tuple(self.backends))
        if isinstance(self.latency_tie, bool) or not isinstance(self.latency_tie, (int, float)) \
                or not 0.0 <= self.latency_tie <= 1.0:
            raise ConfigError(f"search.latency_tie={self.latency_tie!r} is a share of the fastest latency in [0, 1], "
                              "e.g. 0.10 (10 %).")
        object.__setattr__(self, "latency_tie", float(self.latency_tie))
        if not self.widths or any(not w or min(w) < 1 for w in self.widths):
            raise ConfigError("search.widths needs at least one list of positive channel counts, e.g. [[8, 16, 32, 64]].")
        if not self.prune_ratios or any(not 0.0 <= r < 0.95 for r in self.prune_ratios):
            raise ConfigError(f"search.prune_ratios={list(self.prune_ratios)}: each must be in [0, 0.95); 0 = unpruned.")
        for name, values, allowed in (("precisions", self.precisions, PRECISIONS),
                                      ("backends", self.backends, SEARCH_BACKENDS)):
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise ConfigError(f"search.{name}={list(values)}; use some of {', '.join(allowed)}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneStageConfig:
    """Pruning and its distillation fine-tune from the unpruned student.

    Attributes:
        importance: "magnitude", "bn_scale" or "taylor".
        finetune_epochs: Fine-tune epochs (0: no fine-tune).
        lr: Fine-tune learning rate.
        keep_head_inputs: Leave the layers feeding the output head whole (`PruneConfig`).
    """

    importance: str = "magnitude"
    finetune_epochs: int = 20
    # 3e-3, not 1e-3: a 30 %-pruned full-width liver student outputs nothing before fine-tuning, and
    # at 1e-3 it stayed at Dice 0 for 15 epochs; at 3e-3 it recovered the parent's Dice by epoch 8.
    lr: float = 3e-3
    keep_head_inputs: bool = True

    def __post_init__(self) -> None:
        if self.finetune_epochs < 0:
            raise ConfigError(f"prune.finetune_epochs={self.finetune_epochs} must be >= 0.")


@dataclass(frozen=True, slots=True, kw_only=True)
class QuantizeStageConfig:
    """INT8 post-training quantization of each FP32 bundle.

    Attributes:
        calibration_slices: Slice stacks calibrated on (>= 8).
        max_dice_drop: Largest Dice loss vs FP32 INT8 may cost before `quantize` keeps FP32; the
            search's `min_dice` then judges what is left, so the default is lenient.
        accuracy_control: NNCF's accuracy control (slow; off by default in a grid search).
    """

    calibration_slices: int = 64
    max_dice_drop: float = 0.05
    accuracy_control: bool = False

    def __post_init__(self) -> None:
        if self.calibration_slices < 8:
            raise ConfigError(f"quantize.calibration_slices={self.calibration_slices} is too few; use at least 8.")
        if not 0.0 <= self.max_dice_drop <= 0.2:
            raise ConfigError(f"quantize.max_dice_drop={self.max_dice_drop} must be in [0, 0.2].")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileStageConfig:
    """How each candidate bundle is timed on this host.

    Attributes:
        repeats: Timed whole-volume runs (their spread is the report's latency histogram).
        warmup: Untimed runs first.
        threads: Backend threads (None: the physical cores).
    """

    repeats: int = 10
    warmup: int = 2
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(f"profile.repeats={self.repeats} must be >= 1 and warmup={self.warmup} >= 0.")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"profile.threads={self.threads} must be >= 1.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipeConfig:
    """Everything `edgemed compress` needs: organs, data, stage settings, search grid, budget.

    Attributes:
        organs: The organs to segment (names in `label_map`); one student each, or one for all
            with `joint`.
        joint: One student segments every organ: one distillation, one model to ship and one
            inference per volume instead of one per organ. The search then picks one model, judged
            by its worst organ.
        scans: Unlabeled training scans; the first is also where candidates are timed and scored.
        teacher_predictions: The teacher's label maps of `scans`, in order.
        label_map: The teacher's label map name or JSON file.
        out: Run directory (stage cache, run log, report.html).
        target: "host" (measure here) or a profile id (latency predicted, labelled "predicted").
        latency_budget_ms: Largest whole-volume inference time allowed (None: no limit).
        min_dice: Smallest held-out Dice vs the teacher a chosen model may have.
        max_dice_drop: Largest held-out Dice a chosen model may lose against its organ's unpruned
            FP32 student (None: no limit): pruning and INT8 are then only taken where they cost at
            most this, so what ships is as good as `edgemed distill`'s student within it.
        distill: `DistillConfig` keys (organs and label_map come from above).
        search, prune, quantize, profile: Stage settings.
    """

    organs: tuple[str, ...]
    scans: tuple[str, ...]
    teacher_predictions: tuple[str, ...]
    label_map: str = "totalsegmentator"
    joint: bool = False
    out: str | None = None
    target: str = "host"
    latency_budget_ms: float | None = None
    min_dice: float = 0.0
    max_dice_drop: float | None = None
    distill: dict[str, Any] = field(default_factory=dict)
    search: SearchConfig = field(default_factory=SearchConfig)
    prune: PruneStageConfig = field(default_factory=PruneStageConfig)
    quantize: QuantizeStageConfig = field(default_factory=QuantizeStageConfig)
    profile: ProfileStageConfig = field(default_factory=ProfileStageConfig)

    def __post_init__(self) -> None:
        from edgemed.compress import config_from_dict

        object.__setattr__(self, "organs", tuple(str(o) for o in self.organs))
        object.__setattr__(self, "scans", tuple(str(s) for s in self.scans))
        object.__setattr__(self, "teacher_predictions", tuple(str(s) for s in self.teacher_predictions))
        if not self.organs:
            raise ConfigError("the recipe names no organ; add e.g. organs = [\"liver\"].")
        if len(set(self.organs)) != len(self.organs):
            raise ConfigError(f"organs={list(self.organs)} names an organ twice.")
        if not isinstance(self.joint, bool):
            raise ConfigError(f"joint={self.joint!r} must be true or false.")
        if not self.scans:
            raise ConfigError("the recipe names no scan; add scans = [\"ct.nii.gz\"].")
        if len(self.teacher_predictions) != len(self.scans):
            raise ConfigError(f"{len(self.scans)} scans but {len(self.teacher_predictions)} teacher_predictions; "
                              "give the teacher's label map of every scan, in the same order.")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise ConfigError(f"latency_budget_ms={self.latency_budget_ms} must be > 0.")
        if not 0.0 <= self.min_dice <= 1.0:
            raise ConfigError(f"min_dice={self.min_dice} must be in [0, 1].")
        if self.max_dice_drop is not None and not 0.0 <= self.max_dice_drop <= 1.0:
            raise ConfigError(f"max_dice_drop={self.max_dice_drop} must be in [0, 1], e.g. 0.01 (one Dice point).")
        for key in ("organs", "label_map"):
            if key in self.distill:
                raise ConfigError(f"[distill] {key} is set at the top of the recipe, not in [distill].")
        config_from_dict({"organs": self.organs[:1], "label_map": self.label_map, **_nones(self.distill)})  # validates

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The organs each student segments: all of them together (`joint`), else one each."""
        return (self.organs,) if self.joint else tuple((o,) for o in self.organs)

    def distill_config(self, organs: tuple[str, ...], widths: tuple[int, ...]) -> Any:
        """The `DistillConfig` of the student of `organs` at one width."""
        from edgemed.compress import config_from_dict

        kwargs = {**self.distill.get("student_kwargs", {}), "widths": list(widths)}
        return config_from_dict({**_nones(self.distill), "organs": list(organs), "label_map": self.label_map,
                                 "student_kwargs": kwargs})

    def with_overrides(self, **overrides: Any) -> "RecipeConfig":
        """A copy with the CLI's flags (None: keep the recipe's value) applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _nones(table: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: in [distill], "none" stands for None (e.g. ema_decay = "none")."""
    return {k: None if v == "none" else v for k, v in table.items()}


_SECTIONS: dict[str, type] = {"search": SearchConfig, "prune": PruneStageConfig, "quantize": QuantizeStageConfig,
                              "profile": ProfileStageConfig}
_PATH_KEYS = ("scans", "teacher_predictions")


def _check_keys(raw: dict[str, Any], known: set[str], where: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known keys: {', '.join(sorted(known))}."
            raise ConfigError(f"unknown recipe key {where}{key!r}.{hint}")


def recipe_from_dict(raw: dict[str, Any], *, base_dir: str | os.PathLike[str] | None = None) -> RecipeConfig:
    """Build a RecipeConfig from parsed TOML, resolving relative paths against `base_dir`.

    Keys use the CLI's flag names with underscores (`latency_budget_ms` = `--latency-budget-ms`).

    Raises:
        ConfigError: An unknown key (with a "did you mean" hint) or an invalid value.
    """
    _check_keys(raw, {f.name for f in fields(RecipeConfig)}, "")
    values = dict(raw)
    for section, cls in _SECTIONS.items():
        table = values.get(section)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"recipe key {section!r} must be a table ([{section}]).")
        _check_keys(table, {f.name for f in fields(cls)}, f"[{section}] ")
        try:
            values[section] = cls(**table)
        except TypeError as err:
            raise ConfigError(f"invalid [{section}] values: {err}") from err
    if base_dir is not None:
        base = Path(base_dir)
        for key in _PATH_KEYS:
            if key in values:
                values[key] = tuple(str(base / p) for p in values[key])
        if values.get("out") is not None:
            values["out"] = str(base / values["out"])
        if isinstance(values.get("label_map"), str) and values["label_map"].endswith(".json"):
            values["label_map"] = str(base / values["label_map"])
    try:
        return RecipeConfig(**values)
    except TypeError as err:
        raise ConfigError(f"invalid recipe: {err}; required keys are organs, scans and teacher_predictions.") from err


def load_recipe(path: str | os.PathLike[str]) -> RecipeConfig:
    """Read a recipe TOML file; relative paths in it are relative to the file.

    Raises:
        InputError: The file is missing or not valid TOML.
        ConfigError: Unknown keys or invalid values.

    Example:
        >>> recipe = load_recipe("benchmarks/suite/recipes/totalseg_4organs.toml")
        >>> recipe.organs
        ('liver', 'spleen', 'kidney_left', 'kidney_right')
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(f"recipe {file} not found; see benchmarks/suite/recipes/ for an example.") from err
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{file} is not valid TOML: {err}") from err
    return recipe_from_dict(raw, base_dir=file.resolve().parent)
