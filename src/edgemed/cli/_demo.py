"""`edgemed demo`: distillation end to end on built-in synthetic CT phantoms."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("edgemed-demo"), show_default=True,
              help="Folder for phantoms, teacher, student and report.json.")
@click.option("--threads", type=int, help="torch threads (default: $EDGEMED_THREADS, else the CPUs free at the start).")
@click.option("--quick", is_flag=True, help="A smaller, faster run (for smoke tests).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo at --out (anything else there is refused).")
def demo(out: Path, threads: int | None, quick: bool, quiet: bool, overwrite: bool) -> None:
    """Teacher → unlabeled scans → liver student, on synthetic CT phantoms; prints the measurements.

    \b
    A large multi-organ teacher is trained briefly on labelled phantoms (standing in for a
    foundation model), runs on unlabeled phantoms, and a ~55 k-parameter liver student is
    distilled from its soft outputs, exported to an ONNX bundle (parity-checked) and run by the
    torch-free runtime. Both models are then measured on phantoms neither has seen.
    """
    from edgemed.cli._demo_job import DemoConfig, run_demo

    config = DemoConfig(threads=threads)
    if quick:
        config = DemoConfig(teacher_scans=2, unlabeled_scans=2, test_scans=1, teacher_epochs=3, student_epochs=3,
                            threads=threads)
    click.echo(f"edgemed demo → {out}", err=True)
    s = run_demo(out, config, progress=not quiet, overwrite=overwrite)
    t, st = s["teacher"], s["student"]  # type: ignore[index]
    click.echo("")
    click.echo(f"{'model':<10}{'arch':<16}{'params':>12}{'CPU s/volume':>14}{'Dice vs truth':>15}{'Dice vs teacher':>17}")
    click.echo(f"{'teacher':<10}{t['arch']:<16}{t['parameters']:>12,d}{t['cpu_s_per_volume']:>14.3f}"
               f"{t['dice_vs_truth']:>15.3f}{'—':>17}")
    click.echo(f"{'student':<10}{st['arch']:<16}{st['parameters']:>12,d}{st['cpu_s_per_volume']:>14.3f}"
               f"{st['dice_vs_truth']:>15.3f}{st['dice_vs_teacher']:>17.3f}")
    click.echo(f"\nliver on {len(s['test_scans'])} unseen phantom(s); teacher timed in torch, student in "  # type: ignore[arg-type]
               f"edgemed.runtime (ONNX Runtime, no torch); runtime vs torch mask Dice {st['runtime_vs_torch_mask_dice']:.4f}")
    click.echo(f"report: {out / 'report.json'}; profile: {s['artifacts']['profile_report']}")  # type: ignore[index]
    click.echo(f"next: edgemed segment {out / 'liver.edgemed'} SCAN --out liver.nii.gz")
