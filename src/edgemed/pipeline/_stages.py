"""The five cached stages of `edgemed compress`: distill → prune (+KD fine-tune) → export → quantize → profile.

Each function keys its stage on its config and its inputs' digests, and lets `StageCache` run it
or reuse it. Heavy libraries (torch, onnxruntime, openvino) load inside the stage bodies.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.pipeline._cache import StageCache, StageResult, artifact_digest, file_digest
from edgemed.pipeline._recipe import RecipeConfig

__all__ = ["distill_stage", "export_stage", "profile_stage", "prune_stage", "quantize_stage", "runoff_stage",
           "teacher_digest"]


def teacher_digest(recipe: RecipeConfig) -> str:
    """The teacher's identity: a digest over its stored predictions (file hashes)."""
    from edgemed.pipeline._cache import stage_key

    return stage_key("teacher", {"label_map": recipe.label_map}, [file_digest(p) for p in recipe.teacher_predictions])


def distill_stage(cache: StageCache, recipe: RecipeConfig, organs: tuple[str, ...], widths: tuple[int, ...], *,
                  progress: bool) -> StageResult:
    """Distill the teacher's labels of `organs` into one student of `widths`."""
    config = recipe.distill_config(organs, widths)
    inputs = [file_digest(s) for s in recipe.scans] + [file_digest(p) for p in recipe.teacher_predictions]

    def work(tmp: Path) -> dict[str, Any]:
        from edgemed.compress import distill

        ckpt = distill(list(recipe.scans), config, tmp / "artifact", teacher_predictions=list(recipe.teacher_predictions),
                       progress=progress)
        return _student_summary(ckpt)

    return cache.run("distill", config.to_json(), inputs, work, organ="+".join(organs))


def prune_stage(cache: StageCache, recipe: RecipeConfig, organs: tuple[str, ...], parent: StageResult, ratio: float, *,
                progress: bool) -> StageResult:
    """Prune `ratio` of the parent's channels, then fine-tune by distillation from the parent."""
    stage_cfg = recipe.prune
    config = {"ratio": ratio, "importance": stage_cfg.importance, "finetune_epochs": stage_cfg.finetune_epochs,
              "lr": stage_cfg.lr, "keep_head_inputs": stage_cfg.keep_head_inputs, "distill": recipe.distill}
    inputs = [artifact_digest(parent.artifact)] + [file_digest(s) for s in recipe.scans]

    def work(tmp: Path) -> dict[str, Any]:
        from edgemed.artifacts import StudentCheckpoint
        from edgemed.compress import PruneConfig, distill, prune
        from edgemed.models.teachers import StudentTeacher

        pruned = prune(parent.artifact, PruneConfig(ratio=ratio, importance=stage_cfg.importance,
                                                    keep_head_inputs=stage_cfg.keep_head_inputs),
                       tmp / "pruned", progress=progress)
        if stage_cfg.finetune_epochs == 0:
            (tmp / "pruned").rename(tmp / "artifact")
            return _student_summary(StudentCheckpoint.load(tmp / "artifact"))
        base = StudentCheckpoint.load(parent.artifact)
        cfg = _finetune_config(base, recipe, organs, stage_cfg.finetune_epochs, stage_cfg.lr)
        tuned = distill(list(recipe.scans), cfg, tmp / "artifact", teacher=StudentTeacher(parent.artifact),
                        init=pruned, progress=progress)
        import shutil

        shutil.rmtree(tmp / "pruned")
        return {**_student_summary(tuned), "pruning": tuned.meta.pruning or pruned.meta.pruning}

    return cache.run("prune", config, inputs, work, organ="+".join(organs))


def _finetune_config(base: Any, recipe: RecipeConfig, organs: tuple[str, ...], epochs: int, lr: float) -> Any:
    from edgemed.compress import config_from_dict

    raw = {k: None if v == "none" else v for k, v in recipe.distill.items()
           if k not in ("student", "student_kwargs", "ensemble")}
    raw.update(organs=list(organs), label_map=recipe.label_map, epochs=epochs, lr=lr, preprocess=base.preprocess)
    return config_from_dict(raw)


def _student_summary(ckpt: Any) -> dict[str, Any]:
    validation = ckpt.meta.validation
    per_scan = validation.per_scan or [{}]
    return {"digest": ckpt.manifest.digest, "parent": ckpt.manifest.parent, "dice": dict(validation.dice),
            "holdout_slices": per_scan[0].get("holdout_slices"), "parameters": ckpt.meta.training.parameters}


