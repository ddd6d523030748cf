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
@click.option("--max-dice-drop", type=float, default=None,
              help="Largest held-out Dice a shipped model may lose against its organ's unpruned FP32 student "
                   "(e.g. 0.01)  [default: the recipe's, else no limit].")
@click.option("--seed", type=int, default=None, help="Seed of every distillation  [default: the recipe's [distill] seed, else 0].")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def compress(recipe: Path, out: Path | None, target: str | None, latency_budget_ms: float | None,
             min_dice: float | None, max_dice_drop: float | None, seed: int | None, no_progress: bool,
             as_json: bool) -> None:
    """Distill, prune, export, quantize and profile every organ of a recipe; pick the fastest good model.

    Recipe keys are these flags' names (`latency_budget_ms = 250`); flags override the recipe.
    Finished stages are cached by the hash of their config and inputs, so a rerun or a run
    resumed after a crash redoes nothing. Same recipe, same seed, same machine and threads: the same
    students and Dice; the pick is timed side by side (latencies within 25 % of the fastest are ties,
    decided by Dice: `[search] latency_tie`), and a build whose latency sits near that margin can swap.

    When an organ has no model meeting --min-dice (within the budget), the report, results.json
    and the most accurate bundle are still written, marked below the bar with the setting most
    likely to lift it, and the command exits 1.

    \b
    Example:
      edgemed compress benchmarks/suite/recipes/totalseg_4organs.toml --out runs/4organs --min-dice 0.85
      edgemed compress recipe.toml --target jetson-orin-nano-8gb --latency-budget-ms 250
    """
    from edgemed.errors import EdgemedError
    from edgemed.pipeline import load_recipe, run_recipe

    config = load_recipe(recipe).with_overrides(out=None if out is None else str(out), target=target,
                                                latency_budget_ms=latency_budget_ms, min_dice=min_dice,
                                                max_dice_drop=max_dice_drop)
    if seed is not None:
        config = config.with_overrides(distill={**config.distill, "seed": int(seed)})
    if config.target != "host":
        from edgemed.profiles import get_profile

        get_profile(config.target)  # fail on a wrong id before hours of training
    click.echo(f"compressing {', '.join(config.organs)} for {config.target} → {config.out or 'compress-run'}",
               err=True)
    result = run_recipe(config, progress=not no_progress, raise_on_budget=False)
    below = [o for o in result.organs if o.chosen is None]
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1, default=str))
    else:
        ran = sum(r["status"] == "ran" for r in result.log)
        click.echo(f"wrote {result.report} ({ran} stage(s) ran, {len(result.log) - ran} cached)")
        for organ in result.organs:
            c = organ.shown
            if c is None:
                click.echo(f"  {organ.organ:<16} no model built: {organ.error}")
                continue
            mark = "" if organ.chosen else f"  BELOW THE BAR (Dice < {config.min_dice:g} or over budget)"
            ms, label = organ.latency_of(c)  # what decided: the side-by-side timing where there was one
            click.echo(f"  {organ.organ:<16} {c.name:<28} Dice {c.dice:.4f}  {ms:8.1f} ms ({label})"
                       f"  {c.size_bytes / 1e6:.2f} MB{mark}")
            if organ.knob:
                click.echo(f"  {'':<16} most likely lift: {organ.knob['knob']} ({organ.knob['why']})")
        shipped = next((o.shown for o in result.organs if o.shown is not None), None)
        if shipped is not None:
            click.echo(f"next: edgemed segment {shipped.bundle} CT.nii.gz --out mask.nii.gz  (open {result.report})")
    if below:
        names = ", ".join(o.organ for o in below)
        raise EdgemedError(f"{names}: no model meets --min-dice {config.min_dice:g}"
                           + ("" if config.latency_budget_ms is None else f" within {config.latency_budget_ms:g} ms")
                           + f"; the most accurate bundle of each is written, marked below the bar ({result.report}).")
