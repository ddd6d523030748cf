"""Why liver students miss on dcmqi: two probes of trained bundles, no training.

1. Organ size. Each dcmqi slice is warped radially about the reference liver's centroid, shrinking
   the liver and its surroundings to s = 0.9, 0.8, 0.7 of their size (the body outside stays put);
   the reference is warped alike. If students missed because this patient's liver is larger than
   the training patient's, a shrunken liver would be segmented whole.
2. Intensity region growing. The student's mask grows, slice by slice and up to 15 mm, into
   neighbouring voxels whose smoothed HU lies within k standard deviations of the mask's core.
   Scored on dcmqi and on the training scan (held-out block and whole scan, vs the teacher): does
   filling in liver-like tissue help on the new patient without hurting on the old one?

    .venv/bin/python benchmarks/studies/dcmqi_probes.py [BUNDLE ...] [--joint-bundle DIR | --joint-run RUN] [--out JSON]

`--joint-bundle` also scores probe 2 per organ, on the training scan, for a multi-organ bundle
(e.g. the unpruned FP32 export of benchmarks/suite/recipes/totalseg_4organs_joint.toml), growing each
organ only into voxels no organ claimed, and checks whether its held-out misses are noise:
probabilities averaged over the scan shifted by one voxel in each in-plane direction.
`--joint-run runs/totalseg_4organs_joint` finds that bundle in the run's stages: the export whose
parent is the run's distilled (unpruned) student.

Default bundles: the default-recipe students of seeds 0-4 (benchmarks/studies/cross_scan.py --tag final).
Writes benchmarks/results/dcmqi_probes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "dcmqi_probes.json"
LIVER = 5
HOLDOUT = slice(86, 95)  # the liver students' held-out block on example_ct
JOINT_HOLDOUT = [84, 92]  # a 4-organ joint student's held-out block (its checkpoint's validation record)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(2 * (a & b).sum() / max(1, a.sum() + b.sum())), 4)


def shrink(array: np.ndarray, centre: tuple[float, float], radius: float, s: float, order: int) -> np.ndarray:
    """Every axial slice resampled so that the region about `centre` appears s times its size.

    Output voxel p samples the input at c + (p - c) g(r), g = 1 + (1/s - 1) exp(-(r / 2R)^2): one
    smooth, monotone (fold-free) warp that scales by 1/g near the centre and leaves the far field alone.
    """
    cx, cy = centre
    ii, jj = np.meshgrid(np.arange(array.shape[0]), np.arange(array.shape[1]), indexing="ij")
    dx, dy = ii - cx, jj - cy
    g = 1 + (1 / s - 1) * np.exp(-(dx ** 2 + dy ** 2) / (2 * radius) ** 2)
    out = np.empty_like(array)
    for k in range(array.shape[2]):
        out[:, :, k] = ndi.map_coordinates(array[:, :, k], [cx + dx * g, cy + dy * g], order=order, mode="nearest")
    return out


def grow(mask: np.ndarray, hu: np.ndarray, spacing: tuple[float, ...], *, k: float, max_mm: float = 15.0,
         smooth_mm: float = 1.5) -> np.ndarray:
    """`mask` grown in-plane into connected voxels whose smoothed HU is within k SD of its core's."""
    out = mask.copy()
    for z in range(mask.shape[2]):
        m = mask[:, :, z]
        if m.sum() < 50:
            continue
        img = ndi.gaussian_filter(hu[:, :, z].astype(np.float32), [smooth_mm / s for s in spacing[:2]])
        core = ndi.binary_erosion(m, iterations=max(1, round(3 / spacing[0])))
        core = core if core.sum() >= 20 else m
        mu, sd = float(np.median(img[core])), float(img[core].std())
        ok = (img > mu - k * sd) & (img < mu + k * sd)
        cur = m.copy()
        for _ in range(round(max_mm / spacing[0])):
            nxt = (ndi.binary_dilation(cur) & ok) | cur
            if np.array_equal(nxt, cur):
                break
            cur = nxt
        out[:, :, z] = cur
    return out


