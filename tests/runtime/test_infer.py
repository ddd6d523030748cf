"""The one inference loop (`infer_volume`/`infer_slices`/`iter_slice_batches`), with a numpy model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from _no_torch import run_without_torch
from edgemed.artifacts import PreprocessSpec
from edgemed.errors import ConfigError, InputError
from edgemed.io import Volume, context_stack, from_student_grid, prepare_volume
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import infer_slices, infer_volume, iter_slice_batches
from edgemed.runtime._postprocess import softmax

# context_spacing_mm / slice thickness = 1.5: the context slices are interpolated along z
SPEC = PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=2, context_spacing_mm=15.0, pad_multiple=4)
_RNG = np.random.default_rng(0)
_W = _RNG.normal(size=(3, 2 * SPEC.context_slices + 1)).astype(np.float32)
_B = np.array([0.5, -0.25, 0.0], dtype=np.float32)


def _model(x: np.ndarray) -> np.ndarray:
    """A per-pixel linear 3-class model, elementwise only, so a row's logits never depend on its batch."""
    out = np.empty((x.shape[0], len(_W), *x.shape[2:]), dtype=np.float32)
    for k in range(len(_W)):
        out[:, k] = _B[k]
        for c in range(x.shape[1]):
            out[:, k] += _W[k, c] * x[:, c]
    return out


@pytest.fixture(scope="module")
def ct() -> Volume:
    return make_phantom(21, PhantomConfig(shape=(40, 36, 19), spacing_mm=(8.0, 8.0, 10.0)))[0]


def _by_hand(volume: Volume, spec: PreprocessSpec) -> np.ndarray:
    image, geom = prepare_volume(volume, spec)
    scores = np.stack([softmax(_model(context_stack(image, [k], spec.context_slices, step=geom.context_step)))[0]
                       for k in range(image.shape[0])])
    return from_student_grid(scores, geom)


def test_infer_volume_equals_a_hand_written_loop(ct: Volume) -> None:
    probs = infer_volume(_model, ct, SPEC)
    assert probs.dtype == np.float32 and probs.shape == (3, *ct.shape)
    np.testing.assert_array_equal(probs, _by_hand(ct, SPEC))
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    assert len(np.unique(probs.argmax(0))) > 1  # the model separates something: the comparison is not vacuous


def test_softmax_false_returns_what_run_returns(ct: Volume) -> None:
    image, geom = prepare_volume(ct, SPEC)
    ks = np.array([0, 7, 3, 18])
    logits = infer_slices(_model, image, ks, context=SPEC.context_slices, step=geom.context_step, softmax=False)
    np.testing.assert_array_equal(logits, _model(context_stack(image, ks, SPEC.context_slices, step=geom.context_step)))


def test_batch_size_does_not_change_the_output(ct: Volume) -> None:
    one = infer_volume(_model, ct, SPEC, batch_size=1)
    np.testing.assert_array_equal(one, infer_volume(_model, ct, SPEC, batch_size=16))
    np.testing.assert_array_equal(one, infer_volume(_model, ct, SPEC, batch_size=5))


def test_fixed_batch_pads_the_last_batch_and_drops_the_padding(ct: Volume) -> None:
    seen: list[int] = []

    def fixed(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape[0])
        assert x.shape[0] == 4, "a fixed-batch model must always get its own batch size"
        return _model(x)

    image, geom = prepare_volume(ct, SPEC)
    # 19 slices in batches of 4: the fifth batch holds 3 slices plus one repeat; batch_size is ignored
    probs = infer_volume(fixed, ct, SPEC, batch_size=16, fixed_batch=4)
    assert seen == [4] * 5 and image.shape[0] == 19
    np.testing.assert_array_equal(probs, infer_volume(_model, ct, SPEC, batch_size=4))
    batches = list(iter_slice_batches(image, np.arange(19), context=SPEC.context_slices, step=geom.context_step,
                                      fixed_batch=4))
    last_ks, last_x = batches[-1]
    np.testing.assert_array_equal(last_ks, [16, 17, 18])
    np.testing.assert_array_equal(last_x[3], last_x[2])  # the padding repeats the last stack
    np.testing.assert_array_equal(np.concatenate([ks for ks, _ in batches]), np.arange(19))


def test_batches_are_float32_contiguous_and_in_order() -> None:
    image = np.arange(6 * 4 * 4, dtype=np.float64).reshape(6, 4, 4)
    ks = np.array([5, 0, 2, 3, 1])
    got = list(iter_slice_batches(image, ks, context=1, batch_size=2))
    assert [c.tolist() for c, _ in got] == [[5, 0], [2, 3], [1]]
    for chunk, x in got:
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (len(chunk), 3, 4, 4)
        np.testing.assert_array_equal(x, context_stack(image, chunk, 1).astype(np.float32))


def test_timings_accumulate(ct: Volume) -> None:
    def slow(x: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return _model(x)

    timings: dict[str, float] = {}
    infer_volume(slow, ct, SPEC, batch_size=8, timings=timings)
    assert timings["batches"] == 3 and timings["slices"] == 19  # 19 slices: 8 + 8 + 3
    assert timings["inference"] >= 3 * 0.002
    assert timings["preprocess"] > 0 and timings["postprocess"] > 0
    first = dict(timings)
    infer_volume(slow, ct, SPEC, batch_size=8, timings=timings)
    assert timings["batches"] == 6 and timings["slices"] == 38
    for key in ("preprocess", "inference", "postprocess"):
        assert timings[key] > first[key]


def test_bad_batch_sizes_and_no_slices_are_refused() -> None:
    image = np.zeros((4, 8, 8), dtype=np.float32)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            infer_slices(_model, image, [0, 1], context=2, batch_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="fixed_batch"):
        list(iter_slice_batches(image, [0], context=2, fixed_batch=0))
    with pytest.raises(InputError, match="no slices"):
        infer_slices(_model, image, [], context=2)


def test_infer_volume_runs_without_torch() -> None:
    result = run_without_torch(
        "import numpy as np\n"
        "from edgemed.artifacts import PreprocessSpec\n"
        "from edgemed.phantom import PhantomConfig, make_phantom\n"
        "from edgemed.runtime import infer_volume\n"
        "ct, _ = make_phantom(3, PhantomConfig(shape=(24, 20, 6), spacing_mm=(8.0, 8.0, 10.0)))\n"
        "spec = PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4)\n"
        "probs = infer_volume(lambda x: np.stack([x[:, 1], -x[:, 1]], 1), ct, spec)\n"
        "assert probs.shape == (2, *ct.shape), probs.shape\n"
        "assert 'torch' not in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr
