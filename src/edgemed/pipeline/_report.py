"""report.html: one self-contained page per run (PNG plots embedded as base64; matplotlib Agg, lazily)."""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgemed._atomic import atomic_file

if TYPE_CHECKING:
    from edgemed.pipeline._recipe import RecipeConfig
    from edgemed.pipeline._run import RunResult

__all__ = ["SECTIONS", "write_report"]

#: Section ids of the page, in order (tests check them).
SECTIONS = ("summary", "pareto", "candidates", "latency", "stages", "overlays", "lineage")
_STAGE_ORDER = ("distill", "prune", "export", "quantize", "profile")
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}tr.chosen{background:#e6f4e6;font-weight:600}
tr.front td:first-child::after{content:" ◆";color:#c60}img{max-width:100%}.err{color:#a00}.note{color:#666;font-size:12px}
code{font-size:12px}"""


def write_report(result: "RunResult", recipe: "RecipeConfig", path: str | os.PathLike[str]) -> Path:
    """Write the run's report.html (no external resources: every image is a data: URI).

    Args:
        result: The run's organs, candidates, choices and run log.
        recipe: The recipe (budget, target and data shown in the summary).
        path: The HTML file to write (atomically).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgemed compress — {html.escape(str(result.out))}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>edgemed compress: {html.escape(', '.join(recipe.organs))}</h1>",
             _summary(result, recipe), _pareto(result, recipe), _table(result), _latency(result), _stages(result),
             _overlays(result, recipe), _lineage(result), "</body></html>"]
    target = Path(path)
    with atomic_file(target) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return target


def _png(fig: Any) -> str:
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _summary(result: "RunResult", recipe: "RecipeConfig") -> str:
    budget = "none" if recipe.latency_budget_ms is None else f"{recipe.latency_budget_ms:g} ms"
    label = "measured on this host" if recipe.target == "host" else f"predicted for {recipe.target} (not measured)"
    rows = []
    for o in result.organs:
        if o.chosen:
            c = o.chosen
            rows.append(f"<tr><td class='l'>{html.escape(o.organ)}</td><td class='l'>{html.escape(c.name)}</td>"
                        f"<td>{c.dice:.4f}</td><td>{c.latency_ms:.1f} ({c.latency_label})</td>"
                        f"<td>{c.size_bytes / 1e6:.2f}</td></tr>")
        elif o.shown is not None:
            c = o.shown
            lift = f" Most likely lift: <b>{html.escape(o.knob['knob'])}</b>: {html.escape(o.knob['why'])}" if o.knob else ""
            rows.append(f"<tr><td class='l'>{html.escape(o.organ)}</td><td class='l err'>{html.escape(c.name)} "
                        f"(best, <b>below the bar</b>)</td><td class='err'>{c.dice:.4f}</td>"
                        f"<td>{c.latency_ms:.1f} ({c.latency_label})</td><td>{c.size_bytes / 1e6:.2f}</td></tr>"
                        f"<tr><td></td><td class='l err' colspan='4'>{html.escape(o.error or '')}{lift}</td></tr>")
        else:
            rows.append(f"<tr><td class='l'>{html.escape(o.organ)}</td><td class='l err' colspan='4'>"
                        f"{html.escape(o.error or 'no candidate')}</td></tr>")
    ran = sum(r["status"] == "ran" for r in result.log)
    body = (f"<p>Target <b>{html.escape(recipe.target)}</b> (latency {label}); latency budget <b>{budget}</b>; "
            f"minimum Dice <b>{recipe.min_dice:g}</b> (held-out slices vs the teacher). Run <code>{result.run_id}</code>: "
            f"{ran} stage(s) ran, {len(result.log) - ran} reused from the cache.</p>"
            "<table><tr><th class='l'>organ</th><th class='l'>chosen model</th><th>Dice</th><th>latency ms</th>"
            f"<th>size MB</th></tr>{''.join(rows)}</table>"
            "<p class='note'>Latency: whole-volume inference time, median over repeats, on the first scan of the recipe. "
            "Dice: the deployed bundle (after quantization) vs the teacher's labels on the slices held out of "
            "distillation.</p>"
            + ("<p class='note'><b>Joint student:</b> one model segments every organ, so each row is the same "
               "bundle and its latency is paid once per volume, not once per organ. It was chosen by its worst "
               "organ's Dice.</p>" if recipe.joint else ""))
    return _section("summary", "Summary", body)


def _pareto(result: "RunResult", recipe: "RecipeConfig") -> str:
    from matplotlib import pyplot as plt

    n = len(result.organs)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    for ax, o in zip(axes[0], result.organs):
        for c in o.candidates:
            ax.scatter(c.latency_ms, c.dice, marker="o" if c.precision == "fp32" else "s",
                       color="tab:blue" if c.backend == "ort" else "tab:orange", alpha=0.7)
        if o.front:
            ax.plot([c.latency_ms for c in o.front], [c.dice for c in o.front], "k--", lw=1, label="Pareto front")
        if o.chosen:
            ax.scatter(o.chosen.latency_ms, o.chosen.dice, marker="*", s=260, color="tab:green", label="chosen",
                       zorder=5)
        if recipe.latency_budget_ms is not None:
            ax.axvline(recipe.latency_budget_ms, color="tab:red", lw=1, label="latency budget")
        ax.axhline(recipe.min_dice, color="tab:purple", lw=1, label="min Dice")
        label = o.candidates[0].latency_label if o.candidates else "measured"
        ax.set(title=o.organ, xlabel=f"latency ms ({label})", ylabel="held-out Dice vs teacher")
        ax.legend(fontsize=7, loc="lower right")
    note = ("<p class='note'>circle fp32, square int8; blue ONNX Runtime, orange OpenVINO; dashed: Pareto front "
            "(no other model is both faster and more accurate).</p>")
    return _section("pareto", "Pareto front: latency vs Dice", _png(fig) + note)


def _table(result: "RunResult") -> str:
    out = []
    for o in result.organs:
        front = {c.name for c in o.front}
        rows = []
        for c in sorted(o.candidates, key=lambda c: c.latency_ms):
            cls = "chosen" if o.chosen and c.name == o.chosen.name else ("front" if c.name in front else "")
            ckpt = "" if c.dice_checkpoint is None else f"{c.dice_checkpoint:.4f}"
            rows.append(f"<tr class='{cls}'><td class='l'>{html.escape(c.name)}</td><td>{c.dice:.4f}</td>"
                        f"<td>{c.dice_scan:.4f}</td><td>{ckpt}</td><td>{c.latency_ms:.1f}</td>"
                        f"<td class='l'>{c.latency_label}</td><td>{c.size_bytes / 1e6:.3f}</td>"
                        f"<td class='l'>{c.precision}</td><td class='l'>{c.backend}</td>"
                        f"<td class='l'>{html.escape(c.note)}</td></tr>")
        skipped = "".join(f"<li>{html.escape(s['name'])}: {html.escape(s['reason'])}</li>" for s in o.skipped)
        runoff = ""
        if o.runoff:
            r = o.runoff
            runoff = (f"<p class='note'>Decided by a run-off: the {len(r['latency_ms'])} qualifying models timed "
                      f"side by side, interleaved, {r['rounds']} rounds (median ms; alone in the profile step): "
                      + ", ".join(f"{html.escape(n)} {ms:.1f} ({r['profile_latency_ms'][n]:.1f})"
                                  for n, ms in sorted(r["latency_ms"].items(), key=lambda kv: kv[1])) + "."
                      + (f" Within {r['latency_tie']:.0%} of the fastest ({html.escape(r['fastest'])}) counts as "
                         "equally fast; of those the most accurate ships." if "latency_tie" in r else "") + "</p>")
        out.append(f"<h3>{html.escape(o.organ)}</h3><table><tr><th class='l'>model</th><th>Dice held-out</th>"
                   "<th>Dice whole scan</th><th>checkpoint validation Dice</th><th>latency ms</th><th class='l'>"
                   "latency</th><th>size MB</th><th class='l'>precision</th><th class='l'>backend</th><th class='l'>"
                   f"note</th></tr>{''.join(rows)}</table>" + runoff
                   + (f"<p class='note'>Grid points not built:</p><ul class='note'>{skipped}</ul>" if skipped else ""))
    note = ("<p class='note'>Chosen row green; ◆ on the Pareto front. The checkpoint validation Dice of a pruned "
            "student is vs its unpruned parent (its fine-tuning teacher).</p>")
    return _section("candidates", "Candidates per organ", "".join(out) + note)


def _latency(result: "RunResult") -> str:
    from matplotlib import pyplot as plt

    chosen = [o.shown for o in result.organs if o.shown]
    if not chosen:
        return _section("latency", "Latency of the chosen models", "<p>No model was built.</p>")
    chosen_set = [o.chosen for o in result.organs if o.chosen]
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.2), squeeze=False)
    for ax, c in zip(axes[0], chosen):
        ax.hist(c.samples_ms, bins=min(20, max(3, len(c.samples_ms))), color="tab:green", alpha=0.8)
        ax.axvline(c.latency_ms, color="k", lw=1, label=f"median {c.latency_ms:.1f} ms")
        ax.set(title=f"{c.organ}: {c.name}" + ("" if c in chosen_set else " (best Dice; budget missed)"), xlabel="inference ms per volume (measured here)", ylabel="runs")
        ax.legend(fontsize=7)
    note = ""
    if any(c.latency_label == "predicted" for c in chosen):
        note = ("<p class='note'>The target is not this host: the histogram shows the one run made here for Dice; "
                "the selection used the predicted latency.</p>")
    return _section("latency", "Latency of the chosen models", _png(fig) + note)


