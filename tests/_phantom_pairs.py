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
