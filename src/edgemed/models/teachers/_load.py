"""`load_teacher`: one entry point that recognises the teacher kind from its spec."""

from __future__ import annotations

import os
from pathlib import Path

from edgemed.errors import ConfigError, InputError
from edgemed.models.teachers._config import TeacherInputConfig
from edgemed.models.teachers._files import is_torchscript
from edgemed.models.teachers._nnunet import NnUNetTeacher, find_nnunet_folder
from edgemed.models.teachers._onnx import OnnxTeacher
from edgemed.models.teachers._output import Teacher
from edgemed.models.teachers._student import StudentTeacher
from edgemed.models.teachers._torch import ENTRY_POINT_PATTERN, TorchTeacher

__all__ = ["TEACHER_SPECS", "load_teacher"]

TEACHER_SPECS = (
    "an edgemed student checkpoint folder (manifest.json of kind 'student')",
    "an nnU-Net v2 model folder (plans.json + dataset.json + fold_N/), or its parent",
    "an ONNX model (*.onnx)",
    "a TorchScript archive (*.pt, *.pth, *.ts, *.jit)",
    "a torch entry point 'package.module:factory' (with checkpoint= a state dict, or none)",
)
_TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit")
_FILE_SUFFIXES = (".onnx", *_TORCHSCRIPT_SUFFIXES)


def load_teacher(
    spec: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    config: TeacherInputConfig | None = None,
    device: str = "cpu",
) -> Teacher:
    """Open a teacher of any kind from one spec (a path or an entry point).

    Args:
        spec: One of `TEACHER_SPECS`.
        checkpoint: Weights for an entry point (a state dict; loaded with weights_only=True).
        config: Input preprocessing and tiling for torch/ONNX teachers. nnU-Net folders carry
            their own (plans.json), so passing one for them is an error.
        device: "cpu" (default) or "cuda".

    Returns:
        A `Teacher`: ``identity()`` and ``predict(volume) -> TeacherOutput``.

    Raises:
        ConfigError: A spec of none of the accepted forms (lists them), or options that do not fit it.
        InputError: A path-like spec or checkpoint that does not exist.

    Example:
        >>> teacher = load_teacher("models/Dataset291_TotalSegmentator_part1_organs_1559subj")  # doctest: +SKIP
        >>> teacher = load_teacher("my_pkg.nets:unet", checkpoint="unet.pt",
        ...                        config=TeacherInputConfig(dims=2, class_ids=(0, 5)))         # doctest: +SKIP
        >>> teacher.predict(volume).probabilities([5])                                          # doctest: +SKIP
    """
    text = os.fspath(spec)
    path = Path(text)
    if path.exists():
        return _from_path(path, checkpoint, config, device)
    if isinstance(spec, str) and ENTRY_POINT_PATTERN.match(text):
        return TorchTeacher.from_entry_point(text, checkpoint=checkpoint, config=config, device=device)
    if path.suffix.lower() in _FILE_SUFFIXES or os.sep in text or "/" in text:
        raise InputError(f"teacher {text!r} does not exist; check the path.")
    raise ConfigError(f"teacher {text!r} is none of: " + "; ".join(TEACHER_SPECS) + ".")


def _from_path(path: Path, checkpoint: object, config: TeacherInputConfig | None, device: str) -> Teacher:
    if path.is_dir() and (path / "manifest.json").is_file():
        if config is not None or checkpoint is not None:
            raise ConfigError(f"{path.name} is an edgemed student: it carries its own preprocessing; drop config=.")
        return StudentTeacher(path)
    if path.is_dir():
        folder = find_nnunet_folder(path)
        if folder is None:
            raise ConfigError(
                f"{path.name}/ is not an nnU-Net v2 model folder (no plans.json + dataset.json in it or in a single "
                "subfolder). A teacher is one of: " + "; ".join(TEACHER_SPECS) + "."
            )
        if config is not None or checkpoint is not None:
            raise ConfigError(
                f"{folder.name} is an nnU-Net folder: it carries its own preprocessing (plans.json) and weights "
                "(fold_N/); drop config= and checkpoint=."
            )
        return NnUNetTeacher(folder, device=device)
    if checkpoint is not None:
        raise ConfigError(f"checkpoint= goes with a 'package.module:factory' entry point, not with {path.name}.")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxTeacher(path, config, device=device)
    if suffix in _TORCHSCRIPT_SUFFIXES:
        if not is_torchscript(path):
            raise ConfigError(
                f"{path.name} is a state dict, not TorchScript; it needs its architecture: "
                f"load_teacher('package.module:factory', checkpoint='{path.name}')."
            )
        return TorchTeacher.from_torchscript(path, config, device=device)
    raise ConfigError(f"{path.name}: unrecognised teacher file. A teacher is one of: " + "; ".join(TEACHER_SPECS) + ".")
