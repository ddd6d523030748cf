"""Run a torch student over a whole volume (training-time evaluation and student-as-teacher)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgemed.artifacts import PreprocessSpec
from edgemed.io import Volume
from edgemed.runtime import infer_slices, infer_volume

__all__ = ["predict_slices", "predict_volume"]


def predict_slices(net: nn.Module, image: np.ndarray, slices: np.ndarray, context: int, *, step: float = 1.0,
                   batch_size: int = 16, logits: bool = False) -> np.ndarray:
    """Softmax probabilities (or logits) (N, K, H, W) for axial `slices` of a prepared (Z, H, W) image."""
    return infer_slices(_torch_run(net, logits=logits), image, slices, context=context, step=step,
                        batch_size=batch_size, softmax=False)


def predict_volume(net: nn.Module, volume: Volume, spec: PreprocessSpec, *, batch_size: int = 16,
                   logits: bool = False) -> np.ndarray:
    """Student probabilities (or logits) (K, X, Y, Z) on the volume's own grid.

    Example:
        >>> probs = predict_volume(load_student(ckpt), read_volume("ct.nii.gz"), ckpt.preprocess)
    """
    return infer_volume(_torch_run(net, logits=logits), volume, spec, batch_size=batch_size, softmax=False)


def _torch_run(net: nn.Module, *, logits: bool) -> Callable[[np.ndarray], np.ndarray]:
    """`net` as a batch → logits (or probabilities) callable for `edgemed.runtime.infer_slices`."""
    net.eval()
    device = next(net.parameters()).device  # a student trained on a GPU (torchrun + nccl) validates there

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = net(torch.from_numpy(x).to(device))
            # softmax in torch, on the net's device: the probabilities are those torch evaluation always gave
            return (y if logits else y.softmax(1)).cpu().numpy()

    return run
