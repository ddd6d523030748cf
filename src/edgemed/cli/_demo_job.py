"""`edgemed demo`: the whole distillation story on built-in synthetic CT phantoms, no downloads.

1. A *teacher*: a wide multi-organ residual U-Net (9.4 M parameters) trained on labelled
   phantoms (6 of them, at 10 mm slices). It stands in for a foundation model such as
   TotalSegmentator.
2. Unlabeled phantoms: the teacher runs on them; nobody labels them.
3. A liver *student* (a MobileNet-style U-Net, 55 k parameters) distilled from the teacher's soft
   outputs, exported to an ONNX bundle (parity-checked against torch).
4. The student pruned (torch-pruning, half the channels), fine-tuned from the unpruned student,
   exported, and offered to INT8 (ONNX Runtime's quantizer keeps INT8 only where it is faster and
   within the Dice budget).
5. Teacher, student and compressed student, all ONNX bundles, timed in the same runtime
   (`edgemed.runtime`, ONNX Runtime, interleaved calls, 1 thread; and once with every free CPU)
   and scored on phantoms neither model saw.
6. report.json and report.html (tables, and overlays where student and teacher disagree).

The phantoms use the detailed anatomy (`PhantomConfig(detailed=True)`: fat, bowel, vessels,
contrast-phase densities that vary between patients), not the simple one the tests use.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.io import write_nifti
from edgemed.phantom import PHANTOM_LABELS, PhantomConfig, make_phantom

__all__ = ["DemoConfig", "run_demo"]

LIVER = 5  # TotalSegmentator id, as in the phantoms


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo (the defaults take about 2 minutes on 2 idle CPU cores).

    Attributes:
        teacher_scans, unlabeled_scans, test_scans: Phantoms for each role (disjoint seeds).
        teacher_epochs, student_epochs: Training epochs.
        finetune_epochs, prune_ratio: The compressed student: this share of channels pruned
            (torch-pruning), then distilled back from the unpruned student for these epochs.
        teacher_widths: Channels of the teacher's five stages (res_unet2d).
        teacher_spacing_mm, student_spacing_mm: In-plane grid each model works on.
        timing_repeats: Interleaved whole-volume calls per model when timing.
        timing_threads: Runtime threads for the timing the table shows (1: per core, as the CI
            gate times; the report adds a run with every free CPU).
        seed: Picks the phantoms (and seeds training); three seeds are measured in the README.
        threads: Torch and runtime threads (None: the CPUs free at the start).
    """

    teacher_scans: int = 6
    unlabeled_scans: int = 3
    test_scans: int = 2
    teacher_epochs: int = 3
    student_epochs: int = 6
    finetune_epochs: int = 3
    prune_ratio: float = 0.5
    teacher_widths: tuple[int, ...] = (32, 64, 128, 256, 320)
    teacher_spacing_mm: float = 4.0
    student_spacing_mm: float = 4.0
    timing_repeats: int = 3
    timing_threads: int = 1
    seed: int = 0
    threads: int | None = None


# The teacher is a wide residual U-Net (9.4 M parameters): in ONNX Runtime ~30x the student's work per
# slice, while its training costs ~16x the student's per slice, so a good one still trains in a minute.
TEACHER = {"arch": "res_unet2d"}
STUDENT = {"arch": "mobile_unet2d", "kwargs": {}}
# The detailed phantom anatomy (fat, bowel, vessels, contrast-phase densities), 4 mm in-plane, 5 mm slices.
PHANTOM = PhantomConfig(detailed=True)
# The teacher's labelled phantoms: the same anatomy at 10 mm slices. Slices 5 mm apart are nearly alike,
# so a minute of training sees twice as many patients this way as with the 5 mm series.
TEACHER_PHANTOM = PhantomConfig(shape=(96, 80, 24), spacing_mm=(4.0, 4.0, 10.0), detailed=True)

# What a demo folder holds; one holding only these is an earlier demo (replaced with --overwrite).
DEMO_FILES = ("phantoms", "teacher", "teacher.resume", "teacher.edgemed", "liver_student", "liver_student.resume",
              "liver.edgemed", "liver_pruned", "liver_pruned_raw", "liver_pruned.resume", "liver-compressed.edgemed",
              "liver-pruned-fp32.edgemed", "report.json", "report.html",
              "liver-int8.edgemed", "teacher_predictions", "profile")  # the last three: demos before 0.2


