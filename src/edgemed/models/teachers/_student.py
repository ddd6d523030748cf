"""An edgemed student checkpoint used as a teacher (distill a smaller student from a bigger one)."""

from __future__ import annotations

from pathlib import Path

from edgemed.io import Volume
from edgemed.models.teachers._output import TeacherOutput

__all__ = ["StudentTeacher"]


class StudentTeacher:
    """A distilled edgemed student as a teacher: gives logits for background + its organs.

    Example:
        >>> teacher = StudentTeacher("runs/abdomen_res_unet")   # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, batch_size: int = 16) -> None:
        from edgemed.artifacts import StudentCheckpoint

        self.checkpoint = StudentCheckpoint.load(path)
        self.batch_size = batch_size
        self.class_ids = (0, *(o.label_id for o in self.checkpoint.organs))
        self._net = None

    def identity(self) -> dict[str, object]:
        """Kind, name and the checkpoint's digest (lineage)."""
        return {"kind": "edgemed-student", "name": self.checkpoint.path.name,
                "sha256": self.checkpoint.manifest.digest, "arch": self.checkpoint.architecture["arch"]}

    def label_names(self) -> dict[int, str]:
        """Label id → organ name."""
        return {o.label_id: o.name for o in self.checkpoint.organs}

    def predict(self, volume: Volume) -> TeacherOutput:
        """Logits (1 + organs, X, Y, Z) on the volume's grid."""
        from edgemed.models import load_student, predict_volume

        if self._net is None:
            self._net = load_student(self.checkpoint)
        logits = predict_volume(self._net, volume, self.checkpoint.preprocess, batch_size=self.batch_size,
                                logits=True)
        return TeacherOutput(class_ids=self.class_ids, kind="logits", scores=logits)
