"""`edgemed serve`: run the DICOM node from one TOML file, or print its queue's state (--status)."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["serve"]


@click.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--status", "show_status", is_flag=True,
              help="Print the node's queue (series by state, failures, latency) and exit; the node may be running.")
@click.option("--json", "as_json", is_flag=True, help="With --status: print it as JSON.")
def serve(config: Path, show_status: bool, as_json: bool) -> None:
    """Run a DICOM node: receive series (C-STORE, DICOMweb), segment them, send DICOM-SEG back.

    Every received instance is on disk before it is acknowledged and every series is in a durable
    queue, so a node stopped at any point (even kill -9) finishes each series once when restarted.
    Logs (stderr) and /metrics name series by a hash, never by a patient identifier or UID.

    \b
    Example:
      edgemed serve node.toml
      edgemed serve --status node.toml
    """
    from edgemed.serve import load_config, node_status, run_node

    node = load_config(config)
    if not show_status:
        run_node(node)
        return
    summary = node_status(node.folder)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    states = ", ".join(f"{k} {v}" for k, v in sorted(summary["states"].items())) or "no series yet"
    click.echo(f"node {node.folder}: {states}")
    click.echo(f"  queue {summary['queue_length']}, done {summary['series_done']}, failed to segment "
               f"{summary['failures']['segment']}, failed delivery attempts {summary['failures']['delivery']}")
    total = summary["latency_s"]["total"]
    if total["n"]:
        click.echo(f"  last instance → SEG delivered: p50 {total['p50']:.1f} s, p90 {total['p90']:.1f} s "
                   f"(n={total['n']})")
    if summary["oldest_pending_age_s"] is not None:
        click.echo(f"  oldest pending series: {summary['oldest_pending_age_s']:.0f} s; most delivery attempts "
                   f"{summary['max_delivery_attempts']}")
    for err in summary["recent_errors"]:
        click.echo(f"  series {err['series']} ({err['state']}): {err['error']}")