def export_stage(cache: StageCache, student: StageResult, organs: tuple[str, ...], recipe: RecipeConfig) -> StageResult:
    """Export a student to an FP32 ONNX bundle, parity-checked on the first scan."""
    config = {"opset": 17, "parity_max_slices": 8, "parity_scan": file_digest(recipe.scans[0])}

    def work(tmp: Path) -> dict[str, Any]:
        from edgemed.export import OnnxExportConfig, to_onnx

        bundle = to_onnx(student.artifact, tmp / "artifact",
                         OnnxExportConfig(parity_volumes=(recipe.scans[0],), parity_max_slices=8))
        return {"digest": bundle.manifest.digest, "parent": bundle.manifest.parent, "precision": bundle.precision}

    return cache.run("export", config, [artifact_digest(student.artifact)], work, organ="+".join(organs))


def quantize_stage(cache: StageCache, fp32: StageResult, organs: tuple[str, ...], recipe: RecipeConfig,
                   backend: str) -> StageResult:
    """INT8 PTQ of an FP32 bundle for `backend` (ONNX Runtime QDQ, or NNCF for OpenVINO); every organ's
    Dice must stay within `max_dice_drop`.

    INT8 is kept whether or not one timing here finds it faster (`require_faster=False`): the profile
    stage times every candidate and the search picks, so which candidates exist depends on Dice only
    (a fresh-clone CI run once lost an INT8 candidate the previous run had, to one noisy timing).
    """
    q = recipe.quantize
    config = {"backend": backend, "calibration_slices": q.calibration_slices, "max_dice_drop": q.max_dice_drop,
              "accuracy_control": q.accuracy_control, "require_faster": False}
    inputs = [artifact_digest(fp32.artifact)] + [file_digest(s) for s in recipe.scans] + \
             [file_digest(p) for p in recipe.teacher_predictions]

    def work(tmp: Path) -> dict[str, Any]:
        from edgemed.compress import NncfInt8Config, OrtInt8Config, quantize

        cfg: Any
        if backend == "openvino":
            cfg = NncfInt8Config(calibration_slices=q.calibration_slices, max_dice_drop=q.max_dice_drop,
                                 accuracy_control=q.accuracy_control)
        else:
            cfg = OrtInt8Config(calibration_slices=q.calibration_slices, max_dice_drop=q.max_dice_drop)
        result = quantize(fp32.artifact, list(recipe.scans), cfg, tmp / "artifact",
                          references=list(recipe.teacher_predictions), timing_repeats=3, require_faster=False)
        return {"digest": artifact_digest(tmp / "artifact"), "chosen_precision": result.chosen_precision,
                "chosen_backend": result.chosen_backend, "reason": result.reason, "dice": result.dice,
                "latency_ms": result.latency_ms}

    return cache.run("quantize", config, inputs, work, organ="+".join(organs))


def profile_stage(cache: StageCache, bundle: StageResult, organs: tuple[str, ...], recipe: RecipeConfig, backend: str,
                  holdout: tuple[int, int] | None) -> StageResult:
    """Time a bundle (here, or predicted on the target) and score each of its organs vs the teacher on the first scan.

    Latency is the whole-volume inference time (`StageTimings.inference_ms`, all batches); on the
    host each of `repeats` runs is kept (the report's histogram), on another target it is
    `predict_bundle`'s figure, labelled "predicted". Dice is always measured here.
    """
    p = recipe.profile
    config = {"backend": backend, "repeats": p.repeats, "warmup": p.warmup, "threads": p.threads,
              "target": recipe.target, "holdout": list(holdout) if holdout else None, "scores": "per organ"}
    inputs = [artifact_digest(bundle.artifact), file_digest(recipe.scans[0]), file_digest(recipe.teacher_predictions[0])]
    if recipe.target != "host":  # the prediction depends on the profile's numbers, not only its id
        from edgemed.profiles import get_profile

        config["target_profile"] = repr(get_profile(recipe.target))

    def work(tmp: Path) -> dict[str, Any]:
        return _profile(bundle.artifact, recipe, backend, holdout, tmp)

    return cache.run("profile", config, inputs, work, organ="+".join(organs))


