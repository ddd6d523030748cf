"""Run a torch student over a whole volume (training-time evaluation and student-as-teacher)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgemed.artifacts import PreprocessSpec
from edgemed.io import Volume, context_stack, from_student_grid, prepare_volume

__all__ = ["predict_slices", "predict_volume"]


def predict_slices(net: nn.Module, image: np.ndarray, slices: np.ndarray, context: int, *, step: float = 1.0,
                   batch_size: int = 16, logits: bool = False) -> np.ndarray:
    """Softmax probabilities (or logits) (N, K, H, W) for axial `slices` of a prepared (Z, H, W) image."""
    net.eval()
    device = next(net.parameters()).device  # a student trained on a GPU (torchrun + nccl) validates there
    outs = []
    with torch.inference_mode():
        for b in range(0, len(slices), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(context_stack(image, slices[b:b + batch_size], context, step=step)))
            y = net(x.to(device))
            outs.append((y if logits else y.softmax(1)).cpu().numpy())
    return np.concatenate(outs)


def predict_volume(net: nn.Module, volume: Volume, spec: PreprocessSpec, *, batch_size: int = 16,
                   logits: bool = False) -> np.ndarray:
    """Student probabilities (or logits) (K, X, Y, Z) on the volume's own grid.

    Example:
        >>> probs = predict_volume(load_student(ckpt), read_volume("ct.nii.gz"), ckpt.preprocess)
    """
    image, geom = prepare_volume(volume, spec)
    scores = predict_slices(net, image, np.arange(image.shape[0]), spec.context_slices, step=geom.context_step,
                            batch_size=batch_size, logits=logits)
    return from_student_grid(scores, geom)
