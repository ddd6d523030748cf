"""The demo's report.html: Dice and latency tables, and overlays where student and teacher disagree.

One self-contained page (images are data: URIs). The overlays are drawn with numpy and encoded as
PNG with zlib, so the page is complete on every install: nothing is skipped for want of matplotlib.
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["disagreement_slices", "encode_png", "overlay_rgb", "write_demo_report"]

WINDOW_HU = (-160.0, 240.0)  # soft tissue: level 40, width 400
COLOURS = {"teacher": (60, 220, 60), "student": (235, 50, 50), "compressed": (70, 140, 255)}


def encode_png(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes (8-bit RGB, no filter; zlib level 6)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"encode_png takes an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def disagreement_slices(a: np.ndarray, b: np.ndarray, count: int = 3) -> list[int]:
    """The `count` axial slices (z of (X, Y, Z) masks) where `a` and `b` differ in most voxels.

    Slices are at least two apart so the picks show different places; where the masks agree
    everywhere, the slices with the most organ are taken instead.
    """
    diff = (a != b).sum(axis=(0, 1))
    score = diff if diff.any() else (a | b).sum(axis=(0, 1))
    picks: list[int] = []
    for z in np.argsort(-score, kind="stable"):
        if len(picks) == count:
            break
        if all(abs(int(z) - p) >= 2 for p in picks):
            picks.append(int(z))
    return sorted(picks)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's boundary pixels (4-neighbourhood) of a 2-D boolean array."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_rgb(ct: np.ndarray, masks: Mapping[str, np.ndarray], z: int, spacing_mm: Sequence[float],
                *, scale: int = 3) -> np.ndarray:
    """One axial slice, radiological view (patient right on the left, anterior up), with outlines.

    Where teacher and student disagree the pixels are tinted yellow; each mask in `masks`
    ("teacher", "student", "compressed") is outlined in its colour on an upscaled grid, so thin
    outlines stay visible.
    """
    lo, hi = WINDOW_HU
    img = np.clip((ct[:, :, z] - lo) / (hi - lo), 0, 1)
    # (X, Y) RAS → rows = anterior at top, columns = patient right on the viewer's left.
    view = lambda a: a[::-1, ::-1].T  # noqa: E731
    sx, sy = float(spacing_mm[0]), float(spacing_mm[1])
    ry, rx = scale, max(1, int(round(scale * sx / sy)))
    up = lambda a: np.repeat(np.repeat(view(a), ry, axis=0), rx, axis=1)  # noqa: E731
    grey = (up(img) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1).astype(np.float32)
    if "teacher" in masks and "student" in masks:
        differ = up(masks["teacher"][:, :, z] != masks["student"][:, :, z])
        rgb[differ] = 0.45 * rgb[differ] + 0.55 * np.array((255, 215, 0), np.float32)
    for name in ("teacher", "compressed", "student"):
        if name in masks:
            rgb[_outline(up(masks[name][:, :, z]))] = COLOURS[name]
    return rgb.astype(np.uint8)


def _img(rgb: np.ndarray, alt: str) -> str:
    data = base64.b64encode(encode_png(rgb)).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def write_demo_report(path: Path, summary: Mapping[str, Any], overlays: Sequence[Mapping[str, Any]]) -> Path:
    """Write report.html for a finished demo; returns its path.

    Args:
        path: The HTML file to write (atomically).
        summary: The demo's report.json content.
        overlays: Per test scan: {"scan", "ct" (X, Y, Z HU), "spacing", "masks" {name: bool mask}}.
    """
    from edgemed.artifacts import atomic_file

    rows = summary["models"]
    teacher_s = rows[0]["s_per_volume"]
    lat = "".join(
        f"<tr><td class='l'>{html.escape(r['role'])}</td><td class='l'>{html.escape(r['arch'])}</td>"
        f"<td>{r['parameters']:,}</td><td class='l'>{html.escape(r['precision'])}</td><td>{r['size_mb']:.2f}</td>"
        f"<td>{1000 * r['s_per_volume']:.1f}</td><td>{teacher_s / r['s_per_volume']:.1f}×</td>"
        f"<td>{1000 * r['s_per_volume_all_cpus']:.1f}</td>"
        f"<td>{rows[0]['s_per_volume_all_cpus'] / r['s_per_volume_all_cpus']:.1f}×</td></tr>" for r in rows)
    dice = "".join(
        f"<tr><td class='l'>{html.escape(r['role'])}</td><td>{r['dice_vs_truth']:.3f}</td>"
        f"<td>{'—' if r['dice_vs_teacher'] is None else format(r['dice_vs_teacher'], '.3f')}</td>"
        + "".join(f"<td>{d:.3f}</td>" for d in r["dice_vs_truth_per_scan"]) + "</tr>" for r in rows)
    scan_heads = "".join(f"<th>{html.escape(s)} vs truth</th>" for s in summary["test_scans"])
    figs = []
    for ov in overlays:
        zs = disagreement_slices(ov["masks"]["teacher"], ov["masks"]["student"])
        imgs = "".join(f"<figure>{_img(overlay_rgb(ov['ct'], ov['masks'], z, ov['spacing']), f'slice {z}')}"
                       f"<figcaption>axial slice {z}: {int((ov['masks']['teacher'][:, :, z] != ov['masks']['student'][:, :, z]).sum())}"
                       " voxels differ</figcaption></figure>" for z in zs)
        figs.append(f"<h3>{html.escape(ov['scan'])}</h3><div class='row'>{imgs}</div>")
    legend = ("<p class='note'>Outlines: <b style='color:#3cdc3c'>teacher</b>, <b style='color:#eb3232'>student</b>, "
              "<b style='color:#468cff'>compressed student</b>; yellow: voxels where student and teacher disagree. "
              "Slices: the three where they disagree most. Radiological view (patient right on the left).</p>")
    timings = "".join(f"<tr><td class='l'>{html.escape(k)}</td><td>{v:.1f}</td></tr>"
                      for k, v in summary["timings_s"].items())
    m = summary["machine"]
    page = f"""<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgemed demo</title><style>