def _stages(result: "RunResult") -> str:
    from matplotlib import pyplot as plt

    ran: dict[str, float] = defaultdict(float)
    cached: dict[str, float] = defaultdict(float)
    for row in result.log:
        (ran if row["status"] == "ran" else cached)[row["stage"]] += float(row["stage_seconds"])
    names = [s for s in _STAGE_ORDER if s in ran or s in cached]
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    ax.barh(names, [ran[s] for s in names], color="tab:blue", label="ran in this run")
    ax.barh(names, [cached[s] for s in names], left=[ran[s] for s in names], color="tab:gray", alpha=0.5,
            hatch="//", label="reused from cache (original time)")
    ax.invert_yaxis()
    ax.set(xlabel="seconds (all organs and grid points)")
    ax.legend(fontsize=7)
    rows = "".join(f"<tr><td class='l'>{s}</td><td>{ran[s]:.1f}</td><td>{cached[s]:.1f}</td></tr>" for s in names)
    table = f"<table><tr><th class='l'>stage</th><th>s ran</th><th>s cached</th></tr>{rows}</table>"
    return _section("stages", "Time per stage", _png(fig) + table)


def _overlays(result: "RunResult", recipe: "RecipeConfig") -> str:
    from edgemed.io import load_label_map, read_labels, read_volume
    from edgemed.measure import draw_overlay

    volume = read_volume(recipe.scans[0])
    teacher = read_labels(recipe.teacher_predictions[0], like=volume).array
    imgs = []
    for o in result.organs:
        shown = o.shown
        if not (shown and o.overlay_mask and Path(o.overlay_mask).exists()):
            continue
        label_id = load_label_map(recipe.label_map).resolve([o.organ])[0]
        with np.load(o.overlay_mask, allow_pickle=False) as npz:
            student = npz["labels"] == label_id
        ref = teacher == label_id
        with tempfile.TemporaryDirectory(prefix="edgemed-report-") as tmp:
            png = draw_overlay(volume.array, volume.spacing_mm, student, ref, Path(tmp) / "overlay.png",
                               title=f"{o.organ}: {shown.name}{'' if o.chosen else ' (best Dice; budget missed)'} "
                                     f"(red) vs teacher (green), held-out Dice {shown.dice:.3f}")
            data = base64.b64encode(png.read_bytes()).decode()
        imgs.append(f"<h3>{html.escape(o.organ)}</h3><img alt='overlay {html.escape(o.organ)}' "
                    f"src='data:image/png;base64,{data}'>")
    body = "".join(imgs) or "<p>No model was chosen.</p>"
    return _section("overlays", "Teacher vs student masks (slices at 25/50/75 % of the organ)", body)


def _lineage(result: "RunResult") -> str:
    out = []
    for o in result.organs:
        c = o.shown
        if c is None:
            continue
        rows = "".join(f"<tr><td class='l'>{html.escape(stage)}</td><td class='l'><code>{digest}</code></td></tr>"
                       for stage, digest in c.lineage)
        tag = "" if o.chosen else " (best Dice; budget missed)"
        out.append(f"<h3>{html.escape(o.organ)}: {html.escape(c.name)}{tag}</h3><table><tr><th class='l'>artifact"
                   f"</th><th class='l'>digest (sha256)</th></tr>{rows}</table>"
                   f"<p class='note'>bundle: <code>{html.escape(c.bundle)}</code></p>")
    return _section("lineage", "Lineage (teacher → student → pruned → bundle → int8)",
                    "".join(out) or "<p>No model was chosen.</p>")
