"""`edgemed demo`: the whole distillation story on built-in synthetic CT phantoms, no downloads.

1. A *teacher*: a large multi-organ network (res_unet2d, ~2.3 M parameters) trained briefly on
   labelled phantoms. It stands in for a foundation model such as TotalSegmentator.
2. Unlabeled phantoms: the teacher runs on them; nobody labels them.
3. A liver *student* (mobile_unet2d, ~55 k parameters) distilled from the teacher's soft outputs.
4. Export of the student to an ONNX bundle, parity-checked against torch.
5. A full `edgemed profile` report of the student (stage latency, throughput, FLOP/s, Dice/HD95,
   overlay image).
6. Evaluation on phantoms neither model saw, the student through the torch-free runtime (ONNX
   Runtime): student vs teacher Dice, both vs the phantom truth, size and CPU time per volume.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.io import write_nifti
from edgemed.phantom import PHANTOM_LABELS, make_phantom

__all__ = ["DemoConfig", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo (defaults take a few minutes on 2 CPU cores)."""

    teacher_scans: int = 4
    unlabeled_scans: int = 4
    test_scans: int = 2
    teacher_epochs: int = 12
    student_epochs: int = 15
    threads: int | None = None


# What a demo folder holds; one holding only these is an earlier demo (replaced with --overwrite).
DEMO_FILES = ("phantoms", "teacher", "teacher.resume", "liver_student", "liver_student.resume", "liver.edgemed",
              "teacher_predictions", "profile", "report.json")


