"""Distillation losses: soft-label KD with temperature, cross-entropy on pseudo-labels, soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distill_loss", "soft_dice_loss"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the organ channels (1..K-1), summed over the batch (region loss)."""
    probs = logits.softmax(dim=1)[:, 1:]
    tgt = target[:, 1:]
    inter = (probs * tgt).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + tgt.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def distill_loss(logits: torch.Tensor, soft_target: torch.Tensor, hard_target: torch.Tensor, *,
                 temperature: float, soft: bool, dice_weight: float) -> torch.Tensor:
    """KD (or CE) + Dice.

    Args:
        soft_target: (N, K, H, W) teacher probabilities at `temperature` (when `soft`).
        hard_target: (N, K, H, W) one-hot teacher labels (argmax at T=1).
        soft: The teacher gave scores: KL(teacher_T || student_T) * T^2 (Hinton et al.).
            Otherwise the teacher gave labels: cross-entropy on the pseudo-labels.
    """
    if soft:
        log_p = F.log_softmax(logits / temperature, dim=1)
        kd = (soft_target * (torch.log(soft_target.clamp_min(1e-8)) - log_p)).sum(dim=1).mean() * temperature**2
    else:
        kd = -(hard_target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return kd + dice_weight * soft_dice_loss(logits, hard_target)
