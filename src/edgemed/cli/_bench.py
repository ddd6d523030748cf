"""`edgemed bench`: measure a bundle the way the gate does — latency (normalised too), memory, Dice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgemed.cli._options import shown_scan

__all__ = ["bench", "measurement_lines"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--scan", type=click.Path(path_type=Path),
              help="The scan to segment (default: a built-in CT phantom, whose labels are the reference).")
@click.option("--reference", type=click.Path(path_type=Path), help="A reference label map of --scan, for Dice.")
@click.option("--backend", type=click.Choice(["auto", "ort", "openvino", "trt"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Backend threads.")
@click.option("--repeats", "--iterations", "repeats", type=int, default=40, show_default=True,
              help="Timed (bundle, reference workload) pairs.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed pairs first.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON on stdout.")
def bench(bundle: Path, scan: Path | None, reference: Path | None, backend: str, threads: int, repeats: int,
          warmup: int, as_json: bool) -> None:
    """Benchmark BUNDLE on a scan: latency p50/p90/p99, stage times, normalised latency, peak memory, Dice.

    Every call of the bundle is paired with a call of a fixed reference workload on the same
    backend; "normalised" is the median ratio of the two, a figure that moves with the model and
    hardly with the machine's load.

    \b
    Example:
      edgemed bench out/liver.edgemed --scan ct.nii.gz --reference seg.nii.gz
      edgemed bench out/liver.edgemed --iterations 200 --json > bench.json
    """
    from edgemed.measure import GateConfig, measure

    config = GateConfig(backend=backend, threads=threads, repeats=repeats, warmup=warmup)
    m = measure(bundle, scan=scan, reference=reference, config=config)
    if as_json:
        click.echo(json.dumps(m.summary_json(), indent=2))
        return
    for line in measurement_lines(m):
        click.echo(line)
    click.echo(f"next: store it as a CI baseline: edgemed check {bundle} --baseline {bundle.name}.baseline.json "
               "--update-baseline" + (f" --scan {shown_scan(scan)}" if scan else "") + (f" --reference {reference}" if reference
                                                                          else ""))


def measurement_lines(m: Any) -> list[str]:
    """A few lines summarising a `Measurement` (shared with `edgemed check --update-baseline`)."""
    import numpy as np

    lat = m.latency
    lines = [f"{m.bundle.name} on {m.scan.source}: {m.backend}, {m.threads} thread(s), {len(m.candidate_ms)} repeats "
             f"interleaved with a {m.workload.kind} reference workload",
             f"  latency p50 {lat.p50_ms:.2f} ms, p90 {lat.p90_ms:.2f} ms, p99 {lat.p99_ms:.2f} ms (wall clock); "
             + ", ".join(f"{k} {v:.2f}" for k, v in m.stages_ms.items()) + " ms (p50)",
             f"  normalised p50 {float(np.median(m.normalised)):.4f} x the reference workload ({m.clock} clock; "
             f"reference p50 {m.reference_latency.p50_ms:.2f} ms)"]
    if m.peak_memory_bytes is not None:
        lines.append(f"  peak memory {m.peak_memory_bytes / 2**20:.1f} MiB added by loading and segmenting "
                     f"({m.memory_method})")
    lines += [f"  Dice {organ} {value:.4f} vs {m.reference.source if m.reference else 'the reference'}"
              for organ, value in m.dice.items()]
    return lines
