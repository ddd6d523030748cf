"""Tiny deterministic teacher networks for the teacher tests, and their torch/TorchScript/ONNX files.

The factories take no arguments so they work as entry points (``_tiny_teachers:make_tiny_teacher``;
pytest puts this folder on sys.path).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgemed.io import Volume

N_CLASSES = 3


def _fill_(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter with seeded noise: the same weights on every machine."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return module.eval()


def make_tiny_teacher() -> nn.Module:
    """3D: conv 3³ (1 → 6) → ReLU → conv 1³ (6 → 3 classes)."""
    net = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, N_CLASSES, 1))
    return _fill_(net, seed=0)


def make_tiny_teacher_2d() -> nn.Module:
    """2D (axial slices): conv 3² (1 → 6) → ReLU → conv 1² (6 → 3 classes)."""
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, N_CLASSES, 1))
    return _fill_(net, seed=1)


def make_pointwise_teacher() -> nn.Module:
    """3D, 1³ kernels only: each voxel's scores depend on that voxel alone, so any tiling is exact."""
    net = nn.Sequential(nn.Conv3d(1, 6, 1), nn.Tanh(), nn.Conv3d(6, N_CLASSES, 1))
    return _fill_(net, seed=2)


def make_not_a_module() -> int:
    """A factory that returns no network."""
    return 42


class Untrusted:
    """A class a pickle can name: what weights_only=True must refuse to rebuild."""

    def __init__(self) -> None:
        self.payload = "would run code in a hostile file"


def trained_state_dict(module: nn.Module, seed: int = 7) -> dict[str, torch.Tensor]:
    """Weights unlike the factory's, so a test sees whether the checkpoint was really loaded."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in module.state_dict().items()}


def write_teacher_files(folder: Path, factory_name: str, dims: int) -> dict[str, Path]:
    """Save one trained network three ways: state dict checkpoint, TorchScript and ONNX."""
    factory = globals()[factory_name]
    module = factory()
    state = trained_state_dict(module)
    module.load_state_dict(state)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"checkpoint": folder / "weights.pt", "torchscript": folder / "teacher.ts", "onnx": folder / "teacher.onnx"}
    torch.save({"state_dict": state}, paths["checkpoint"])
    example = torch.rand((2, 1) + (8,) * dims)
    axes = {0: "n", **{2 + i: f"s{i}" for i in range(dims)}}
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript and the TorchScript-based ONNX exporter; teachers made
        # with them are still what users bring, so the tests keep making them.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.trace(module, example), str(paths["torchscript"]))
        torch.onnx.export(
            module, (example,), str(paths["onnx"]), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes}, opset_version=17, dynamo=False,
        )
    return paths


def synthetic_volume(
    shape: tuple[int, int, int] = (20, 18, 10), spacing_mm: tuple[float, float, float] = (1.2, 1.0, 2.5), seed: int = 0
) -> Volume:
    """A smooth synthetic CT (a soft-tissue blob in air, a little noise) with an off-origin affine."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-sum(g**2 for g in grid) * 2.0)
    hu = -900 + 960 * blob + rng.normal(0, 20, shape)
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = (-30.0, 12.5, 100.0)
    return Volume(hu.astype(np.float32), affine, "CT", "case1.nii.gz")
