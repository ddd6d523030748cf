"""`edgemed profile`: time, count and score a bundle on one scan; write report.json, report.md, overlay.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from edgemed.cli._options import overwrite_option, shown_scan

__all__ = ["profile"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--scan", type=click.Path(path_type=Path), required=True,
              help="The scan to profile on (NIfTI file or DICOM series folder).")
@click.option("--teacher-predictions", type=click.Path(path_type=Path),
              help="The teacher's label map of the scan, for Dice/HD95 vs teacher.")
@click.option("--ground-truth", type=click.Path(path_type=Path), help="A reference label map of the scan.")
@click.option("--backend", type=click.Choice(["auto", "ort", "openvino", "trt"]), default="auto", show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed runs per stage and batch size.")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed runs before them.")
@click.option("--threads", type=int, help="Backend threads (default: $EDGEMED_THREADS, else the physical cores free now).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Report folder (default: ./profile-<bundle name>).")
@click.option("--target", default=None,
              help="Predict the inference latency on this target profile instead of measuring here "
                   "(`edgemed profiles` lists them; 'host' measures).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="With --target: the precision the target will run (default: the bundle's).")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="With --target: efficiencies fitted on measured runs: a JSON file, or a shipped name "
                   "(host_ort_int8, host_openvino_fp32, ...; benchmarks/suite/predict_latency.py writes them).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--reference-label", "reference_labels", multiple=True, metavar="ORGAN=ID|ID",
              help="The organ's label id in the reference maps when it differs from the bundle's (a DICOM-SEG "
                   "numbers segments 1..); ID alone for a one-organ bundle. Repeatable.")
@overwrite_option
def profile(bundle: Path, scan: Path, teacher_predictions: Path | None, ground_truth: Path | None, backend: str,
            repeats: int, warmup: int, threads: int | None, out: Path | None, target: str | None,
            precision: str | None, calibration: Path | None, as_json: bool, overwrite: bool,
            reference_labels: tuple[str, ...] = ()) -> None:
    """Profile BUNDLE on a scan: stage latency percentiles, batch throughput, FLOP/s vs this host's peak, Dice.

    \b
    Example:
      edgemed profile out/liver.edgemed --scan ct.nii.gz --teacher-predictions seg.nii.gz --out out/profile
      edgemed profile out/liver.edgemed --scan ct.nii.gz --target jetson-orin-nano-8gb --precision fp16
    """
    from edgemed.measure import profile_bundle

    if target is not None and target != "host":
        _predict(bundle, scan, target, precision, calibration, as_json)
        return

    out_dir = out if out is not None else Path(f"profile-{bundle.name or 'bundle'}")
    report = profile_bundle(bundle, scan, teacher_predictions=teacher_predictions, ground_truth=ground_truth,
                            backend=backend, repeats=repeats, warmup=warmup, threads=threads, out_dir=out_dir,
                            overwrite=overwrite, reference_labels=_reference_labels(bundle, reference_labels))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    s = report.stages
    click.echo(f"{report.bundle.name} on {report.scan.name}: {report.slices} slices, {report.backend}, "
               f"{report.config.repeats} repeats")
    click.echo("  " + "  ".join(f"{name} {p.p50_ms:.1f}" for name, p in s.items() if name != "total")
               + f"  | total {s['total'].p50_ms:.1f} ms (p50)")
    click.echo(f"  inference share {100 * report.inference_share:.1f} %; batch "
               + ", ".join(f"{b.batch_size}: {b.slices_per_s:.0f} slices/s" for b in report.batches))
    m = report.model
    if m.achieved_gflops is not None:
        click.echo(f"  {m.flops_per_slice / 1e9:.3f} GFLOP/slice; achieved {m.achieved_gflops:.2f} GFLOP/s = "
                   f"{m.peak_percent:.1f} % of this host's {m.peak_gflops:.1f} GFLOP/s matmul peak")
    for a in report.accuracy:
        hd = "inf" if math.isinf(a.hd95_mm) else f"{a.hd95_mm:.1f}"
        click.echo(f"  {a.organ:<16} vs {a.reference:<12} Dice {a.dice:.4f} ({a.scope})  HD95 {hd} mm")
    if report.heldout_dice:
        click.echo("  held-out Dice recorded at distillation (vs the teacher): "
                   + ", ".join(f"{k} {v:.4f}" for k, v in report.heldout_dice.items()))
    if report.qc:
        q = report.qc["report"]
        scores = ", ".join(f"{o['name']} {o['score']:.2f}" for o in q["organs"] if o["score"] is not None)
        click.echo(f"  QC {q['verdict']}" + ("" if q["calibrated"] else " (not calibrated)")
                   + (f", estimated Dice {scores}" if scores else "")
                   + f"; QC {report.qc['share_of_segment_p50']:.1%} of segment time")
        for reason in q["reasons"]:
            if reason["severity"] in ("warn", "fail"):
                click.echo(f"    {reason['severity']}: {reason['message']}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {report.report_md}, {report.report_json}"
               + (f", {report.overlay_png}" if report.overlay_png else ""))
    if not report.accuracy:
        click.echo(f"next: add --teacher-predictions SEG to measure Dice vs the teacher: edgemed profile {bundle} "
                   f"--scan {shown_scan(scan)} --teacher-predictions SEG")
    else:
        other = "openvino" if report.backend == "ort" else "ort"
        click.echo(f"next: read {report.report_md}; compare backends: edgemed profile {bundle} --scan {shown_scan(scan)} "
                   f"--backend {other} --out {out_dir}-{other}")


def _reference_labels(bundle: Path, values: tuple[str, ...]) -> dict[str, int]:
    """--reference-label values as organ → id ("ID" alone: the one organ of a one-organ bundle)."""
    from edgemed.artifacts import open_bundle
    from edgemed.errors import ConfigError

    out: dict[str, int] = {}
    organs = open_bundle(bundle, verify=False).organs if values else ()
    for value in values:
        organ, sep, text = value.rpartition("=")
        try:
            label = int(text)
        except ValueError:
            raise ConfigError(f"--reference-label {value!r}: give ORGAN=ID (e.g. liver=1) or an integer ID.") from None
        if not sep:
            if len(organs) != 1:
                raise ConfigError(f"--reference-label {value}: {bundle} segments {len(organs)} organs "
                                  f"({', '.join(o.name for o in organs)}); say which: ORGAN=ID.")
            organ = organs[0].name
        organ = organ.strip()
        if organ not in {o.name for o in organs}:  # before the timing runs, not after them
            raise ConfigError(f"--reference-label {value}: {bundle} has no organ {organ!r}; it segments "
                              f"{', '.join(o.name for o in organs)}.")
        out[organ] = label
    return out


def _predict(bundle: Path, scan: Path, target_id: str, precision: str | None, calibration: Path | None,
             as_json: bool) -> None:
    from edgemed.measure import get_target, load_calibration, predict_bundle

    target = get_target(target_id)
    cal = load_calibration(str(calibration)) if calibration is not None else None
    result = predict_bundle(bundle, scan, target, calibration=cal, precision=precision)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    per = result["per_batch"]
    c = per["calibration"]
    click.echo(f"PREDICTED (not measured) on {target.name} [{target.id}], {result['precision']}:")
    click.echo(f"  inference {result['volume_inference_ms']:.1f} ms per volume ({result['batches']} batches of "
               f"{result['batch']} slices, {per['latency_ms']:.2f} ms each: compute {per['compute_ms']:.2f}, "
               f"memory {per['memory_ms']:.2f}, per-layer overhead {per['overhead_ms']:.2f})")
    click.echo(f"  calibration: {c['backend']}/{c['precision']} compute efficiency {c['compute_efficiency']}, "
               f"memory efficiency {c['memory_efficiency']}, {c['overhead_us_per_node']} µs/layer — {c['note']}")
    click.echo(f"  {result['note']}")
    click.echo(f"next: measure on the device: edgemed profile {bundle} --scan {shown_scan(scan)} (run there)")
