"""`edgemed distill`: teacher + unlabeled scans → organ-specific student checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from edgemed.artifacts import PreprocessSpec as _PreprocessSpec
from edgemed.cli._options import MultiValueOption, overwrite_option
from edgemed.cli._pairing import pair_scans
from edgemed.compress import DistillConfig as _DistillConfig

_D = _DistillConfig(organs=("liver",))  # the defaults shown in --help are the library's
_P = _D.preprocess

__all__ = ["distill"]


@click.command()
@click.option("--scans", cls=MultiValueOption, required=True,
              help="CT/MR scans: NIfTI files, DICOM series folders, or a folder of them.")
@click.option("--teacher-predictions", cls=MultiValueOption,
              help="Stored teacher outputs (label maps or probability maps), paired with --scans in order, "
                   "or a folder paired by file name.")
@click.option("--teacher-store", type=click.Path(path_type=Path),
              help="A teacher store filled by edgemed precompute (one shard of teacher outputs per scan).")
@click.option("--teacher", help="A teacher to run: model.onnx, TorchScript .pt, an nnU-Net v2 model folder, "
                                "or package.module:factory (with --teacher-checkpoint).")
@click.option("--teacher-checkpoint", type=click.Path(path_type=Path), help="State-dict checkpoint for a module:factory teacher.")
@click.option("--teacher-dims", type=click.Choice(["2", "3"]),
              help="torch/ONNX teacher: runs on axial slices (2) or 3D patches (3, the default).")
@click.option("--teacher-window-hu", nargs=2, type=float, help="torch/ONNX teacher input window [default: -1024 1024].")
@click.option("--teacher-patch-size", nargs=3, type=int, help="torch/ONNX 3D teacher sliding-window patch (voxels).")
@click.option("--teacher-classes", help="Comma-separated label id of each teacher output channel (default 0..C-1).")
@click.option("--label-map", default="totalsegmentator", show_default=True,
              help="Class names of the teacher's labels: a built-in name or a JSON file.")
@click.option("--organ", "organs", cls=MultiValueOption, required=True, help="Organ(s) by name or id, e.g. liver.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Student checkpoint directory to write.")
@click.option("--student", default=_D.student, show_default=True, help="Zoo architecture (edgemed students).")
@click.option("--widths", cls=MultiValueOption, type=int,
              help="Channel widths per level, e.g. --widths 8 16 32 64 (default: the architecture's own).")
@click.option("--epochs", type=int, default=_D.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True)
@click.option("--temperature", type=float, default=_D.temperature, show_default=True, help="KD softmax temperature.")
@click.option("--spacing-mm", nargs=2, type=float, default=_P.spacing_mm, show_default=True,
              help="In-plane spacing the student works at.")
@click.option("--window-hu", nargs=2, type=float, default=_P.window_hu, show_default=True,
              help="Student CT intensity window.")
@click.option("--context-slices", type=int, default=_P.context_slices, show_default=True,
              help="2.5D neighbours on each side.")
@click.option("--context-spacing-mm", type=float, default=_P.context_spacing_mm, show_default=True,
              help="Distance between 2.5D neighbours (interpolated along z, so slice thickness does not matter).")
@click.option("--body-crop/--no-body-crop", default=_P.body_crop, show_default=True,
              help="Crop scans to the patient's body (no table, air or arms held apart) before resampling.")
@click.option("--ensemble", type=int, default=_D.ensemble, show_default=True,
              help="Students averaged into one model (more robust on unseen scanners; N x the cost).")
@click.option("--holdout-fraction", type=float, default=_D.holdout_fraction, show_default=True,
              help="Held out for validation: this share of the scans (whole) when there are 2 or more, "
                   "else a central block of this share of the organ's slices.")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--threads", type=int, help="torch threads (default: $EDGEMED_THREADS, else the CPUs free at the start).")
@click.option("--resume", is_flag=True,
              help="Continue from <out>.resume/ (the state saved every epoch) when there is one, else start afresh.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@overwrite_option
def distill(scans: tuple[str, ...], teacher_predictions: tuple[str, ...], teacher_store: Path | None, teacher: str | None,
            teacher_checkpoint: Path | None, teacher_dims: str | None, teacher_window_hu: tuple[float, float] | None,
            teacher_patch_size: tuple[int, int, int] | None, teacher_classes: str | None, label_map: str,
            organs: tuple[str, ...], out: Path, student: str, widths: tuple[int, ...], epochs: int,
            batch_size: int, lr: float, temperature: float, spacing_mm: tuple[float, float],
            window_hu: tuple[float, float], context_slices: int, context_spacing_mm: float, body_crop: bool,
            ensemble: int, holdout_fraction: float, seed: int, threads: int | None, resume: bool, as_json: bool,
            quiet: bool, overwrite: bool) -> None:
    """Distill a teacher into an organ-specific student, label-free.

    \b
    Examples:
      edgemed distill --scans ct.nii.gz --teacher-predictions seg.nii.gz --organ liver --out runs/liver
      edgemed distill --scans scans/ --teacher-predictions preds/ --organ kidney_left kidney_right --out runs/kidneys
      edgemed distill --scans dicom_series/ --teacher Dataset297_TotalSegmentator/... --organ liver --out runs/liver
      torchrun --nproc_per_node 4 -m edgemed distill --scans scans/ --teacher-store store/liver --organ liver \\
          --out runs/liver --resume
    """
    from edgemed.artifacts import STUDENT_KIND, PreprocessSpec, check_output
    from edgemed.compress import DistillConfig, distill as run_distill
    from edgemed.errors import ConfigError

    if sum(map(bool, (teacher, teacher_predictions, teacher_store))) != 1:
        raise ConfigError("give exactly one of --teacher (a model to run), --teacher-predictions (stored outputs) or "
                          "--teacher-store (a store filled by edgemed precompute).")
    # Before pairing scans or loading a teacher: a bad --out fails in a second, not after training.
    check_output(out, kind=STUDENT_KIND, overwrite=overwrite, inputs=[*scans, *teacher_predictions, teacher_store])
    scan_paths, pred_paths = pair_scans(scans, teacher_predictions or None)
    config = DistillConfig(
        organs=organs, label_map=label_map, student=student, student_kwargs={"widths": list(widths)} if widths else {},
        epochs=epochs, batch_size=batch_size, lr=lr,
        temperature=temperature, holdout_fraction=holdout_fraction, ensemble=ensemble, seed=seed, threads=threads,
        preprocess=PreprocessSpec(spacing_mm=spacing_mm, window_hu=window_hu, context_slices=context_slices,
                                  context_spacing_mm=context_spacing_mm, body_crop=body_crop),
    )
    teacher_obj = None
    if teacher:
        teacher_obj = _load_teacher(teacher, teacher_checkpoint, teacher_dims, teacher_window_hu,
                                    teacher_patch_size, teacher_classes)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun, only rank 0 prints
    if main:
        click.echo(f"distilling {', '.join(organs)} from {len(scan_paths)} scan(s) into {student} → {out}", err=True)
    try:
        ckpt = run_distill(scan_paths, config, out, teacher=teacher_obj, teacher_predictions=pred_paths,
                           teacher_store=teacher_store, progress=not quiet, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        # The training state is saved after every epoch (in <out>.resume/); say how to pick it up.
        raise KeyboardInterrupt(f"the last finished epoch is saved; continue it by running the same command with "
                                f"--resume (state in {out}.resume/)") from None
    if not main:
        return
    meta = ckpt.meta
    if as_json:
        click.echo(json.dumps({"path": str(out), "validation": meta.validation.to_json(),
                               "training": meta.training.to_json()}, indent=2))
        return
    dice = meta.validation.dice
    click.echo(f"wrote {out}  ({meta.training.parameters or 0:,d} parameters, {meta.training.seconds} s)")
    held = "scans" if meta.validation.holdout_kind == "scans" else "slices"
    for organ, value in dice.items():
        click.echo(f"  {organ:<24} Dice vs teacher on held-out {held}: {value:.4f}")
    click.echo(f"next: edgemed inspect {out}")
    sys.stdout.flush()


def _load_teacher(spec: str, checkpoint: Path | None, dims: str | None, window_hu: tuple[float, float] | None,
                  patch_size: tuple[int, int, int] | None, classes: str | None) -> object:
    """The teacher named by --teacher; input options only when given (nnU-Net folders carry their own)."""
    from edgemed.errors import ConfigError
    from edgemed.models.teachers import TeacherInputConfig, load_teacher

    class_ids = None
    if classes:
        try:
            class_ids = tuple(int(c) for c in classes.split(","))
        except ValueError as err:
            raise ConfigError(f"--teacher-classes {classes!r} must be comma-separated integers, e.g. 0,5,1.") from err
    options = {"dims": int(dims) if dims else None, "window_hu": window_hu, "patch_size": patch_size,
               "class_ids": class_ids}
    given = {k: v for k, v in options.items() if v is not None}
    return load_teacher(spec, checkpoint=checkpoint, config=TeacherInputConfig(**given) if given else None)
