"""`edgemed compress`: a recipe in, the best organ models for a target out, with report.html."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["compress"]


@click.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory (stage cache, run_log.jsonl, report.html)  [default: the recipe's out].")
@click.option("--target", default=None,
              help="'host' (measure here) or a profile id from `edgemed profiles` (latency predicted)  "
                   "[default: the recipe's, else host].")
@click.option("--latency-budget-ms", type=float, default=None, help="Largest whole-volume inference time allowed.")
@click.option("--min-dice", type=float, default=None, help="Smallest held-out Dice vs the teacher allowed.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def compress(recipe: Path, out: Path | None, target: str | None, latency_budget_ms: float | None,
             min_dice: float | None, no_progress: bool, as_json: bool) -> None:
    """Distill, prune, export, quantize and profile every organ of a recipe; pick the fastest good model.

    Recipe keys are these flags' names (`latency_budget_ms = 250`); flags override the recipe.
    Finished stages are cached by the hash of their config and inputs, so a rerun or a run
    resumed after a crash redoes nothing.

    \b
    Example:
      edgemed compress benchmarks/suite/recipes/totalseg_4organs.toml --out runs/4organs --min-dice 0.85
      edgemed compress recipe.toml --target jetson-orin-nano-8gb --latency-budget-ms 250
    """
    from edgemed.pipeline import load_recipe, run_recipe

    config = load_recipe(recipe).with_overrides(out=None if out is None else str(out), target=target,
                                                latency_budget_ms=latency_budget_ms, min_dice=min_dice)
    if config.target != "host":
        from edgemed.profiles import get_profile

        get_profile(config.target)  # fail on a wrong id before hours of training
    click.echo(f"compressing {', '.join(config.organs)} for {config.target} → {config.out or 'compress-run'}",
               err=True)
    result = run_recipe(config, progress=not no_progress)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1, default=str))
        return
    ran = sum(r["status"] == "ran" for r in result.log)
    click.echo(f"wrote {result.report} ({ran} stage(s) ran, {len(result.log) - ran} cached)")
    for organ in result.organs:
        c = organ.chosen
        assert c is not None  # run_recipe raised otherwise
        click.echo(f"  {organ.organ:<16} {c.name:<28} Dice {c.dice:.4f}  {c.latency_ms:8.1f} ms ({c.latency_label})"
                   f"  {c.size_bytes / 1e6:.2f} MB")
    first = result.organs[0].chosen
    click.echo(f"next: edgemed segment {first.bundle} CT.nii.gz --out mask.nii.gz  (open {result.report})")  # type: ignore[union-attr]
