"""Phantom scans with their label maps on disk, for tests that distill tiny students."""

from __future__ import annotations

from pathlib import Path


def write_phantom_pairs(root: Path, seeds: range | list[int], config: object) -> tuple[list[Path], list[Path]]:
    """Write phantom CTs and their label maps as ct{seed}.nii.gz / seg{seed}.nii.gz under `root`."""
    from edgemed.io import write_nifti
    from edgemed.phantom import make_phantom

    scans, segs = [], []
    for seed in seeds:
        ct, labels = make_phantom(seed, config)  # type: ignore[arg-type]
        scans.append(write_nifti(ct, root / f"ct{seed}.nii.gz"))
        segs.append(write_nifti(labels, root / f"seg{seed}.nii.gz"))
    return scans, segs


def tiny_liver_bundle(root: Path, *, seed: int = 3) -> tuple[Path, Path, Path]:
    """A tiny phantom liver student exported as a bundle, with its scan and label map (a few seconds).

    Returns:
        (bundle directory, scan NIfTI, teacher label map NIfTI).
    """
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, distill
    from edgemed.export import OnnxExportConfig, to_onnx
    from edgemed.phantom import PhantomConfig

    small = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
    scans, segs = write_phantom_pairs(root, [seed], small)
    cfg = DistillConfig(organs=("liver",), student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=6,
                        batch_size=8, lr=1e-2, threads=1, ema_decay=None,
                        preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
    student = distill(scans, cfg, root / "student", teacher_predictions=segs, progress=False)
    bundle = to_onnx(student, root / "liver.edgemed", OnnxExportConfig(parity_max_slices=4))
    return bundle.path, scans[0], segs[0]
