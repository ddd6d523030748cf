"""Lazy imports of heavy or optional dependencies."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgemed.errors import MissingDependencyError

__all__ = ["EXTRAS", "install_hint", "require"]

#: The edgemed extra that brings each optional top-level module. It wins over a call site's `extra=`,
#: so every message for one module names the same, right extra. Base dependencies (numpy,
#: onnxruntime, nibabel, pydicom, highdicom, cryptography, safetensors, scipy, ...) are not listed.
EXTRAS: dict[str, str] = {
    "torch": "compress",
    "torch_pruning": "compress",
    "nncf": "compress",
    "onnx": "compress",
    "onnxscript": "compress",
    "onnxslim": "compress",
    "openvino": "openvino",
    "matplotlib": "report",
    "tensorrt": "trt",
    "cuda": "trt",
    "nnunetv2": "nnunet",
    "dynamic_network_architectures": "nnunet",
    "monai": "dev",
}

# nnunetv2 goes in with --no-deps (scripts/install.sh says why), so its extra alone does not bring it.
_NNUNET_NODEPS = (" && pip install --no-deps nnunetv2 dynamic-network-architectures batchgeneratorsv2 (the versions"
                  " in requirements/nnunet-nodeps.txt; from a checkout: bash scripts/install.sh --dev)")
_AFTER_EXTRA = {"nnunetv2": _NNUNET_NODEPS, "dynamic_network_architectures": _NNUNET_NODEPS}

_PIP_NAMES = {"nrrd": "pynrrd", "cv2": "opencv-python", "yaml": "PyYAML", "skimage": "scikit-image"}


def install_hint(module: str, *, extra: str | None = None) -> str:
    """The command that installs `module` ("pip install 'edgemed[compress]'" for torch).

    Args:
        module: A dotted module name; only its top-level package counts.
        extra: The extra to name when `module` is not in `EXTRAS`; without one, its pip name.
    """
    top = module.split(".")[0]
    extra = EXTRAS.get(top, extra)
    if extra is None:
        return f"pip install {_PIP_NAMES.get(top, top)}"
    return f"pip install 'edgemed[{extra}]'{_AFTER_EXTRA.get(top, '')}"


def require(module: str, *, extra: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the install command.

    Args:
        module: Dotted module name, e.g. ``"torch"`` or ``"nnunetv2.inference.predict_from_raw_data"``.
        extra: The edgemed extra that brings it, for modules `EXTRAS` does not list.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != top:
            # The package is present but one of *its* imports failed: say so, don't mislead.
            raise MissingDependencyError(
                f"{module} is installed but failed to import ({err}). "
                f"Reinstall it in this environment: {install_hint(top, extra=extra)}"
            ) from err
        raise MissingDependencyError(
            f"{top} is needed for this step but is not installed. Install it: {install_hint(top, extra=extra)}"
        ) from err
