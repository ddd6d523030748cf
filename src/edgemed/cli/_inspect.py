"""`edgemed inspect` and `edgemed students`."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["inspect", "students"]


@click.command()
@click.argument("artifact", required=False, type=click.Path(path_type=Path))
@click.option("--label-map", help="Print the classes of a label map (built-in name or JSON file) instead.")
@click.option("--no-verify", is_flag=True, help="Skip the sha256 check of the payload files.")
def inspect(artifact: Path | None, label_map: str | None, no_verify: bool) -> None:
    """Print ARTIFACT's manifest (kind, hashes, lineage, metadata) as JSON.

    \b
    Examples:
      edgemed inspect runs/liver
      edgemed inspect --label-map totalsegmentator
    """
    from edgemed.artifacts import read_manifest
    from edgemed.errors import ConfigError

    if label_map:
        from edgemed.io import load_label_map

        lm = load_label_map(label_map)
        for i, name in sorted(lm.labels.items()):
            click.echo(f"{i:4d}  {name}")
        return
    if artifact is None:
        raise ConfigError("give an artifact directory to inspect, or --label-map NAME.")
    manifest = read_manifest(artifact, verify=not no_verify)
    click.echo(json.dumps(manifest.to_json(), indent=2))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def students(as_json: bool) -> None:
    """List the student architectures, with parameter counts for one organ and 2.5D input."""
    from edgemed.models import StudentSpec, create_student, list_students

    rows = []
    for info in list_students():
        net = create_student(StudentSpec(arch=info.name, in_channels=3, num_classes=2))
        rows.append({"arch": info.name, "parameters": sum(p.numel() for p in net.parameters()),
                     "defaults": info.defaults, "summary": info.summary})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['arch']:<15} {r['parameters']:>10,d} params  {r['summary']}")
