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
@click.option("--json", "as_json", is_flag=True, help="Print the raw manifest (kind, hashes, lineage, metadata).")
def inspect(artifact: Path | None, label_map: str | None, no_verify: bool, as_json: bool = False) -> None:
    """Summarise ARTIFACT: kind, organs, architecture, parameters, precision, backend, held-out Dice.

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
    if as_json:
        click.echo(json.dumps(manifest.to_json(), indent=2))
        return
    for line in _summary(artifact, manifest):
        click.echo(line)
    click.echo(f"raw manifest: edgemed inspect {artifact} --json")


def _summary(path: Path, manifest: object) -> list[str]:
    """What a reader wants to know of an artifact, from its typed metadata."""
    from edgemed.artifacts import BUNDLE_KIND, ENGINE_KIND, STUDENT_KIND, StudentCheckpoint, open_bundle

    kind = manifest.kind  # type: ignore[attr-defined]
    lines = [f"{path}: {kind} artifact (schema {manifest.schema_version}, "  # type: ignore[attr-defined]
             f"edgemed {manifest.edgemed_version}, {len(manifest.files)} file(s))"]  # type: ignore[attr-defined]
    if kind in (BUNDLE_KIND, ENGINE_KIND):
        meta = open_bundle(path, verify=False, manifest=manifest).meta  # type: ignore[arg-type]
        st = meta.student
        dice, holdout = st.validation_dice, st.extra.get("holdout_kind")
        lines += [f"  organs: {', '.join(f'{o.name} (label {o.label_id})' for o in meta.organs)}",
                  f"  architecture: {st.arch or 'unknown'}; parameters: "
                  f"{f'{st.parameters:,d}' if st.parameters else 'unknown'}",
                  f"  precision: {meta.precision}; preferred backend: {meta.preferred_backend or 'none recorded (auto)'}"]
    elif kind == STUDENT_KIND:
        ckpt = StudentCheckpoint.load(path, verify=False)
        m = ckpt.meta
        dice, holdout = m.validation.dice, m.validation.holdout_kind
        lines += [f"  organs: {', '.join(f'{o.name} (label {o.label_id})' for o in m.organs)}",
                  f"  architecture: {ckpt.architecture.get('arch', 'unknown')}; parameters: "
                  f"{f'{m.training.parameters:,d}' if m.training.parameters else 'unknown'}",
                  "  precision: fp32 (torch weights); preferred backend: n/a (export it first)"]
    else:
        return lines
    shown = ", ".join(f"{k} {v:.4f}" for k, v in dice.items()) or "not recorded"
    lines.append(f"  held-out Dice vs teacher: {shown} (holdout: {holdout or 'unknown'})")
    return lines


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
