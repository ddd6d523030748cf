"""Logits → probabilities → label map, and largest-connected-component cleanup (numpy only).

No scipy on device: connected components are found with a vectorised union-find (hook every
edge's higher root onto its lower one, then pointer-jump until the forest is flat), which needs
a handful of passes over the foreground edges instead of a Python loop over voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def component_labels(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """6-connected components of a 3D boolean mask.

    Returns:
        An int64 array (0 = background, components numbered 1..n in order of their first voxel)
        and the number of components n.
    """
    mask = np.asarray(mask, dtype=bool)
    flat = np.flatnonzero(mask)
    out = np.zeros(mask.shape, dtype=np.int64)
    if flat.size == 0:
        return out, 0
    roots = _union_find_roots(mask, flat.size)
    # Roots are each component's smallest node (its first voxel), so np.unique numbers components in that order.
    _, inverse = np.unique(roots, return_inverse=True)
    out.ravel()[flat] = inverse.ravel() + 1
    return out, int(inverse.max()) + 1


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a 3D boolean mask (ties: the first in memory order)."""
    mask = np.asarray(mask, dtype=bool)
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return mask.copy()
    roots = _union_find_roots(mask, flat.size)
    counts = np.bincount(roots, minlength=flat.size)
    keep = np.zeros(mask.shape, dtype=bool)
    keep.ravel()[flat[roots == int(counts.argmax())]] = True
    return keep


def _union_find_roots(mask: np.ndarray, n: int) -> np.ndarray:
    """For each foreground voxel (in memory order), the smallest node index of its component."""
    node = np.full(mask.shape, -1, dtype=np.int64)
    node[mask] = np.arange(n, dtype=np.int64)
    us, vs = [], []
    for axis in range(mask.ndim):
        lo = tuple(slice(0, -1) if a == axis else slice(None) for a in range(mask.ndim))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(mask.ndim))
        both = mask[lo] & mask[hi]
        us.append(node[lo][both])
        vs.append(node[hi][both])
    u, v = np.concatenate(us), np.concatenate(vs)
    parent = np.arange(n, dtype=np.int64)
    while u.size:
        pu, pv = parent[u], parent[v]
        open_ = pu != pv
        u, v, pu, pv = u[open_], v[open_], pu[open_], pv[open_]
        if not u.size:
            break
        # parent[x] <= x always holds, so hooking the larger root under the smaller never makes a cycle.
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent
