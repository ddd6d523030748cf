"""`edgemed profiles`: the hardware target profiles (built-in, user TOML, this host measured)."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["profiles"]


@click.command()
@click.option("--file", "user_file", type=click.Path(path_type=Path), default=None,
              help="A TOML file of your own targets ([targets.<id>] tables); $EDGEMED_PROFILES works too.")
@click.option("--host", is_flag=True, help="Also detect this machine and measure its peaks (a few seconds).")
@click.option("--show", "show_id", default=None, help="Print one profile in full, with the source of every figure.")
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def profiles(user_file: Path | None, host: bool, show_id: str | None, as_json: bool) -> None:
    """List target profiles: dense peak compute per precision, memory bandwidth, memory, DLA, software.

    \b
    Example:
      edgemed profiles
      edgemed profiles --show jetson-orin-nano-8gb
      edgemed profiles --host --file my_targets.toml
    """
    from edgemed.measure import get_target
    from edgemed.profiles import list_profiles

    if show_id is not None:
        click.echo(json.dumps(get_target(show_id, user_file).to_json(), indent=2))
        return
    items = list_profiles(user_file)
    if host:
        items.append(get_target("host"))
    if as_json:
        click.echo(json.dumps([p.to_json() for p in items], indent=2))
        return
    click.echo(f"{'id':<24} {'kind':<4} {'fp32':>7} {'fp16':>7} {'int8':>7} {'GB/s':>7} {'GiB':>6} {'DLA':>3}  "
               "software")
    for p in items:
        peaks = {k.value: v for k, v in p.peak_tops.items()}
        cell = lambda key: f"{peaks[key]:7.2f}" if key in peaks else f"{'-':>7}"  # noqa: E731
        soft = " ".join(x for x in (f"JetPack {p.jetpack}" if p.jetpack else "",
                                    f"TensorRT {p.tensorrt}" if p.tensorrt else "", p.preferred_backend) if x)
        click.echo(f"{p.id:<24} {p.accelerator.value:<4} {cell('fp32')} {cell('fp16')} {cell('int8')} "
                   f"{p.memory_bandwidth_gbs:7.1f} {p.memory_mib / 1024:6.1f} {p.dla_cores:>3}  {soft}")
    click.echo("peaks: dense tera-ops/s (tensor cores on GPUs); sources: edgemed profiles --show ID")
    click.echo("next: edgemed profile BUNDLE --scan CT --target ID   (predicted latency on a target not at hand)")
