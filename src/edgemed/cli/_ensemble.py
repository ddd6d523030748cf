"""`edgemed ensemble`: pool separately distilled students into one ensemble student."""

from __future__ import annotations

from pathlib import Path

import click

from edgemed.cli._options import overwrite_option

__all__ = ["ensemble"]


@click.command()
@click.argument("students", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Ensemble student directory to write.")
@overwrite_option
def ensemble(students: tuple[Path, ...], out: Path, overwrite: bool) -> None:
    """Average students of the same organ, architecture and preprocessing into one model.

    The ensemble is one network (one ONNX graph after export) whose output is the members'
    mean probability. `edgemed distill --ensemble 2 --seed 0` trains the same members as two
    runs with --seed 0 and --seed 1, so runs made apart (or on other machines) can be pooled.

    \b
    Example:
      edgemed ensemble runs/liver_s0 runs/liver_s1 --out runs/liver_ens2
    """
    from edgemed.compress import ensemble_students

    ckpt = ensemble_students(students, out, overwrite=overwrite)
    training = ckpt.meta.training
    click.echo(f"wrote {out}  ({training.members} members, {training.parameters or 0:,d} parameters)")
    click.echo(f"next: edgemed export {out} --out {out}.edgemed")
