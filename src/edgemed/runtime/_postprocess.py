"""Logits → probabilities → label map, and largest-connected-component cleanup (numpy only).

Connected components come from `edgemed._ndimage` (numpy, no scipy on device).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgemed._ndimage import component_labels, largest_component
from edgemed.artifacts import OrganChannel

__all__ = ["component_labels", "keep_largest_components_", "label_lut", "label_map_from_probabilities",
           "largest_component", "softmax", "softmax_"]


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32 (on a float32 copy)."""
    out = np.array(logits, dtype=np.float32, copy=True)
    softmax_(out, axis=axis)
    return out


def softmax_(values: np.ndarray, axis: int = 1) -> None:
    """Numerically stable softmax of a float32 array over `axis`, in place (the inference loop's streaming path)."""
    values -= values.max(axis=axis, keepdims=True)
    np.exp(values, out=values)
    values /= values.sum(axis=axis, keepdims=True)


def label_map_from_probabilities(probs: np.ndarray, organs: Sequence[OrganChannel], *,
                                 largest_component_only: bool = False) -> np.ndarray:
    """(K, X, Y, Z) probabilities → (X, Y, Z) label ids of the teacher's map (0 = background).

    uint8 when every id fits (TotalSegmentator's do), else uint16.
    """
    labels = label_lut(organs, probs.shape[0])[probs.argmax(0)]
    if largest_component_only:
        keep_largest_components_(labels, organs)
    return labels


def label_lut(organs: Sequence[OrganChannel], classes: int = 0) -> np.ndarray:
    """Class channel → label id (0 for background), uint8 when every id fits, else uint16."""
    top = max((o.label_id for o in organs), default=0)
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    lut = np.zeros(max(classes, len(organs) + 1, *(o.channel + 1 for o in organs)), dtype=dtype)
    for organ in organs:
        lut[organ.channel] = organ.label_id
    return lut


def keep_largest_components_(labels: np.ndarray, organs: Sequence[OrganChannel]) -> None:
    """Keep only the largest 3D connected component of each organ in a label map, in place."""
    for organ in organs:
        mask = labels == organ.label_id
        labels[mask & ~largest_component(mask)] = 0
