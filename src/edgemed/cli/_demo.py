"""`edgemed demo`: distillation end to end on built-in synthetic CT phantoms."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["demo", "demo_table"]


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("edgemed-demo"), show_default=True,
              help="Folder for phantoms, models, bundles, report.json and report.html.")
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the phantoms and seeds training.")
@click.option("--threads", type=int, help="torch and runtime threads (default: $EDGEMED_THREADS, else the CPUs free "
                                          "at the start).")
@click.option("--quick", is_flag=True, help="A smaller, faster run (for smoke tests; its numbers mean little).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier demo at --out (anything else there is refused).")
def demo(out: Path, seed: int, threads: int | None, quick: bool, quiet: bool, overwrite: bool) -> None:
    """Teacher → unlabeled scans → liver student → INT8, on synthetic CT phantoms; prints the measurements.

    \b
    A large multi-organ teacher is trained on labelled phantoms (standing in for a foundation
    model), labels unlabeled phantoms with its soft outputs, and a small liver student is
    distilled from them, exported to ONNX (parity-checked) and quantized to INT8. All three are
    then timed in the same torch-free runtime and scored on phantoms neither model saw; the
    run ends with report.html (tables, and overlays where student and teacher disagree).
    """
    from edgemed.cli._demo_job import DemoConfig, run_demo

    config = DemoConfig(seed=seed, threads=threads)
    if quick:
        # A 4x narrower teacher (res_unet2d's default widths), trained longer on fewer phantoms.
        config = DemoConfig(teacher_scans=2, unlabeled_scans=2, test_scans=1, teacher_epochs=6, student_epochs=4,
                            finetune_epochs=2, teacher_widths=(16, 32, 64, 128, 160), timing_repeats=2, seed=seed,
                            threads=threads)
    click.echo(f"edgemed demo → {out}", err=True)
    summary = run_demo(out, config, progress=not quiet, overwrite=overwrite)
    click.echo("")
    click.echo(demo_table(summary))
    click.echo(f"\nreport: {summary['artifacts']['report_html']}")
    click.echo(f"next: edgemed segment {summary['artifacts']['compressed_bundle']} SCAN --out liver.nii.gz")


def demo_table(summary: dict[str, Any]) -> str:
    """The table `edgemed demo` prints (also used to regenerate the README's copy)."""
    rows = summary["models"]
    teacher_s = rows[0]["s_per_volume"]
    lines = [f"{'model':<15}{'arch':<15}{'params':>11}{'grid':>7}{'ms/volume':>11}{'speed':>8}"
             f"{'Dice vs truth':>15}{'vs teacher':>12}"]
    for r in rows:
        vs_t = "—" if r["dice_vs_teacher"] is None else f"{r['dice_vs_teacher']:.3f}"
        lines.append(f"{r['role']:<15}{r['arch']:<15}{r['parameters']:>11,d}{r['grid_mm'][0]:>5g}mm"
                     f"{1000 * r['s_per_volume']:>11.1f}{teacher_s / r['s_per_volume']:>7.1f}x"
                     f"{r['dice_vs_truth']:>15.3f}{vs_t:>12}")
    t = summary["timing"]
    teacher_all = rows[0]["s_per_volume_all_cpus"]
    lines.append(f"\nliver on {len(summary['test_scans'])} unseen phantoms; all three timed in {summary['runtime']}, "
                 f"median of {t['repeats']} interleaved calls on {t['threads']} thread (with {t['all_cpus_threads']}: "
                 f"student {teacher_all / rows[1]['s_per_volume_all_cpus']:.1f}x, compressed "
                 f"{teacher_all / rows[2]['s_per_volume_all_cpus']:.1f}x); demo took {summary['total_s']:.0f} s")
    return "\n".join(lines)
