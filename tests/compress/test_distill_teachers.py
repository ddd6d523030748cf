"""Distillation with teachers run in the loop: an nnU-Net v2 folder and an edgemed student."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgemed.artifacts import PreprocessSpec
from edgemed.compress import DistillConfig, distill
from edgemed.models.teachers import load_teacher
from edgemed.phantom import PhantomConfig, make_phantom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
import _tiny_nnunet  # noqa: E402

SMALL = PhantomConfig(shape=(32, 24, 16), spacing_mm=(6.0, 8.0, 9.0))
FAST = dict(student="unet2d", student_kwargs={"widths": [4, 8]}, epochs=1, batch_size=4,
            preprocess=PreprocessSpec(spacing_mm=(6.0, 8.0), context_slices=1, pad_multiple=2), threads=2)


def test_distill_from_an_nnunet_folder(tmp_path: Path) -> None:
    folder = _tiny_nnunet.write_model_folder(tmp_path / "models")
    label_map = tmp_path / "labels.json"
    label_map.write_text(json.dumps({"1": "liver", "2": "spleen"}))
    teacher = load_teacher(folder)
    ct, _ = make_phantom(0, SMALL)
    ckpt = distill([ct], DistillConfig(organs=("liver",), label_map=str(label_map), **FAST), tmp_path / "s",
                   teacher=teacher, progress=False)
    meta = ckpt.metadata
    assert meta["teacher"]["kind"] == "nnunetv2"
    assert meta["training"]["soft_targets"] is True
    assert 0.0 <= meta["validation"]["dice"]["liver"] <= 1.0


def test_student_checkpoint_as_teacher(tmp_path: Path) -> None:
    """Distill a big student, then a smaller one from its logits (teacher → student → smaller student)."""
    ct, labels = make_phantom(1, SMALL)
    from edgemed.io import write_nifti

    write_nifti(ct, tmp_path / "ct.nii.gz")
    write_nifti(labels, tmp_path / "seg.nii.gz")
    big = distill([tmp_path / "ct.nii.gz"], DistillConfig(organs=("liver", "spleen"), **FAST), tmp_path / "big",
                  teacher_predictions=[tmp_path / "seg.nii.gz"], progress=False)
    teacher = load_teacher(big.path)
    assert teacher.identity()["sha256"] == big.manifest.digest
    out = teacher.predict(ct)
    assert out.kind == "logits" and out.class_ids == (0, 5, 1)
    small = distill([ct], DistillConfig(organs=("spleen",), **FAST), tmp_path / "small", teacher=teacher,
                    progress=False)
    assert small.manifest.parent == big.manifest.digest  # lineage
    assert small.metadata["teacher"]["kind"] == "edgemed-student"


def test_student_teacher_rejects_options(tmp_path: Path) -> None:
    from edgemed.errors import ConfigError
    from edgemed.models.teachers import TeacherInputConfig

    ct, labels = make_phantom(2, SMALL)
    big = distill([ct], DistillConfig(organs=("liver",), **FAST), tmp_path / "big",
                  teacher=_LabelsTeacher(labels.array), progress=False)
    with pytest.raises(ConfigError, match="carries its own preprocessing"):
        load_teacher(big.path, config=TeacherInputConfig(dims=2))


class _LabelsTeacher:
    """A teacher object defined by the user: anything with identity() and predict()."""

    def __init__(self, labels: object) -> None:
        self.labels = labels

    def identity(self) -> dict[str, object]:
        return {"kind": "custom", "name": "labels"}

    def predict(self, volume: object):  # type: ignore[no-untyped-def]
        from edgemed.models.teachers import TeacherOutput

        return TeacherOutput(class_ids=(0, 1, 5), kind="labels", labels=self.labels)
