"""A small liver student distilled on two CT phantoms and exported: the model the gate study and the
pipeline benchmark time when no bundle is given (torch; benchmarks only)."""

from __future__ import annotations

from pathlib import Path


def phantom_bundle(root: Path, *, spacing_mm: float, epochs: int) -> Path:
    """Distill a liver student on phantoms 0 and 1 at `spacing_mm` for `epochs` and export it under `root`."""
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, distill
    from edgemed.export import to_onnx
    from edgemed.io import write_nifti
    from edgemed.phantom import PhantomConfig, make_phantom

    scans, segs = [], []
    for seed in (0, 1):
        ct, labels = make_phantom(seed, PhantomConfig())
        scans.append(write_nifti(ct, root / f"ct{seed}.nii.gz"))
        segs.append(write_nifti(labels, root / f"seg{seed}.nii.gz"))
    config = DistillConfig(organs=("liver",), epochs=epochs, student_kwargs={"widths": [8, 16, 32, 64]}, threads=1,
                           ema_decay=None, preprocess=PreprocessSpec(spacing_mm=(spacing_mm, spacing_mm),
                                                                     context_slices=1, pad_multiple=8))
    student = distill(scans, config, root / "student", teacher_predictions=segs, progress=False)
    return to_onnx(student, root / "liver.edgemed").path
