"""The numpy connected-component labelling agrees with scipy's and the label map uses teacher ids."""

from __future__ import annotations

import numpy as np
import pytest

from edgemed.artifacts import OrganChannel
from edgemed.runtime import component_labels, largest_component
from edgemed.runtime._postprocess import label_map_from_probabilities, softmax


@pytest.mark.parametrize("shape, density", [((20, 18, 16), 0.3), ((30, 25, 12), 0.5), ((7, 1, 9), 0.6),
                                            ((6, 6, 6), 0.0), ((5, 5, 5), 1.0)])
def test_components_match_scipy(shape: tuple[int, int, int], density: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    mask = np.random.default_rng(0).random(shape) < density
    labels, n = component_labels(mask)
    ref, ref_n = ndimage.label(mask)  # 6-connectivity by default in 3D
    assert n == ref_n
    assert len(set(zip(labels[mask].tolist(), ref[mask].tolist()))) == n  # the same partition
    assert set(np.unique(labels[mask]).tolist()) == set(range(1, n + 1))
    if n:
        assert largest_component(mask).sum() == np.bincount(ref.ravel())[1:].max()


def test_diagonal_voxels_are_separate_components() -> None:
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 0] = mask[2, 2, 2] = True
    assert component_labels(mask)[1] == 3


def test_largest_component_keeps_the_big_blob() -> None:
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[2:10, 2:10, 2:10] = True
    mask[15:17, 15:17, 15:17] = True
    kept = largest_component(mask)
    assert kept.sum() == 512 and not kept[15:17, 15:17, 15:17].any()


def test_label_map_uses_teacher_ids_and_widens_when_needed() -> None:
    probs = softmax(np.random.default_rng(1).normal(size=(1, 3, 4, 5, 6)), axis=1)[0]
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)
    labels = label_map_from_probabilities(probs, (OrganChannel(1, 5, "liver"), OrganChannel(2, 1, "spleen")))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 5}
    np.testing.assert_array_equal(labels == 5, probs.argmax(0) == 1)
    wide = label_map_from_probabilities(probs, (OrganChannel(1, 300, "a"), OrganChannel(2, 2, "b")))
    assert wide.dtype == np.uint16 and 300 in wide
