"""A tiny distilled student for the export tests (session-scoped: distilled once, ~3 s)."""

from __future__ import annotations

import pytest
from _phantom_pairs import write_phantom_pairs

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.compress import DistillConfig, distill
from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
# One torch thread: the CI box is shared, and oversubscribed torch threads run 40x slower there.
# No EMA: over ~30 steps the average would still be mostly the random initialisation.
FAST = dict(student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=6, batch_size=8, lr=1e-2,
            preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4), threads=1, ema_decay=None)


@pytest.fixture(scope="session")
def export_student(tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    root = tmp_path_factory.mktemp("export_student")
    scans, segs = write_phantom_pairs(root, range(2), SMALL)
    return distill(scans, DistillConfig(organs=("liver",), **FAST), root / "liver", teacher_predictions=segs,
                   progress=False)
