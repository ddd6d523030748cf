"""`edgemed prune`: structured channel pruning of a student, then (optionally) distillation fine-tune."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli._options import MultiValueOption, overwrite_option

__all__ = ["prune"]


@click.command()
@click.argument("student", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Pruned student directory to write.")
@click.option("--ratio", type=float, default=None, help="Share of channels removed per layer  [default: 0.5].")
@click.option("--target-macs", type=float, default=None,
              help="Instead of --ratio: prune until at most this share of the MACs is left (0.25 = a quarter).")
@click.option("--target-latency-ms", type=float, default=None,
              help="Instead of --ratio: prune until one slice runs within this many ms here (ONNX Runtime).")
@click.option("--latency-size", type=int, default=256, show_default=True,
              help="Slice edge in pixels for --target-latency-ms.")
@click.option("--max-ratio", type=float, default=0.9, show_default=True,
              help="With a target: the largest share of channels that may go.")
@click.option("--importance", type=click.Choice(["magnitude", "bn_scale", "taylor"]), default="magnitude",
              show_default=True)
@click.option("--steps", type=int, default=1, show_default=True, help="Iterative pruning steps.")
@click.option("--keep-head-inputs/--prune-head-inputs", default=True, show_default=True,
              help="Leave the layer feeding the output head whole (pruning it can lose an organ for good).")
@click.option("--finetune-scans", cls=MultiValueOption,
              help="Unlabeled scans: fine-tune the pruned student by distillation from the unpruned one.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Fine-tune epochs.")
@click.option("--lr", type=float, default=3e-3, show_default=True,
              help="Fine-tune learning rate (a pruned student may start at Dice 0; 1e-3 can be too low to recover).")
@overwrite_option
def prune(student: Path, out: Path, ratio: float | None, target_macs: float | None, target_latency_ms: float | None,
          latency_size: int, max_ratio: float, importance: str, steps: int, keep_head_inputs: bool,
          finetune_scans: tuple[str, ...], epochs: int, lr: float, overwrite: bool) -> None:
    """Remove channels from a student (torch-pruning, DepGraph); fine-tune it from the unpruned one.

    \b
    Example:
      edgemed prune runs/liver --ratio 0.5 --finetune-scans ct1.nii.gz ct2.nii.gz --out runs/liver_p50
      edgemed prune runs/liver --target-latency-ms 8 --out runs/liver_8ms
    """
    import tempfile

    from edgemed.artifacts import STUDENT_KIND, StudentCheckpoint, check_output
    from edgemed.compress import DistillConfig, PruneConfig, distill, prune as run_prune
    from edgemed.models.teachers import StudentTeacher

    config = PruneConfig(ratio=ratio, target_macs=target_macs, target_latency_ms=target_latency_ms,
                         latency_size=latency_size, max_ratio=max_ratio, importance=importance, iterative_steps=steps,
                         keep_head_inputs=keep_head_inputs)
    check_output(out, kind=STUDENT_KIND, overwrite=overwrite, inputs=[student, *finetune_scans])
    parent = StudentCheckpoint.load(student)
    if not finetune_scans:
        pruned = run_prune(parent, config, out, progress=True, overwrite=overwrite)
        click.echo(f"wrote {out}: {_summary(pruned)} (not fine-tuned; pass --finetune-scans)")
        return
    with tempfile.TemporaryDirectory(prefix="edgemed-prune-") as tmp:
        pruned = run_prune(parent, config, Path(tmp) / "pruned", progress=True)
        organs = tuple(o.name for o in parent.organs)
        label_map = parent.meta.label_map_name or "totalsegmentator"
        tuned = distill(list(finetune_scans), DistillConfig(organs=organs, label_map=label_map, epochs=epochs, lr=lr,
                                                            preprocess=parent.preprocess),
                        out, teacher=StudentTeacher(student), init=pruned, overwrite=overwrite)
    click.echo(f"wrote {out}: {_summary(pruned)}, fine-tuned {epochs} epochs from {student}")
    for organ, value in tuned.meta.validation.dice.items():
        click.echo(f"  {organ:<24} Dice vs the unpruned student on held-out data: {value:.4f}")
    click.echo(f"next: edgemed export {out} --out {out}.edgemed")


def _summary(pruned) -> str:  # type: ignore[no-untyped-def]
    record = pruned.meta.pruning or {}
    (before, after), (macs0, macs1) = record["parameters"], record["macs_at"][:2]
    text = (f"{before:,d} → {after:,d} parameters, {macs1 / macs0:.0%} of the MACs, "
            f"{record['ratio_reached']:.0%} of channels removed")
    if record.get("latency_ms_onnxruntime"):
        t0, t1 = record["latency_ms_onnxruntime"]
        text += f", {t0:.1f} → {t1:.1f} ms per slice here (ONNX Runtime)"
    return text
