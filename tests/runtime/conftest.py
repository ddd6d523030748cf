"""Tiny students and their bundles for the runtime tests (session-scoped; built once, a few seconds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _phantom_pairs import write_phantom_pairs

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.compress import DistillConfig, distill
from edgemed.io import Volume, read_volume
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import OnnxBundle

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
# One torch thread (the CI box is shared; oversubscribed torch threads crawl there) and no EMA
# (over a few dozen steps the average would still be mostly the random initialisation).
_FAST = dict(student="unet2d", student_kwargs={"widths": [8, 16, 32]}, batch_size=8, lr=1e-2, threads=1,
             ema_decay=None)


@pytest.fixture(scope="session")
def phantom_student(tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    root = tmp_path_factory.mktemp("rt_phantom")
    scans, segs = write_phantom_pairs(root, range(2), SMALL)
    config = DistillConfig(organs=("liver",), epochs=6, preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4),
                           **_FAST)
    return distill(scans, config, root / "liver", teacher_predictions=segs, progress=False)


@pytest.fixture(scope="session")
def phantom_bundle(phantom_student: StudentCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> OnnxBundle:
    from edgemed.export import to_onnx

    return to_onnx(phantom_student, tmp_path_factory.mktemp("rt_bundle") / "liver.edgemed")


@pytest.fixture(scope="session")
def phantom_cts() -> list[Volume]:
    """Unseen phantoms on grids unlike the training one (resampling both ways is exercised)."""
    return [make_phantom(seed, PhantomConfig(shape=shape, spacing_mm=spacing))[0]
            for seed, shape, spacing in [(11, (56, 44, 20), (7.0, 7.5, 9.0)), (12, (40, 36, 30), (9.0, 9.0, 8.0)),
                                         (13, (48, 40, 24), (8.0, 8.0, 10.0))]]


@pytest.fixture(scope="session")
def real_ct(real_data: Path) -> Volume:
    return read_volume(real_data / "totalseg" / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def real_student(real_data: Path, real_ct: Volume, tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    # 4 epochs at 6 mm (~2 s): 2 epochs leave an all-liver or empty mask, which would make the
    # torch-vs-runtime agreement below trivially perfect.
    config = DistillConfig(organs=("liver",), epochs=4, preprocess=PreprocessSpec(spacing_mm=(6.0, 6.0), context_slices=1, pad_multiple=4),
                           **_FAST)
    return distill([real_ct], config, tmp_path_factory.mktemp("rt_real") / "liver",
                   teacher_predictions=[real_data / "totalseg" / "example_seg_fast_force_split.nii.gz"], progress=False)


@pytest.fixture(scope="session")
def real_bundle(real_student: StudentCheckpoint, real_ct: Volume, tmp_path_factory: pytest.TempPathFactory) -> OnnxBundle:
    from edgemed.export import OnnxExportConfig, to_onnx

    return to_onnx(real_student, tmp_path_factory.mktemp("rt_real_bundle") / "liver.edgemed",
                   OnnxExportConfig(parity_volumes=(real_ct,)))


@pytest.fixture(scope="session")
def torch_labels() -> Callable[[StudentCheckpoint, Volume], np.ndarray]:
    """The reference: torch `predict_volume(...).argmax(0)`, as label ids."""
    from edgemed.models import load_student, predict_volume

    def labels(student: StudentCheckpoint, volume: Volume) -> np.ndarray:
        probs = predict_volume(load_student(student), volume, student.preprocess)
        lut = np.zeros(probs.shape[0], dtype=np.uint8)
        for organ in student.organs:
            lut[organ.channel] = organ.label_id
        return lut[probs.argmax(0)]

    return labels