def _per_organ(bundle: Path, ct: "object") -> dict[str, object]:
    """Probe 2 on the training scan for every organ of a multi-organ bundle (its held-out block)."""
    from edgemed import runtime
    from edgemed.io import read_labels

    teacher = read_labels(DATA / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct).array  # type: ignore[arg-type]
    block = JOINT_HOLDOUT
    held = slice(block[0], block[1] + 1)
    with runtime.load(bundle, backend="ort") as seg:
        labels = seg.segment(ct).array  # type: ignore[arg-type]
        organs = [(o.name, o.label_id, o.channel) for o in seg.organs]
        # Noise or system? Probabilities averaged over the scan shifted by one voxel each way.
        probs = seg.predict(ct)  # type: ignore[arg-type]
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            shifted = seg.predict(ct.with_array(np.roll(ct.array, (dx, dy), (0, 1))))  # type: ignore[attr-defined]
            probs += np.roll(shifted, (-dx, -dy), (1, 2))
        averaged = probs.argmax(0)
    out: dict[str, object] = {"bundle": str(bundle), "holdout_slices": block}
    for name, label, channel in organs:
        mask, ref = labels == label, teacher == label
        row = {"none": {"heldout": dice(mask[:, :, held], ref[:, :, held]), "scan": dice(mask, ref)},
               "shift_average_5": {"heldout": dice(averaged[:, :, held] == channel, ref[:, :, held])}}
        for k in (1.5, 2.0):
            grown = grow(mask, ct.array, ct.spacing_mm, k=k) & ((labels == 0) | mask)  # type: ignore[attr-defined]
            row[f"k={k}"] = {"heldout": dice(grown[:, :, held], ref[:, :, held]), "scan": dice(grown, ref)}
        out[name] = row
    return out


def unpruned_export(run: Path) -> Path:
    """The FP32 export of the distilled, unpruned student of an `edgemed compress` run (by manifest lineage)."""
    from edgemed.artifacts import read_manifest

    students = {read_manifest(d).digest for d in run.glob("stages/distill-*/artifact")}
    exports = [d for d in sorted(run.glob("stages/export-*/artifact")) if read_manifest(d).parent in students]
    if len(exports) != 1:
        raise SystemExit(f"{run}: expected one export of the distilled student, found {len(exports)}; "
                         "pass --joint-bundle DIR instead")
    return exports[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path,
                        default=[ROOT / "runs" / "cross_scan" / f"final_s{s}" / "bundle" for s in range(5)])
    parser.add_argument("--joint-bundle", type=Path, default=None)
    parser.add_argument("--joint-run", type=Path, default=None, help="take --joint-bundle from this compress run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from edgemed import runtime
    from edgemed.io import read_labels, read_volume

    if not (DATA / "dcmqi_ct3slice").exists():
        print(f"real data not found at {DATA}; set EDGEMED_DATA", file=sys.stderr)
        return 2
    missing = [str(b) for b in args.bundles if not b.exists()]
    if missing:
        print(f"bundles not found: {', '.join(missing)}; train them with benchmarks/studies/cross_scan.py --tag final",
              file=sys.stderr)
        return 2
    if args.joint_run is not None and args.joint_bundle is None:  # before the long part: fail early
        args.joint_bundle = unpruned_export(args.joint_run)
    dq = read_volume(DATA / "dcmqi_ct3slice" / "ct")
    ref = read_labels(DATA / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=dq).array > 0
    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    teacher = read_labels(DATA / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct).array == LIVER
    centre = tuple(float(v) for v in np.argwhere(ref[:, :, 1]).mean(0))
    radius = float(np.sqrt(ref[:, :, 1].sum() / np.pi))
    rows = []
    for bundle in args.bundles:
        row: dict[str, object] = {"bundle": str(bundle.relative_to(ROOT) if bundle.is_relative_to(ROOT) else bundle)}
        with runtime.load(bundle, backend="ort") as seg:
            size = {}
            for s in (1.0, 0.9, 0.8, 0.7):
                warped_ref = shrink(ref.astype(np.float32), centre, radius, s, 1) > 0.5
                mask = seg.segment(dq.with_array(shrink(dq.array.astype(np.float32), centre, radius, s, 1))).array == LIVER
                size[f"s={s}"] = {"dice": dice(mask, warped_ref),
                                  "area_ratio": round(float(mask.sum() / warped_ref.sum()), 3)}
            row["organ_size"] = size
            on_dq = seg.segment(dq).array == LIVER
            on_ct = seg.segment(ct).array == LIVER
        growth = {"none": {"dcmqi": dice(on_dq, ref), "heldout": dice(on_ct[:, :, HOLDOUT], teacher[:, :, HOLDOUT]),
                           "scan": dice(on_ct, teacher)}}
        for k in (1.5, 2.0, 2.5):
            g_dq, g_ct = grow(on_dq, dq.array, dq.spacing_mm, k=k), grow(on_ct, ct.array, ct.spacing_mm, k=k)
            growth[f"k={k}"] = {"dcmqi": dice(g_dq, ref), "heldout": dice(g_ct[:, :, HOLDOUT], teacher[:, :, HOLDOUT]),
                                "scan": dice(g_ct, teacher)}
        row["region_growing"] = growth
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    report: dict[str, object] = {"runs": rows}
    if args.joint_bundle is not None:
        report["joint_bundle"] = _per_organ(args.joint_bundle, ct)
    config = config_from_args(args, what=__doc__.split("\n\n")[1:3], holdout_slices=[HOLDOUT.start, HOLDOUT.stop - 1],
                              joint_holdout_slices=JOINT_HOLDOUT)
    print(f"wrote {write_result(args.out, benchmark='dcmqi_probes', script=__file__, config=config, metrics=report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
