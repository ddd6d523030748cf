"""Batch augmentation on torch tensors: small affine warps and intensity changes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from edgemed.compress._config import AugmentConfig

__all__ = ["augment_batch"]


def augment_batch(x: torch.Tensor, target: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator, *,
                  batch: int | None = None, keep: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment inputs (N, C, H, W) and their soft targets (N, K, H, W) consistently.

    The geometric warp is applied to both (bilinear; targets stay valid distributions because
    bilinear weights sum to one, and out-of-slice area becomes background); intensity changes
    touch the input only.

    Args:
        batch: The global batch size when `x` is one distributed process's share of it (rows
            `keep` of the global batch): the random draws are made for the whole batch, as one
            process would, and the share's rows are used, so every process agrees on the batch.
    """
    n = x.shape[0] if batch is None else batch
    rows = torch.arange(n)[keep]
    assert len(rows) == x.shape[0], "x must hold exactly the rows `keep` of the batch"
    active_all = torch.rand(n, generator=gen) < cfg.prob
    if not bool(active_all.any()):
        return x, target
    active = active_all[rows]
    u = lambda lo, hi: (lo + (hi - lo) * torch.rand(n, generator=gen))[rows]  # noqa: E731
    angle = u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    zoom = u(*cfg.scale)
    stretch = u(-cfg.aspect, cfg.aspect)
    zx, zy = zoom * (1 + stretch), zoom / (1 + stretch)
    tx, ty = u(-cfg.translate_frac, cfg.translate_frac) * 2, u(-cfg.translate_frac, cfg.translate_frac) * 2
    flip = torch.where(torch.rand(n, generator=gen)[rows] < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(len(rows))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output → input sampling map: (rotation · diag(1/zx, 1/zy)) plus a shift; grid x is the last axis.
    theta = torch.stack([torch.stack([cos / zy * flip, -sin / zx, tx], 1),
                         torch.stack([sin / zy * flip, cos / zx, ty], 1)], 1)
    ident = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(len(rows), 2, 3)
    theta = torch.where(active[:, None, None], theta, ident)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if cfg.elastic > 0:
        # A smooth displacement field: random offsets on a 4 x 4 lattice, upsampled bicubically.
        coarse = ((torch.rand(n, 2, 4, 4, generator=gen) * 2 - 1) * (2 * cfg.elastic))[rows]
        field = F.interpolate(coarse, size=x.shape[2:], mode="bicubic", align_corners=True)
        grid = grid + torch.where(active[:, None, None, None], field.permute(0, 2, 3, 1), 0.0)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    bg = torch.zeros_like(target)
    bg[:, 0] = 1.0
    # Warp (target - background one-hot) with zero padding, then add background back: outside
    # the original slice is background, and every pixel still sums to one.
    target = F.grid_sample(target - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg

    a = active[:, None, None, None]
    contrast = 1 + u(-cfg.intensity_scale, cfg.intensity_scale)[:, None, None, None]
    shift = u(-cfg.intensity_shift, cfg.intensity_shift)[:, None, None, None]
    gamma = torch.exp(u(math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))[:, None, None, None]
    sigma = u(0.0, cfg.noise_std)[:, None, None, None]
    noise = torch.randn((n, *x.shape[1:]), generator=gen)[rows] * sigma
    # Anatomy-aware contrast: the organ (teacher's foreground probability, from the warped
    # targets) brightens or darkens alone, as enhancement differs between contrast phases.
    organ = 1.0 - target[:, :1]
    enhance = u(-cfg.organ_contrast, cfg.organ_contrast)[:, None, None, None] * organ
    y = ((x + enhance).clamp(0, 1) ** gamma) * contrast + shift + noise
    x = torch.where(a, y, x)
    return x, target
