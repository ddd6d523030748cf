"""A synthetic abdominal CT phantom with organ labels (numpy only; no downloads).

Used by the demo and by tests that must run anywhere. Anatomy is coarse but laid out like a
real abdomen in RAS (+x patient Right, +y Anterior, +z Superior), with TotalSegmentator label
ids, so a student trained on phantoms learns the same geometry rules as on real scans: liver
on the right, spleen on the left, kidneys beside the spine, aorta in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemed.io import Volume

__all__ = ["PHANTOM_LABELS", "PhantomConfig", "make_phantom"]

# TotalSegmentator v2 ids.
PHANTOM_LABELS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 32: "vertebrae_T12", 52: "aorta"}


@dataclass(frozen=True)
class PhantomConfig:
    """Phantom grid and variability.

    Attributes:
        shape: Voxel grid (X, Y, Z).
        spacing_mm: Voxel size.
        noise_hu: Gaussian noise sigma (HU).
        jitter: Relative random variation of organ sizes and positions between seeds.
    """

    shape: tuple[int, int, int] = (96, 80, 48)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0)
    noise_hu: float = 12.0
    jitter: float = 0.12


def _ellipsoid(grid: tuple[np.ndarray, np.ndarray, np.ndarray], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    x, y, z = grid
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2 <= 1


def make_phantom(seed: int = 0, config: PhantomConfig = PhantomConfig()) -> tuple[Volume, Volume]:
    """A CT phantom (HU, float32) and its label map (uint8, TotalSegmentator ids) on the same grid.

    Example:
        >>> ct, labels = make_phantom(seed=3)
        >>> sorted(set(np.unique(labels.array)) - {0})
        [1, 2, 3, 5, 32, 52]
    """
    rng = np.random.default_rng(seed)
    shape = config.shape
    spacing = np.asarray(config.spacing_mm, dtype=float)
    extent = np.asarray(shape) * spacing  # mm
    # World coordinates in mm, centred on the volume: x → Right, y → Anterior, z → Superior.
    axes = [(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(shape, spacing, extent)]
    grid = np.meshgrid(*axes, indexing="ij", sparse=True)
    j = lambda: 1 + config.jitter * rng.uniform(-1, 1)  # noqa: E731

    ct = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    body_r = np.array([0.42 * extent[0] * j(), 0.36 * extent[1] * j(), 10 * extent[2]])
    body = _ellipsoid(grid, np.zeros(3), body_r)
    ct[body] = -90.0  # subcutaneous fat
    muscle = _ellipsoid(grid, np.zeros(3), body_r * np.array([0.88, 0.85, 1.0]))
    ct[muscle] = 35.0
    table_y = -body_r[1] - 8
    ct[:, (axes[1] < table_y) & (axes[1] > table_y - 6), :] = 200.0  # the scanner table

    def organ(label: int, center_frac: tuple[float, float, float], radii_frac: tuple[float, float, float],
              hu: float) -> None:
        c = np.array([center_frac[0] * body_r[0], center_frac[1] * body_r[1], center_frac[2] * extent[2] / 2])
        c *= np.array([j(), j(), j()])
        r = np.array([radii_frac[0] * body_r[0], radii_frac[1] * body_r[1], radii_frac[2] * extent[2] / 2])
        r *= np.array([j(), j(), j()])
        m = _ellipsoid(grid, c, r) & muscle
        ct[m] = hu + rng.normal(0, 6)
        labels[m] = label

    organ(5, (0.42, 0.15, 0.25), (0.48, 0.62, 0.65), 58.0)     # liver: right, large
    organ(1, (-0.55, -0.25, 0.35), (0.22, 0.30, 0.40), 48.0)   # spleen: left, posterior
    organ(2, (0.30, -0.52, -0.25), (0.14, 0.16, 0.40), 30.0)   # kidney right
    organ(3, (-0.32, -0.52, -0.15), (0.14, 0.16, 0.40), 30.0)  # kidney left
    organ(32, (0.0, -0.62, 0.0), (0.12, 0.14, 1.2), 420.0)     # spine (vertebrae)
    organ(52, (0.04, -0.36, 0.0), (0.05, 0.06, 1.2), 45.0)     # aorta
    ct += rng.normal(0, config.noise_hu, size=shape).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -extent / 2 + spacing / 2
    return (Volume(ct, affine, "CT", f"phantom-{seed}"), Volume(labels, affine, "SEG", f"phantom-{seed}-labels"))