body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.l{{text-align:left}}.note{{color:#555;font-size:.9em}}.row{{display:flex;gap:12px;flex-wrap:wrap}}
figure{{margin:0}}figcaption{{font-size:.85em;color:#555}}img{{image-rendering:pixelated}}</style></head><body>
<h1>edgemed demo: a {html.escape(summary['organ'])} student distilled from a multi-organ teacher</h1>
<p>{html.escape(summary['story'])}</p>
<h2>Accuracy on {len(summary['test_scans'])} phantoms neither model saw</h2>
<table><tr><th class='l'>model</th><th>Dice vs truth</th><th>Dice vs teacher</th>{scan_heads}</tr>{dice}</table>
<h2>Speed: all three in {html.escape(summary['runtime'])}</h2>
<table><tr><th class='l'>model</th><th class='l'>architecture</th><th>parameters</th><th class='l'>precision</th>
<th>file MB</th><th>ms / volume, {summary['timing']['threads']} thread</th><th>vs teacher</th>
<th>ms / volume, {summary['timing']['all_cpus_threads']} threads</th><th>vs teacher</th></tr>{lat}</table>
<p class='note'>First columns: median of {summary['timing']['repeats']} whole-volume <code>segment</code> calls each,
interleaved, after a warm-up, on {summary['timing']['threads']} thread (per core, as the CI gate times); last columns: one
call after a warm-up, with the threads the runtime picks by default (the CPUs free at the time). A student this small cannot split
its work across cores, so more threads help the teacher more. {m['cpus']} CPUs, load average
{m['loadavg_at_timing']:.2f} when timed; volume {' × '.join(str(s) for s in summary['timing']['volume_shape'])} voxels.</p>
<h2>Where student and teacher disagree</h2>{legend}{''.join(figs)}
<h2>How long each step took</h2><table><tr><th class='l'>step</th><th>seconds</th></tr>{timings}</table>
<p class='note'>edgemed {html.escape(summary['edgemed_version'])}; seed {summary['seed']}; the numbers above are in
<code>report.json</code> next to this page.</p></body></html>
"""
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
