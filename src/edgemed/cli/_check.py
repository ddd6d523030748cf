"""`edgemed check`: the CI regression gate — latency, memory and Dice of a bundle against a stored baseline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgemed.cli._options import shown_scan

__all__ = ["check"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--baseline", type=click.Path(path_type=Path), required=True,
              help="The baseline JSON file (created by --update-baseline; commit it beside the model).")
@click.option("--scan", type=click.Path(path_type=Path),
              help="The scan to segment (default: a built-in CT phantom, whose labels are the reference).")
@click.option("--reference", type=click.Path(path_type=Path),
              help="A reference label map of --scan: Dice is scored against it (else against the baseline's mask).")
@click.option("--update-baseline", is_flag=True, help="Measure and (re)write --baseline instead of comparing.")
@click.option("--junit-xml", "junit", type=click.Path(path_type=Path), help="Also write the verdict as JUnit XML.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout.")
@click.option("--fast", is_flag=True, help="Fewer repeats (15) and resamples: a smoke run for pull requests.")
@click.option("--backend", type=click.Choice(["auto", "ort", "openvino", "trt"]), default="auto", show_default=True,
              help="With a baseline, 'auto' means the baseline's backend.")
@click.option("--threads", type=int, help="Backend threads (default: 1, or the baseline's).")
@click.option("--repeats", type=int, help="Interleaved (bundle, reference workload) pairs timed [default: 40].")
@click.option("--warmup", type=int, help="Untimed pairs first [default: 3].")
@click.option("--latency-tolerance", type=float, default=0.10, show_default=True,
              help="Allowed p50 slowdown (fraction); fails only when the bootstrap lower bound exceeds it.")
@click.option("--p99-tolerance", type=float, help="Gate p99 too, with this tolerance (default: p99 is reported only).")
@click.option("--memory-tolerance", type=float, default=0.20, show_default=True, help="Allowed peak-memory growth.")
@click.option("--dice-tolerance-points", type=float, default=0.5, show_default=True,
              help="Allowed Dice drop per organ, in points (0.5 = 0.005).")
@click.option("--confidence", type=float, default=0.95, show_default=True,
              help="One-sided confidence of the bootstrap bound.")
@click.option("--workload", type=click.Choice(["auto", "conv", "matmul"]), default="auto", show_default=True,
              help="Reference workload for a new baseline (checks reuse the baseline's).")
@click.option("--ignore-load", is_flag=True,
              help="Judge latency even when other programs competed for the CPUs (default: exit 3, inconclusive).")
def check(bundle: Path, baseline: Path, scan: Path | None, reference: Path | None, update_baseline: bool,
          junit: Path | None, as_json: bool, fast: bool, backend: str, threads: int | None, repeats: int | None,
          warmup: int | None, latency_tolerance: float, p99_tolerance: float | None, memory_tolerance: float,
          dice_tolerance_points: float, confidence: float, workload: str, ignore_load: bool) -> None:
    """Gate BUNDLE against a stored baseline: exit 1 when latency, memory or Dice regressed.

    Latency is timed in pairs with a fixed reference workload on the same backend and compared
    normalised by it, so a slower or busier CI machine does not fail the gate; a regression is
    declared only when the bootstrap lower bound of the slowdown exceeds --latency-tolerance.
    When other programs kept more CPUs busy than the measurement left free, latency is not
    judged: the verdict is INCONCLUSIVE and the exit code 3 (rerun on an idle runner).

    \b
    Example:
      edgemed check out/liver.edgemed --baseline ci/liver.baseline.json --update-baseline   # on main
      edgemed check out/liver.edgemed --baseline ci/liver.baseline.json --junit-xml gate.xml
    """
    from edgemed.artifacts import check_output_file
    from edgemed.measure import GateConfig, check_bundle, write_junit_xml

    # Before measuring: CI rewrites its report on every run and --update-baseline is the ask to rewrite
    # the baseline (so an existing file is replaced), but a folder, link or input there is refused.
    for path in ([junit] if junit is not None else []) + ([baseline] if update_baseline else []):
        check_output_file(path, overwrite=True, inputs=[bundle, scan, reference])
    fields = dict(backend=backend, latency_tolerance=latency_tolerance, p99_tolerance=p99_tolerance,
                  memory_tolerance=memory_tolerance, dice_tolerance_points=dice_tolerance_points,
                  confidence=confidence, workload=workload, idle_headroom=None if ignore_load else GateConfig().idle_headroom)
    config = GateConfig(**fields)
    if fast:
        config = config.with_fast()
    overrides = {k: v for k, v in (("threads", threads), ("repeats", repeats), ("warmup", warmup)) if v is not None}
    config = GateConfig.from_mapping({**config.to_json(), **overrides})
    result = check_bundle(bundle, baseline, scan=scan, reference=reference, config=config,
                          update_baseline=update_baseline)
    if junit is not None:
        write_junit_xml(result, junit)
    again = f"edgemed check {bundle} --baseline {baseline}" + (f" --scan {shown_scan(scan)}" if scan else "") + (
        f" --reference {reference}" if reference else "")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif result.baseline_written:
        from edgemed.cli._bench import measurement_lines

        for line in measurement_lines(result.candidate):
            click.echo(line)
        click.echo(f"wrote baseline {baseline}" + (f" and {junit}" if junit else ""))
        click.echo(f"next: commit {baseline}; gate later builds with: {again}")
    else:
        click.echo(result.table())
        if junit is not None:
            click.echo(f"wrote {junit}")
        if result.inconclusive:
            click.echo(f"next: rerun on an idle machine: {again}")
        elif result.passed:
            click.echo(f"next: to accept this build's numbers as the new baseline: {again} --update-baseline")
        else:
            failed = {c.name.split("_")[0] for c in result.failures}
            where = f"edgemed profile {bundle} --scan {shown_scan(scan)}"
            if "dice" in failed:
                where += f" --ground-truth {reference or 'SEG'} (overlay.png shows where the masks differ)"
            click.echo(f"next: {where}; if the change is intended, re-baseline: {again} --update-baseline")
    if result.inconclusive:
        sys.exit(3)
    if not result.passed:
        sys.exit(1)

