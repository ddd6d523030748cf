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
        detailed: Closer to a portal-venous abdominal CT (what the demo uses): subcutaneous and
            visceral fat instead of a uniform muscle-filled abdomen, a thin muscle wall and psoas
            muscles, bowel loops with gas and fluid, a two-lobed liver with enhancing vessels,
            contrast-phase organ densities that vary between patients (liver 95-125 HU, spleen
            within 20 HU of it), a cortical rim on the vertebrae, and noise smoothed the way a
            reconstruction kernel correlates it. Off by default: tests keep the simple anatomy.
    """

    shape: tuple[int, int, int] = (96, 80, 48)
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 5.0)
    noise_hu: float = 12.0
    jitter: float = 0.12
    detailed: bool = False


def _space(config: PhantomConfig) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Shape, spacing, extent (mm), world axes and a sparse grid: x → Right, y → Anterior, z → Superior,
    centred on the volume."""
    spacing = np.asarray(config.spacing_mm, dtype=float)
    extent = np.asarray(config.shape) * spacing
    axes = [(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(config.shape, spacing, extent)]
    return config.shape, spacing, extent, axes, list(np.meshgrid(*axes, indexing="ij", sparse=True))


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
    if config.detailed:
        return _detailed(seed, config)
    rng = np.random.default_rng(seed)
    shape, spacing, extent, axes, grid = _space(config)
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


def _detailed(seed: int, config: PhantomConfig) -> tuple[Volume, Volume]:
    """The `detailed=True` anatomy (see `PhantomConfig`)."""
    from edgemed._ndimage import binary_erode

    rng = np.random.default_rng(seed)
    shape, spacing, extent, axes, grid = _space(config)
    j = lambda: 1 + config.jitter * rng.uniform(-1, 1)  # noqa: E731

    ct = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    body_r = np.array([0.40 * extent[0] * j(), 0.34 * extent[1] * j(), 10 * extent[2]])
    body = _ellipsoid(grid, np.zeros(3), body_r)
    ct[body] = -100.0 + rng.normal(0, 8)                      # subcutaneous fat
    fat_mm = rng.uniform(10, 25)
    wall = _ellipsoid(grid, np.zeros(3), body_r - fat_mm)
    ct[wall] = 50.0                                           # abdominal wall muscle
    cavity = _ellipsoid(grid, np.zeros(3), body_r - fat_mm - rng.uniform(6, 10))
    ct[cavity] = -95.0 + rng.normal(0, 8)                     # visceral fat
    table_y = -body_r[1] - 8
    ct[:, (axes[1] < table_y) & (axes[1] > table_y - 6), :] = 200.0

    def place(center_frac: tuple[float, float, float], radii_frac: tuple[float, float, float]) -> tuple[np.ndarray,
                                                                                                       np.ndarray]:
        c = np.array([center_frac[0] * body_r[0], center_frac[1] * body_r[1], center_frac[2] * extent[2] / 2])
        r = np.array([radii_frac[0] * body_r[0], radii_frac[1] * body_r[1], radii_frac[2] * extent[2] / 2])
        return c * np.array([j(), j(), j()]), r * np.array([j(), j(), j()])

    # Bowel loops: tubes of wall and contents (gas or fluid) wandering through the visceral fat.
    bowel = np.zeros(shape, dtype=bool)
    gas = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(10, 16))):
        c = np.array([rng.uniform(-0.6, 0.5) * body_r[0], rng.uniform(-0.1, 0.7) * body_r[1],
                      rng.uniform(-0.9, 0.3) * extent[2] / 2])
        r = np.array([rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(15, 45)])
        loop = _ellipsoid(grid, c, r) & cavity
        bowel |= loop
        if rng.uniform() < 0.5:
            gas |= _ellipsoid(grid, c, r * 0.55) & loop
    ct[bowel] = 35.0
    lumen = binary_erode(bowel, 1)
    ct[lumen] = 15.0
    ct[gas & lumen] = -850.0

    def organ(label: int, mask: np.ndarray, hu: float) -> None:
        m = mask & cavity
        ct[m] = hu
        labels[m] = label

    liver_hu = rng.uniform(95, 125)
    # Liver: a large right lobe and a left lobe reaching across the midline, anterior.
    c1, r1 = place((0.45, 0.10, 0.25), (0.45, 0.62, 0.62))
    c2, r2 = place((-0.05, 0.45, 0.40), (0.40, 0.25, 0.35))
    liver = _ellipsoid(grid, c1, r1) | _ellipsoid(grid, c2, r2)
    c, r = place((0.30, -0.52, -0.25), (0.13, 0.16, 0.40))
    kidney_r = _ellipsoid(grid, c, r)
    c, r = place((-0.32, -0.52, -0.15), (0.13, 0.16, 0.40))
    kidney_l = _ellipsoid(grid, c, r)
    c, r = place((-0.55, -0.28, 0.35), (0.20, 0.28, 0.40))
    spleen = _ellipsoid(grid, c, r)
    c, r = place((0.0, -0.62, 0.0), (0.12, 0.14, 1.2))
    spine = _ellipsoid(grid, c, r)
    c, r = place((0.04, -0.38, 0.0), (0.05, 0.06, 1.2))
    aorta = _ellipsoid(grid, c, r)
    for side in (-1, 1):  # psoas muscles beside the spine, growing towards the pelvis
        cc, rr = place((side * 0.22, -0.60, -0.4), (0.10, 0.11, 0.9))
        organ(0, _ellipsoid(grid, cc, rr), 55.0)
    organ(5, liver & ~kidney_r, liver_hu)
    # Portal and hepatic vessels: enhancing tubes inside the liver (labelled liver, as in TotalSegmentator).
    vessels = np.zeros(shape, dtype=bool)
    x, y, z = grid
    for _ in range(6):  # straight segments a → b, 3-5 mm in radius
        a = c1 + rng.uniform(-0.6, 0.6, 3) * r1
        d = c1 + rng.uniform(-0.6, 0.6, 3) * r1 - a
        t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / float(d @ d), 0, 1)
        dist2 = (x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2
        vessels |= dist2 <= rng.uniform(3, 5) ** 2
    ct[vessels & (labels == 5)] = liver_hu + rng.uniform(40, 70)
    organ(1, spleen, liver_hu + rng.uniform(-5, 20))
    cortex = rng.uniform(150, 190)
    for label, kidney in ((2, kidney_r), (3, kidney_l)):
        organ(label, kidney, cortex)
        ct[binary_erode(kidney & cavity, 2)] = cortex - rng.uniform(30, 60)  # medulla
    organ(32, spine, 250.0)
    ct[binary_erode(spine & cavity, 2)] = 180.0  # cancellous bone inside a cortical rim
    organ(52, aorta, rng.uniform(150, 200))
    noise = rng.normal(0, config.noise_hu * 1.6, size=shape).astype(np.float32)
    for axis in (0, 1):  # a [1, 2, 1] / 4 kernel in-plane: correlated noise, ~noise_hu after smoothing
        noise = 0.5 * noise + 0.25 * (np.roll(noise, 1, axis) + np.roll(noise, -1, axis))
    ct += noise
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -extent / 2 + spacing / 2
    return (Volume(ct, affine, "CT", f"phantom-{seed}"), Volume(labels, affine, "SEG", f"phantom-{seed}-labels"))
