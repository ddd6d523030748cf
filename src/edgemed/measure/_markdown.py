"""report.md: the profile as a human reads it (tables for stages, batches, accuracy, model and host)."""

from __future__ import annotations

import math

from edgemed.measure._report_types import ProfileReport

__all__ = ["render_markdown"]


def _num(value: float | int | None, fmt: str = ".1f") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, fmt)


def _si(value: float | int | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def render_markdown(report: ProfileReport) -> str:
    """The report as Markdown."""
    r = report
    lines = [
        f"# Profile of `{r.bundle.name}`",
        "",
        f"Scan `{r.scan}` ({r.slices} axial slices) on **{r.backend}**, threads "
        f"{r.config.threads if r.config.threads is not None else 'auto (physical cores)'}; "
        f"{r.config.repeats} timed repeats after {r.config.warmup} warm-up.",
        "",
        "## Stages (whole volume)",
        "",
        "| stage | p50 ms | p90 ms | p99 ms | mean ms | share of p50 total |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total = r.stages["total"].p50_ms or 1.0
    for name, p in r.stages.items():
        share = "" if name == "total" else f"{100 * p.p50_ms / total:.1f} %"
        lines.append(f"| {name} | {p.p50_ms:.2f} | {p.p90_ms:.2f} | {p.p99_ms:.2f} | {p.mean_ms:.2f} | {share} |")
    lines += ["", "## Batches (raw `session.run`, random inputs at the scan's student-grid size)", "",
              "| batch | p50 ms | p90 ms | p99 ms | slices/s |", "|---:|---:|---:|---:|---:|"]
    for b in r.batches:
        lines.append(f"| {b.batch_size} | {b.latency.p50_ms:.2f} | {b.latency.p90_ms:.2f} | {b.latency.p99_ms:.2f} "
                     f"| {b.slices_per_s:.1f} |")
    lines += ["", "## Accuracy", ""]
    if r.accuracy:
        lines += ["| organ | label id | reference (its id) | Dice | scope | HD95 mm |", "|---|---:|---|---:|---|---:|"]
        for a in r.accuracy:
            ref_id = a.label_id if a.reference_label_id is None else a.reference_label_id
            lines.append(f"| {a.organ} | {a.label_id} | {a.reference} ({ref_id}) | {a.dice:.4f} | {a.scope} "
                         f"| {_num(a.hd95_mm, '.2f')} |")
    else:
        lines.append("No teacher predictions or ground truth given; pass `--teacher-predictions` to measure Dice.")
    if r.heldout_dice:
        lines += ["", "Held-out Dice (recorded at distillation, vs the teacher, on data the student was not trained "
                  "on): " + ", ".join(f"{k} {v:.4f}" for k, v in r.heldout_dice.items()) + ". The Dice above is "
                  "over the whole profiled scan, which may include training data."]
    if r.qc:
        q = r.qc["report"]
        lines += ["", "## Quality control", "",
                  f"Verdict **{q['verdict']}**" + ("" if q["calibrated"] else " (not calibrated: the bundle has no QC "
                                                    "reference)") + (f", estimated Dice {q['score']:.3f}"
                                                                     if q["score"] is not None else "") +
                  f"; QC took {r.qc['qc_ms_p50']:.1f} ms, {r.qc['share_of_segment_p50']:.1%} of `segment` (median)."]
        lines += [f"- {x['severity']}: {x['message']}" for x in q["reasons"] if x["check"] != "calibration"]
    m = r.model
    lines += [
        "", "## Model", "", "| fact | value |", "|---|---:|",
        f"| model size | {m.size_bytes / 1e6:.3f} MB |",
        f"| parameters | {_si(m.parameters, '')} |",
        f"| input per slice | {tuple(m.input_shape)} |",
        f"| FLOPs per slice (2·MACs) | {_si(m.flops_per_slice, 'FLOP')} |",
        f"| FLOPs per volume | {_si(m.flops_per_volume, 'FLOP')} |",
        f"| achieved (median inference) | {_num(m.achieved_gflops, '.2f')} GFLOP/s |",
        f"| host peak ({m.peak_kind}) | {m.peak_gflops:.2f} GFLOP/s |",
        f"| achieved / peak | {_num(m.peak_percent, '.1f')} % |",
    ]
    if m.flops_by_op:
        lines.append("| FLOPs by op | " + ", ".join(f"{k} {_si(v, 'FLOP')}" for k, v in m.flops_by_op.items()) + " |")
    mem = r.memory
    to_mb = lambda v: "n/a" if v is None else f"{v / 2**20:.1f} MiB"  # noqa: E731
    lines += ["", "## Memory", "", f"{mem.get('kind', 'peak RSS')}: {to_mb(mem.get('peak_rss_before_bytes'))} before, "
              f"{to_mb(mem.get('peak_rss_after_bytes'))} after profiling."]
    lines += ["", "## Host", "", "| fact | value |", "|---|---|"]
    lines += [f"| {k} | {v if v is not None else 'n/a'} |" for k, v in r.host.items()]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in r.notes]
    if r.overlay_png is not None:
        lines += ["", "## Overlay", "", f"![overlay]({r.overlay_png.name})"]
    return "\n".join(lines) + "\n"
