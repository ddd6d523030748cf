"""Student zoo and teacher adapters.

The zoo needs torch; it is loaded on first use of one of its names, so the torch-free parts
(`edgemed.models.teachers` for ONNX teachers and stored predictions) import without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["STUDENTS", "Ensemble", "StudentInfo", "StudentSpec", "create_student", "list_students", "load_student", "resize_to_state",
           "predict_slices", "predict_volume", "student_payload"]

_LAZY = {
    "STUDENTS": "edgemed.models._zoo",
    "StudentInfo": "edgemed.models._zoo",
    "Ensemble": "edgemed.models._zoo",
    "StudentSpec": "edgemed.models._zoo",
    "create_student": "edgemed.models._zoo",
    "list_students": "edgemed.models._zoo",
    "load_student": "edgemed.models._student_io",
    "resize_to_state": "edgemed.models._student_io",
    "predict_slices": "edgemed.models._predict",
    "predict_volume": "edgemed.models._predict",
    "student_payload": "edgemed.models._student_io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgemed.models' has no attribute {name!r}")
