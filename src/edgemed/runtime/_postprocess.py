"""Logits → probabilities → label map, and largest-connected-component cleanup (numpy only).

Connected components come from `edgemed._ndimage` (numpy, no scipy on device).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgemed._ndimage import component_labels, largest_component
from edgemed.artifacts import OrganChannel

__all__ = ["component_labels", "label_map_from_probabilities", "largest_component", "softmax"]


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32 (in place on a float32 copy)."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out -= out.max(axis=axis, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def label_map_from_probabilities(probs: np.ndarray, organs: Sequence[OrganChannel], *,
                                 largest_component_only: bool = False) -> np.ndarray:
    """(K, X, Y, Z) probabilities → (X, Y, Z) label ids of the teacher's map (0 = background).

    uint8 when every id fits (TotalSegmentator's do), else uint16.
    """
    top = max((o.label_id for o in organs), default=0)
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    lut = np.zeros(probs.shape[0], dtype=dtype)
    for organ in organs:
        lut[organ.channel] = organ.label_id
    labels = lut[probs.argmax(0)]
    if largest_component_only:
        for organ in organs:
            mask = labels == organ.label_id
            labels[mask & ~largest_component(mask)] = 0
    return labels
