"""Phantom scans and a tiny recipe for the pipeline tests (students distill in seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _phantom_pairs import write_phantom_pairs

from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


def tiny_recipe_toml(data: Path, *, ratios: str = "[0.0, 0.5]", precisions: str = '["fp32", "int8"]',
                     epochs: int = 8, extra: str = "", organs: str = '["liver"]') -> str:
    """A recipe over one phantom scan, sized to run in seconds."""
    return f"""
organs = {organs}
scans = ["{data / 'ct3.nii.gz'}"]
teacher_predictions = ["{data / 'seg3.nii.gz'}"]
target = "host"
min_dice = 0.0
{extra}

[distill]
epochs = {epochs}
batch_size = 8
lr = 0.01
threads = 1
ema_decay = "none"
preprocess = {{ spacing_mm = [8.0, 8.0], context_slices = 1, pad_multiple = 4 }}

[search]
widths = [[8, 16, 32]]
prune_ratios = {ratios}
precisions = {precisions}
backends = ["ort"]

[prune]
finetune_epochs = 6
lr = 0.01

[quantize]
calibration_slices = 8
max_dice_drop = 0.2

[profile]
repeats = 3
warmup = 1
threads = 1
"""


@pytest.fixture(scope="session")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One phantom CT (ct3.nii.gz) and its label map (seg3.nii.gz)."""
    root = tmp_path_factory.mktemp("pipeline_data")
    write_phantom_pairs(root, [3], SMALL)
    return root
