"""Where the liver boundary lies: TotalSegmentator (the teacher) on example_ct vs dcmqi's reference.

Issue 10's misses on dcmqi_ct3slice are under-segmentation (students' masks lie inside the
reference). This measures the HU of rings just inside and outside each boundary, in mm, to show
which boundary convention each mask follows, and how much of each reference ring students cover.

    .venv/bin/python benchmarks/studies/dcmqi_boundary.py [BUNDLE ...] [--out JSON]

The committed run scored the pruned students of benchmarks/suite/prune_liver.py (runs/prune_liver*/)
and the default students of benchmarks/studies/cross_scan.py --tag final (runs/cross_scan/final_s*/).
Writes benchmarks/results/dcmqi_boundary.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, config_from_args, write_result  # noqa: E402

from edgemed.io import read_labels, read_volume  # noqa: E402

OUT = RESULTS / "dcmqi_boundary.json"
INSIDE = [(0, 1.5), (1.5, 3), (3, 4.5), (4.5, 6), (6, 9), (9, 15)]
OUTSIDE = [(0, 1.5), (1.5, 3), (3, 6)]


def _distances(mask: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """In-plane distance (mm) of each voxel to the mask's edge, inside and outside, slice by slice."""
    inside = np.stack([ndimage.distance_transform_edt(mask[..., k]) for k in range(mask.shape[2])], -1) * spacing
    outside = np.stack([ndimage.distance_transform_edt(~mask[..., k]) for k in range(mask.shape[2])], -1) * spacing
    return inside, outside


def _rings(mask: np.ndarray, spacing: float) -> dict[str, np.ndarray]:
    """Ring masks by name; a ring's distance is that of voxel centres (the first ring at half a voxel)."""
    inside, outside = _distances(mask, spacing)
    rings = {f"in {lo}-{hi} mm": mask & (inside > lo) & (inside <= hi + 1e-6) for lo, hi in INSIDE}
    rings.update({f"out {lo}-{hi} mm": ~mask & (outside > lo) & (outside <= hi + 1e-6) for lo, hi in OUTSIDE})
    return {k: v for k, v in rings.items() if v.any()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path, help="student bundles to score on dcmqi")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    teacher = read_labels(DATA / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct).array == 5
    dq = read_volume(DATA / "dcmqi_ct3slice" / "ct")
    ref = read_labels(DATA / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=dq).array > 0
    sp_ct, sp_dq = float(abs(ct.affine[0, 0])), float(abs(dq.affine[0, 0]))
    report: dict[str, object] = {
        "teacher_on_example_ct": {k: round(float(ct.array[r].mean()), 1)
                                  for k, r in _rings(teacher, sp_ct).items()},
        "dcmqi_reference": {k: round(float(dq.array[r].mean()), 1) for k, r in _rings(ref, sp_dq).items()},
        "students_on_dcmqi": [],
    }
    from edgemed.runtime import load

    ref_rings = _rings(ref, sp_dq)
    for bundle in args.bundles:
        with load(bundle, backend="ort") as seg:
            mask = seg.segment(dq).array > 0
        inter = (mask & ref).sum()
        report["students_on_dcmqi"].append({  # type: ignore[union-attr]
            "bundle": str(bundle), "dice": round(float(2 * inter / (mask.sum() + ref.sum())), 4),
            "area_ratio": round(float(mask.sum() / ref.sum()), 3),
            "outside_reference_fraction": round(float((mask & ~ref).sum() / max(mask.sum(), 1)), 4),
            "reference_ring_covered": {k: round(float(mask[r].mean()), 3) for k, r in ref_rings.items()
                                       if k.startswith("in")}})
    config = config_from_args(args, what="mean HU of in-plane rings inside/outside the liver boundary (mm from the edge)",
                              inside_rings_mm=INSIDE, outside_rings_mm=OUTSIDE)
    write_result(args.out, benchmark="dcmqi_boundary", script=__file__, config=config, metrics=report)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