def runoff_stage(cache: StageCache, entrants: list[tuple[str, Path, str]], recipe: RecipeConfig, *,
                 organ: str = "") -> StageResult:
    """Time the qualifying candidates of one organ against each other, interleaved, on this machine.

    `entrants` are (name, bundle directory, backend). Each profile stage timed its bundle alone, minutes
    apart from the others; this machine's speed drifts by 20-40 % over minutes, which moved the same
    build's median by up to 38 % between two runs of one recipe and flipped what shipped. Here every
    round segments the whole first scan once with every entrant (the order rotating round by round), so
    a drift slows all of them alike, and the median over rounds is what the search compares.
    """
    p = recipe.profile
    rounds = max(p.repeats, 5)
    config = {"rounds": rounds, "warmup": 1, "threads": p.threads, "order": "rotated",
              "entrants": [[name, backend] for name, _, backend in entrants]}
    inputs = [artifact_digest(path) for _, path, _ in entrants] + [file_digest(recipe.scans[0])]

    def work(tmp: Path) -> dict[str, Any]:
        from contextlib import ExitStack

        from edgemed import runtime
        from edgemed.io import read_volume

        volume = read_volume(recipe.scans[0])
        samples: dict[str, list[float]] = {name: [] for name, _, _ in entrants}
        with ExitStack() as stack:
            segs = [(name, stack.enter_context(runtime.load(path, backend=backend, threads=p.threads)))
                    for name, path, backend in entrants]
            for _, seg in segs:  # warm-up: first-call allocations and kernel selection
                seg.segment(volume)
            for r in range(rounds):
                k = r % len(segs)
                for name, seg in segs[k:] + segs[:k]:
                    seg.segment(volume)
                    samples[name].append(float(seg.last_timings.inference_ms))  # type: ignore[union-attr]
        return {"latency_ms": {n: round(statistics.median(v), 3) for n, v in samples.items()},
                "samples_ms": {n: [round(x, 3) for x in v] for n, v in samples.items()}, "rounds": rounds}

    return cache.run("runoff", config, inputs, work, organ=organ)


def _profile(path: Path, recipe: RecipeConfig, backend: str, holdout: tuple[int, int] | None,
             tmp: Path) -> dict[str, Any]:
    from edgemed import runtime
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice

    p = recipe.profile
    volume = read_volume(recipe.scans[0])
    teacher = read_labels(recipe.teacher_predictions[0], like=volume).array
    host = recipe.target == "host"
    repeats = p.repeats if host else 1
    samples: list[float] = []
    totals: list[float] = []
    with runtime.load(path, backend=backend, threads=p.threads) as seg:
        label_ids = {o.name: o.label_id for o in seg.organs}
        for i in range((p.warmup if host else 0) + repeats):
            mask = seg.segment(volume)
            if i >= (p.warmup if host else 0):
                samples.append(float(seg.last_timings.inference_ms))  # type: ignore[union-attr]
                totals.append(float(seg.last_timings.total_ms))  # type: ignore[union-attr]
        used_backend = seg.backend
        precision = seg.bundle.precision
        size_bytes = seg.bundle.model_path.stat().st_size
    block = slice(holdout[0], holdout[1] + 1) if holdout else slice(None)
    heldout, scan = {}, {}
    for name, label_id in label_ids.items():
        pred, ref = mask.array == label_id, teacher == label_id
        heldout[name] = round(float(dice(pred[:, :, block], ref[:, :, block])), 4)
        scan[name] = round(float(dice(pred, ref)), 4)
    out: dict[str, Any] = {
        "backend": used_backend, "precision": precision, "size_bytes": size_bytes,
        "dice_heldout": heldout, "dice_scan": scan,
        "samples_ms": [round(s, 3) for s in samples], "total_ms_median": round(statistics.median(totals), 3),
        "slices": int(volume.shape[2]),
    }
    if host:
        out.update(latency_ms=round(statistics.median(samples), 3), latency_label="measured", target="host")
    else:
        from edgemed.measure import predict_bundle
        from edgemed.profiles import get_profile

        pred_ms = predict_bundle(path, volume, get_profile(recipe.target))
        out.update(latency_ms=float(pred_ms["volume_inference_ms"]), latency_label="predicted", target=recipe.target,
                   prediction=pred_ms)
    np.savez_compressed(tmp / "labels.npz", labels=mask.array)  # for the report's overlays
    return out
