"""Lazy imports of heavy or optional dependencies."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgemed.errors import MissingDependencyError

__all__ = ["require"]

_PIP_NAMES = {
    "torch": "torch",
    "nnunetv2": "nnunetv2",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "tensorrt": "tensorrt",
    "highdicom": "highdicom",
    "pydicom": "pydicom",
    "safetensors": "safetensors",
}


def require(module: str, *, extra: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the install command.

    Args:
        module: Dotted module name, e.g. ``"torch"`` or ``"nnunetv2.inference.predict_from_raw_data"``.
        extra: The edgemed extra that brings it, used in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            # The package is present but one of *its* imports failed: say so, don't mislead.
            raise MissingDependencyError(
                f"{module} is installed but failed to import ({err}). "
                f"Reinstall it in this environment: bash scripts/install.sh --dev"
            ) from err
        hint = f"pip install 'edgemed[{extra}]'" if extra else f"pip install {_PIP_NAMES.get(top, top)}"
        raise MissingDependencyError(f"{top} is needed for this step but is not installed. Install it: {hint}") from err
