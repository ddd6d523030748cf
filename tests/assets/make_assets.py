"""Make the committed compatibility assets: artifacts written by a released edgemed.

tests/assets/release-0.1.0/ holds a tiny student, its FP32 ONNX bundle and an ONNX Runtime INT8
bundle, plus the masks that release's runtime produced on one phantom (masks.npz). They were made
with the code at commit 92ffd65 (edgemed 0.1.0, before the typed-metadata refactor):

    git worktree add /tmp/old 92ffd65
    PYTHONPATH=/tmp/old/src .venv/bin/python tests/assets/make_assets.py tests/assets/release-0.1.0

tests/artifacts/test_compat.py loads them with today's code and checks every record and mask.
Regenerating them with today's code would defeat that purpose: only ever add a new release's folder.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, OrtInt8Config, distill, quantize
    from edgemed.export import OnnxExportConfig, to_onnx
    from edgemed.io import write_nifti
    from edgemed.phantom import PhantomConfig, make_phantom
    from edgemed.runtime import load

    if out.exists():
        raise SystemExit(f"{out} exists; compatibility assets are never overwritten (make a new release folder).")
    small = PhantomConfig(shape=(40, 32, 16), spacing_mm=(8.0, 8.0, 10.0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scans, segs = [], []
        for seed in (0, 1):
            ct, labels = make_phantom(seed, small)
            scans.append(write_nifti(ct, root / f"ct{seed}.nii.gz"))
            segs.append(write_nifti(labels, root / f"seg{seed}.nii.gz"))
        cfg = DistillConfig(organs=("liver", "spleen"), student="unet2d", student_kwargs={"widths": [4, 8]},
                            epochs=3, batch_size=8, lr=1e-2, threads=1, ema_decay=None,
                            preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
        student = distill(scans, cfg, root / "student", teacher_predictions=segs, progress=False)
        bundle = to_onnx(student, root / "liver.edgemed", OnnxExportConfig(parity_max_slices=4))
        quantize(bundle, scans[:1], OrtInt8Config(calibration_slices=16, max_dice_drop=0.2), root / "liver-int8.edgemed",
                 timing_repeats=2)
        probe = make_phantom(7, small)[0]
        masks = {}
        for name in ("liver.edgemed", "liver-int8.edgemed"):
            with load(root / name, backend="ort", threads=1) as seg:
                masks[name] = seg.segment(probe).array
        out.mkdir(parents=True)
        for name in ("student", "liver.edgemed", "liver-int8.edgemed"):
            shutil.copytree(root / name, out / name)
        np.savez_compressed(out / "masks.npz", probe_seed=7, **{k.replace(".", "_").replace("-", "_"): v
                                                                for k, v in masks.items()})


if __name__ == "__main__":
    main(Path(sys.argv[1]))
