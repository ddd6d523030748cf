"""Teachers: the large models whose output students learn, all behind one `Teacher` protocol.

Four kinds (DESIGN.md): a torch module (entry point + checkpoint, or TorchScript), an ONNX model,
an nnU-Net v2 model folder, and stored predictions. Each returns a `TeacherOutput` on the input
volume's own grid. torch, onnxruntime and nnunetv2 load only when a teacher of that kind is used.

Example:
    >>> from edgemed.models.teachers import load_teacher
    >>> teacher = load_teacher("Dataset291_TotalSegmentator_part1_organs_1559subj")  # doctest: +SKIP
    >>> liver = teacher.predict(volume).probabilities([5], temperature=2.0)          # doctest: +SKIP
"""

from edgemed.models.teachers._config import DEFAULT_WINDOW_HU, TeacherInputConfig
from edgemed.models.teachers._load import TEACHER_SPECS, load_teacher
from edgemed.models.teachers._nnunet import NnUNetTeacher, find_nnunet_folder
from edgemed.models.teachers._onnx import OnnxTeacher
from edgemed.models.teachers._output import Teacher, TeacherOutput
from edgemed.models.teachers._stored import StoredPredictions, load_stored_prediction
from edgemed.models.teachers._student import StudentTeacher
from edgemed.models.teachers._torch import TorchTeacher

__all__ = [
    "DEFAULT_WINDOW_HU",
    "TEACHER_SPECS",
    "NnUNetTeacher",
    "OnnxTeacher",
    "StoredPredictions",
    "StudentTeacher",
    "Teacher",
    "TeacherInputConfig",
    "TeacherOutput",
    "TorchTeacher",
    "find_nnunet_folder",
    "load_teacher",
    "load_stored_prediction",
]
