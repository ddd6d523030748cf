"""`edgemed prune`: structured channel pruning of a student, then (optionally) distillation fine-tune."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli._options import MultiValueOption

__all__ = ["prune"]


@click.command()
@click.argument("student", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Pruned student directory to write.")
@click.option("--ratio", type=float, default=0.5, show_default=True, help="Share of channels removed per layer.")
@click.option("--importance", type=click.Choice(["magnitude", "bn_scale", "taylor"]), default="magnitude",
              show_default=True)
@click.option("--steps", type=int, default=1, show_default=True, help="Iterative pruning steps.")
@click.option("--finetune-scans", cls=MultiValueOption,
              help="Unlabeled scans: fine-tune the pruned student by distillation from the unpruned one.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Fine-tune epochs.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Fine-tune learning rate.")
def prune(student: Path, out: Path, ratio: float, importance: str, steps: int, finetune_scans: tuple[str, ...],
          epochs: int, lr: float) -> None:
    """Remove channels from a student (torch-pruning, DepGraph); fine-tune it from the unpruned one.

    \b
    Example:
      edgemed prune runs/liver --ratio 0.5 --finetune-scans ct1.nii.gz ct2.nii.gz --out runs/liver_p50
    """
    import tempfile

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import DistillConfig, PruneConfig, distill, prune as run_prune
    from edgemed.models.teachers import StudentTeacher

    config = PruneConfig(ratio=ratio, importance=importance, iterative_steps=steps)
    parent = StudentCheckpoint.load(student)
    if not finetune_scans:
        pruned = run_prune(parent, config, out)
        before, after = pruned.metadata["pruning"]["parameters"]
        click.echo(f"wrote {out}: {before:,d} → {after:,d} parameters (not fine-tuned; pass --finetune-scans)")
        return
    with tempfile.TemporaryDirectory(prefix="edgemed-prune-") as tmp:
        pruned = run_prune(parent, config, Path(tmp) / "pruned")
        organs = tuple(o.name for o in parent.organs)
        label_map = parent.metadata.get("label_map", {}).get("name", "totalsegmentator")
        tuned = distill(list(finetune_scans), DistillConfig(organs=organs, label_map=label_map, epochs=epochs, lr=lr,
                                                            preprocess=parent.preprocess),
                        out, teacher=StudentTeacher(student), init=pruned)
    before, after = pruned.metadata["pruning"]["parameters"]
    click.echo(f"wrote {out}: {before:,d} → {after:,d} parameters, fine-tuned {epochs} epochs from {student}")
    for organ, value in tuned.metadata["validation"].get("dice", {}).items():
        click.echo(f"  {organ:<24} Dice vs the unpruned student on held-out data: {value:.4f}")
    click.echo(f"next: edgemed export {out} --out {out}.edgemed")