def run_demo(out: Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo into `out`; returns (and writes to out/report.json) the measured summary.

    Raises:
        OutputError: `out` holds something other than a demo (or a demo, without `overwrite`).
    """
    import torch

    from edgemed import __version__
    from edgemed.artifacts import atomic_file, check_output

    check_output(out, kind="demo", overwrite=overwrite, layout=DEMO_FILES)
    if overwrite:  # an interrupted earlier demo's training state: this run starts afresh, so drop it
        import shutil

        for name in ("teacher.resume", "liver_student.resume", "liver_pruned.resume"):
            shutil.rmtree(out / name, ignore_errors=True)

    from edgemed.cli._demo_report import write_demo_report
    from edgemed.compress import AugmentConfig, DistillConfig, OrtInt8Config, PruneConfig, distill, prune, quantize
    from edgemed.export import OnnxExportConfig, to_onnx
    from edgemed.models.teachers import StudentTeacher

    started = time.perf_counter()
    data = out / "phantoms"
    base = 1000 * config.seed  # disjoint phantom seeds per role and per demo seed

    def phantoms(n: int, first: int, prefix: str, kind: PhantomConfig = PHANTOM) -> tuple[list[Path], list[Path]]:
        scans, labels = [], []
        for seed in range(base + first, base + first + n):
            ct, lab = make_phantom(seed, kind)
            scans.append(write_nifti(ct, data / f"{prefix}{seed:04d}_ct.nii.gz"))
            labels.append(write_nifti(lab, data / f"{prefix}{seed:04d}_truth.nii.gz"))
        return scans, labels

    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> float:
        timings[name] = time.perf_counter() - t0
        return time.perf_counter()

    t0 = time.perf_counter()
    train_scans, train_truth = phantoms(config.teacher_scans, 0, "labelled", TEACHER_PHANTOM)
    unlabeled, _ = phantoms(config.unlabeled_scans, 100, "unlabeled")
    test_scans, test_truth = phantoms(config.test_scans, 200, "test")
    t0 = step("make phantoms", t0)

    # The stand-in foundation model, supervised on labelled phantoms (the only labels in the demo).
    t_spec = PreprocessSpec(spacing_mm=(config.teacher_spacing_mm,) * 2, context_slices=1, context_spacing_mm=5.0)
    teacher_ckpt = distill(train_scans, DistillConfig(
        organs=tuple(PHANTOM_LABELS.values()), student=TEACHER["arch"],
        student_kwargs={"widths": list(config.teacher_widths)},
        epochs=config.teacher_epochs, preprocess=t_spec, holdout_fraction=0.0, seed=config.seed,
        # Light augmentation: the teacher only ever meets phantoms from the same generator, and a
        # minute of training converges further without heavy distortions.
        augment=AugmentConfig(prob=0.3),
        # No weight averaging: over the ~50 optimizer steps of a one-minute run, an EMA (0.99) would
        # still carry the first, untrained steps.
        ema_decay=None,
        threads=config.threads), out / "teacher", teacher_predictions=train_truth,
        progress="train teacher" if progress else False, overwrite=overwrite, calibrate_qc=False)
    t0 = step("train teacher", t0)

    s_spec = PreprocessSpec(spacing_mm=(config.student_spacing_mm,) * 2, context_slices=1, context_spacing_mm=5.0)
    student_ckpt = distill(unlabeled, DistillConfig(
        organs=("liver",), student=STUDENT["arch"], student_kwargs=STUDENT["kwargs"], epochs=config.student_epochs,
        preprocess=s_spec, seed=config.seed, threads=config.threads), out / "liver_student",
        teacher=StudentTeacher(teacher_ckpt.path), progress=progress, overwrite=overwrite)
    t0 = step("distill liver", t0)

    parity = OnnxExportConfig(parity_volumes=(test_scans[0],))
    teacher_bundle = to_onnx(teacher_ckpt, out / "teacher.edgemed", parity, overwrite=overwrite)
    bundle = to_onnx(student_ckpt, out / "liver.edgemed", parity, overwrite=overwrite)
    t0 = step("export (ONNX, parity-checked)", t0)

    # Compressed: prune channels (torch-pruning), distill back from the unpruned student, export, then
    # try INT8 (ONNX Runtime's quantizer; quantize keeps INT8 only if it is faster and within the Dice budget).
    raw = prune(student_ckpt, PruneConfig(ratio=config.prune_ratio), out / "liver_pruned_raw", overwrite=overwrite)
    pruned = distill(unlabeled, DistillConfig(
        organs=("liver",), student=STUDENT["arch"], epochs=config.finetune_epochs, preprocess=s_spec,
        seed=config.seed, threads=config.threads), out / "liver_pruned", teacher=StudentTeacher(student_ckpt.path),
        init=raw, progress="prune + fine-tune" if progress else False, overwrite=overwrite)
    pruned_bundle = to_onnx(pruned, out / "liver-pruned-fp32.edgemed", parity, overwrite=overwrite)
    t0 = step("prune + fine-tune", t0)

    from tqdm.auto import tqdm

    for _ in tqdm(range(1), disable=not progress, desc="quantize", unit="model"):
        quantized = quantize(pruned_bundle, unlabeled, OrtInt8Config(calibration_slices=64, max_dice_drop=0.01),
                             out / "liver-compressed.edgemed", overwrite=overwrite)
    t0 = step("quantize", t0)

    models = {"teacher": teacher_bundle.path, "student": bundle.path, "compressed": out / "liver-compressed.edgemed"}
    measured = _profile(models, test_scans, test_truth, config, progress)
    t0 = step("profile", t0)

    rows = []
    for role, path in models.items():
        m = measured[role]
        rows.append({"role": {"teacher": "teacher", "student": "student",
                              "compressed": f"pruned, {m['precision'].upper()}"}[role],
                     "arch": m["arch"], "parameters": m["parameters"], "precision": m["precision"],
                     "size_mb": m["size_mb"], "s_per_volume": m["s_per_volume"], "grid_mm": m["grid_mm"],
                     "s_per_volume_all_cpus": m["s_per_volume_all_cpus"],
                     "dice_vs_truth": float(np.mean(m["dice_vs_truth"])),
                     "dice_vs_truth_per_scan": m["dice_vs_truth"],
                     "dice_vs_teacher": None if role == "teacher" else float(np.mean(m["dice_vs_teacher"])),
                     "bundle": str(path)})
    summary: dict[str, Any] = {
        "organ": "liver",
        "story": (f"A {TEACHER['arch']} teacher ({rows[0]['parameters']:,} parameters, "
                  f"{len(PHANTOM_LABELS)} organs, {config.teacher_spacing_mm:g} mm grid) was trained on "
                  f"{config.teacher_scans} labelled phantoms, then labelled {config.unlabeled_scans} unlabeled "
                  f"phantoms with its soft outputs; a {STUDENT['arch']} liver student ({rows[1]['parameters']:,} "
                  f"parameters, {config.student_spacing_mm:g} mm grid) was distilled from them, then pruned "
                  f"({100 * config.prune_ratio:.0f} % of channels) and fine-tuned, and offered to INT8 quantization "
                  f"({quantized.reason}). All three run here as ONNX bundles in the same torch-free runtime."),
        "models": rows,
        "speedup_student_vs_teacher": rows[0]["s_per_volume"] / rows[1]["s_per_volume"],
        "speedup_compressed_vs_teacher": rows[0]["s_per_volume"] / rows[2]["s_per_volume"],
        "quantize": {"chosen_precision": quantized.chosen_precision, "reason": quantized.reason},
        "export_parity": {"teacher": teacher_bundle.parity, "student": bundle.parity},
        "heldout_dice_vs_teacher_during_training": student_ckpt.meta.validation.dice.get("liver"),
        "test_scans": [Path(s).name for s in test_scans],
        "runtime": "edgemed.runtime (ONNX Runtime, CPU, no torch)",
        "timing": {"repeats": config.timing_repeats, "threads": config.timing_threads,
                   "all_cpus_threads": measured["all_threads"], "volume_shape": list(PHANTOM.shape)},
        "machine": {"cpus": os.cpu_count(), "loadavg_at_timing": measured["loadavg"]},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - started, 1),
        "config": asdict(config), "seed": config.seed, "torch_threads": torch.get_num_threads(),
        "edgemed_version": __version__,
        "prune": {"ratio": config.prune_ratio, "finetune_epochs": config.finetune_epochs,
                  "parameters_before": rows[1]["parameters"], "parameters_after": rows[2]["parameters"]},
        "artifacts": {"teacher": str(teacher_ckpt.path), "student": str(student_ckpt.path), "bundle": str(bundle.path),
                      "teacher_bundle": str(teacher_bundle.path), "compressed_bundle": str(models["compressed"]),
                      "report_html": str(out / "report.html")},
    }
    write_demo_report(out / "report.html", summary, measured["overlays"])
    summary["timings_s"]["report"] = round(time.perf_counter() - t0, 1)
    summary["total_s"] = round(time.perf_counter() - started, 1)
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _profile(models: dict[str, Path], scans: list[Path], truths: list[Path], config: DemoConfig,
             progress: bool) -> dict[str, Any]:
    """Dice (vs truth, vs the teacher) and interleaved whole-volume timing of each bundle, one runtime."""
    from edgemed import runtime
    from edgemed.artifacts import OnnxBundle
    from tqdm.auto import tqdm

    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice

    volumes = [read_volume(s) for s in scans]
    truth = [read_labels(t, like=v).array == LIVER for v, t in zip(volumes, truths)]
    segs = {role: runtime.load(path, backend="ort", threads=config.timing_threads) for role, path in models.items()}
    try:
        masks = {role: [seg.segment(v).array == LIVER for v in volumes] for role, seg in segs.items()}  # + warm-up
        times: dict[str, list[float]] = {role: [] for role in segs}
        order = list(segs)
        loads = []
        for i in tqdm(range(config.timing_repeats), disable=not progress, desc="profile", unit="round"):
            loads.append(os.getloadavg()[0])
            for role in order[i % len(order):] + order[:i % len(order)]:  # rotate: no model always first
                t = time.perf_counter()
                segs[role].segment(volumes[0])
                times[role].append(time.perf_counter() - t)
    finally:
        for seg in segs.values():
            seg.close()
    # The same with every free CPU (the default a device application gets): best of 2 after a warm-up.
    wide: dict[str, float] = {}
    for role, path in models.items():
        with runtime.load(path, backend="ort", threads=config.threads) as seg:
            all_threads = getattr(seg.session, "threads", None)
            seg.segment(volumes[0])
            runs = []
            for _ in range(1):
                t = time.perf_counter()
                seg.segment(volumes[0])
                runs.append(time.perf_counter() - t)
            wide[role] = min(runs)
    out: dict[str, Any] = {"all_threads": all_threads, "loadavg": float(np.median(loads)), "overlays": []}
    for role, path in models.items():
        b = OnnxBundle.load(path)
        out[role] = {
            "arch": b.meta.student.arch or "?", "parameters": int(b.meta.student.parameters or 0),
            "precision": b.precision,
            "size_mb": b.model_path.stat().st_size / 1e6, "s_per_volume": float(np.median(times[role])),
            "s_per_volume_all_cpus": wide[role],
            "grid_mm": list(b.preprocess.spacing_mm),
            "dice_vs_truth": [round(dice(m, g), 4) for m, g in zip(masks[role], truth)],
            "dice_vs_teacher": [round(dice(m, t), 4) for m, t in zip(masks[role], masks["teacher"])],
        }
    for v, s in zip(volumes, scans):
        i = scans.index(s)
        out["overlays"].append({"scan": Path(s).name, "ct": v.array, "spacing": v.spacing_mm,
                                "masks": {role: masks[role][i] for role in models}})
    return out


def load_demo_student(out: Path) -> StudentCheckpoint:
    """The liver student a finished demo wrote."""
    return StudentCheckpoint.load(out / "liver_student")