def run_demo(out: Path, config: DemoConfig = DemoConfig(), *, progress: bool = True,
             overwrite: bool = False) -> dict[str, object]:
    """Run the demo into `out`; returns (and writes to out/report.json) the measured summary.

    Raises:
        OutputError: `out` holds something other than a demo (or a demo, without `overwrite`).
    """
    import torch

    from edgemed.artifacts import atomic_file, check_output

    check_output(out, kind="demo", overwrite=overwrite, layout=DEMO_FILES)

    from edgemed import runtime
    from edgemed.compress import DistillConfig, distill
    from edgemed.export import OnnxExportConfig, to_onnx
    from edgemed.measure import profile_bundle
    from edgemed.metrics import dice
    from edgemed.models import load_student, predict_volume
    from edgemed.models.teachers import StudentTeacher

    # Phantom anatomy is simple and smooth along z: one neighbour each side is enough, and fast.
    spec = PreprocessSpec(spacing_mm=(4.0, 4.0), context_slices=1, context_spacing_mm=5.0)
    seeds = iter(range(1000))
    data = out / "phantoms"

    def phantoms(n: int, prefix: str) -> tuple[list[Path], list[Path]]:
        scans, labels = [], []
        for _ in range(n):
            seed = next(seeds)
            ct, lab = make_phantom(seed)
            scans.append(write_nifti(ct, data / f"{prefix}{seed:03d}_ct.nii.gz"))
            labels.append(write_nifti(lab, data / f"{prefix}{seed:03d}_truth.nii.gz"))
        return scans, labels

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    train_scans, train_truth = phantoms(config.teacher_scans, "labelled")
    unlabeled, _ = phantoms(config.unlabeled_scans, "unlabeled")
    test_scans, test_truth = phantoms(config.test_scans, "test")
    organs = tuple(PHANTOM_LABELS.values())
    # The stand-in foundation model: supervised on labelled phantoms (the only labels in the demo).
    teacher_ckpt = distill(train_scans, DistillConfig(organs=organs, student="res_unet2d", epochs=config.teacher_epochs,
                                                      preprocess=spec, holdout_fraction=0.0, threads=config.threads),
                           out / "teacher", teacher_predictions=train_truth, progress=progress, overwrite=overwrite)
    timings["teacher_training_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    teacher = StudentTeacher(teacher_ckpt.path)
    student_ckpt = distill(unlabeled, DistillConfig(organs=("liver",), student="mobile_unet2d",
                                                    epochs=config.student_epochs, preprocess=spec,
                                                    threads=config.threads),
                           out / "liver_student", teacher=teacher, progress=progress, overwrite=overwrite)
    timings["distill_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bundle = to_onnx(student_ckpt, out / "liver.edgemed", OnnxExportConfig(parity_volumes=(test_scans[0],)),
                     overwrite=overwrite)
    timings["export_s"] = time.perf_counter() - t0

    student = load_student(student_ckpt)
    teacher_net = load_student(teacher_ckpt)
    liver_t = next(o.channel for o in teacher_ckpt.organs if o.name == "liver")
    rows = []
    t_student = t_teacher = 0.0
    from edgemed.io import read_labels, read_volume

    segmenter = runtime.load(bundle.path, backend="ort")
    runtime_vs_torch = []
    teacher_masks: list[Path] = []
    for scan, truth in zip(test_scans, test_truth):
        volume = read_volume(scan)
        gt = read_labels(truth, like=volume).array == 5
        segmenter.segment(volume)  # warm-up: first-run allocations are not what a device sees
        t = time.perf_counter()
        s_mask = segmenter.segment(volume).array == 5
        t_student += time.perf_counter() - t
        runtime_vs_torch.append(dice(s_mask, predict_volume(student, volume, student_ckpt.preprocess).argmax(0) == 1))
        t = time.perf_counter()
        t_mask = predict_volume(teacher_net, volume, teacher_ckpt.preprocess).argmax(0) == liver_t
        t_teacher += time.perf_counter() - t
        rows.append({"scan": scan.name, "student_vs_teacher": dice(s_mask, t_mask), "student_vs_truth": dice(s_mask, gt),
                     "teacher_vs_truth": dice(t_mask, gt)})
        teacher_masks.append(write_nifti(volume.with_array(t_mask.astype(np.uint8) * 5, modality="SEG"),
                                         out / "teacher_predictions" / scan.name))
    segmenter.close()
    # The full profile (stage latency, per-batch throughput, FLOP/s, Dice/HD95, overlay) on one scan.
    profile = profile_bundle(bundle.path, test_scans[0], teacher_predictions=teacher_masks[0],
                             ground_truth=test_truth[0], backend="ort", repeats=3, warmup=1, batch_sizes=(1, 8),
                             out_dir=out / "profile", overwrite=overwrite)
    n = len(rows)
    params = lambda net: int(sum(p.numel() for p in net.parameters()))  # noqa: E731
    summary = {
        "organ": "liver",
        "teacher": {"arch": "res_unet2d", "parameters": params(teacher_net), "cpu_s_per_volume": t_teacher / n,
                    "dice_vs_truth": float(np.mean([r["teacher_vs_truth"] for r in rows]))},
        "student": {"arch": "mobile_unet2d", "parameters": params(student), "cpu_s_per_volume": t_student / n,
                    "runtime": "onnxruntime (edgemed.runtime, no torch)",
                    "runtime_vs_torch_mask_dice": float(min(runtime_vs_torch)),
                    "export_parity": bundle.parity,
                    "dice_vs_teacher": float(np.mean([r["student_vs_teacher"] for r in rows])),
                    "dice_vs_truth": float(np.mean([r["student_vs_truth"] for r in rows])),
                    "heldout_dice_vs_teacher_during_training": student_ckpt.meta.validation.dice["liver"]},
        "test_scans": rows,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "torch_threads": torch.get_num_threads(),
        "artifacts": {"teacher": str(teacher_ckpt.path), "student": str(student_ckpt.path), "bundle": str(bundle.path),
                      "profile_report": str(profile.report_md), "profile_json": str(profile.report_json),
                      "overlay": str(profile.overlay_png)},
    }
    with atomic_file(out / "report.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_demo_student(out: Path) -> StudentCheckpoint:
    """The liver student a finished demo wrote."""
    return StudentCheckpoint.load(out / "liver_student")
