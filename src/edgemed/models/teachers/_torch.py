"""Torch teachers: a ``module:factory`` entry point plus a checkpoint, or a TorchScript archive."""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import ArtifactError, ConfigError, InputError
from edgemed.models.teachers._config import TeacherInputConfig
from edgemed.models.teachers._files import existing_file, is_torchscript, sha256_file
from edgemed.models.teachers._inference import run_pipeline
from edgemed.models.teachers._output import TeacherOutput

if TYPE_CHECKING:
    import torch

    from edgemed.io import Volume

__all__ = ["ENTRY_POINT_PATTERN", "TorchTeacher", "load_state_dict_file", "torch_device"]

ENTRY_POINT_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
# Prefixes DDP (`module.`) and torch.compile (`_orig_mod.`) put on every key of a saved state dict.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class TorchTeacher:
    """A torch network as a teacher, run under ``torch.inference_mode()`` in batches.

    Build one with `from_entry_point` or `from_torchscript` (or `load_teacher`).

    Example:
        >>> teacher = TorchTeacher.from_entry_point(
        ...     "my_models.unet:build", checkpoint="unet.pt",
        ...     config=TeacherInputConfig(dims=2, class_ids=(0, 5)))   # doctest: +SKIP
        >>> teacher.predict(volume).probabilities([5]).shape           # doctest: +SKIP
    """

    def __init__(
        self,
        module: torch.nn.Module,
        config: TeacherInputConfig,
        *,
        identity: Mapping[str, object],
        device: str = "cpu",
    ) -> None:
        """Wrap an already-built module; prefer the `from_*` constructors, which fill `identity`."""
        self._device = torch_device(device)
        self.module = module.to(self._device).eval()
        self.config = config
        self._identity = dict(identity)

    @classmethod
    def from_entry_point(
        cls,
        entry_point: str,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        config: TeacherInputConfig | None = None,
        device: str = "cpu",
    ) -> TorchTeacher:
        """Build the module with ``factory()`` from ``"package.module:factory"`` and load `checkpoint`.

        Args:
            entry_point: ``"package.module:factory"``; ``factory()`` returns an ``nn.Module``.
            checkpoint: A state dict saved by ``torch.save`` (optionally under "state_dict" or
                "network_weights"); loaded with ``weights_only=True``. None keeps the factory's weights.
            config: Input preprocessing and tiling; defaults to ``TeacherInputConfig()``.
            device: "cpu" or "cuda" (or "cuda:1").

        Raises:
            ConfigError: The entry point cannot be imported, returns no module, or the checkpoint
                does not fit it.
            InputError: The checkpoint is missing.
            ArtifactError: The checkpoint holds pickled objects beyond plain tensors.

        Example:
            >>> TorchTeacher.from_entry_point("my_models.unet:build", checkpoint="unet.pt")  # doctest: +SKIP
        """
        torch = require("torch")
        factory = _resolve_entry_point(entry_point)
        try:
            module = factory()
        except TypeError as err:
            raise ConfigError(
                f"{entry_point}() failed ({err}); the factory must build the network with no arguments."
            ) from err
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"{entry_point}() returned {type(module).__name__}, not a torch.nn.Module.")
        sha = None
        if checkpoint is not None:
            path = existing_file(checkpoint, "checkpoint")
            _load_into(module, load_state_dict_file(path), path.name)
            sha = sha256_file(path)
        identity = {"kind": "torch", "name": entry_point, "sha256": sha}
        if checkpoint is not None:
            identity["checkpoint"] = Path(checkpoint).name
        return cls(module, config or TeacherInputConfig(), identity=identity, device=device)

    @classmethod
    def from_torchscript(
        cls, path: str | os.PathLike[str], config: TeacherInputConfig | None = None, *, device: str = "cpu"
    ) -> TorchTeacher:
        """Load a ``torch.jit.save`` archive (TorchScript's own loader: code in the archive is
        TorchScript, and no arbitrary Python objects are unpickled).

        Raises:
            InputError: The file is missing or not a TorchScript archive.

        Example:
            >>> TorchTeacher.from_torchscript("teacher.ts", TeacherInputConfig(dims=2))  # doctest: +SKIP
        """
        torch = require("torch")
        p = existing_file(path, "TorchScript file")
        if not is_torchscript(p):
            raise InputError(
                f"{p.name} is not a TorchScript archive. A state dict needs its architecture: "
                f"load_teacher('package.module:factory', checkpoint='{p.name}')."
            )
        module = torch.jit.load(str(p), map_location=torch_device(device))
        identity = {"kind": "torchscript", "name": p.name, "sha256": sha256_file(p)}
        return cls(module, config or TeacherInputConfig(), identity=identity, device=device)

    def identity(self) -> dict[str, object]:
        """{"kind": "torch" | "torchscript", "name": entry point or file name, "sha256": of the weights}."""
        return dict(self._identity)

    def predict(self, volume: Volume) -> TeacherOutput:
        """The network's scores on `volume`'s grid (see `TeacherInputConfig` for the steps)."""
        return run_pipeline(volume, self.config, self._run_batch, name=str(self._identity["name"]))

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        torch = require("torch")
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self._device))
        if isinstance(out, (tuple, list)):
            out = out[0]  # deep supervision: the full-resolution head comes first
        if isinstance(out, Mapping):
            if len(out) != 1:
                raise ConfigError(f"{self._identity['name']} returns a dict {list(out)}; wrap it to return one tensor.")
            out = next(iter(out.values()))
        return out.float().cpu().numpy()


def torch_device(device: str) -> torch.device:
    """A torch.device, refusing CUDA when this host has none (never a silent CPU fallback)."""
    torch = require("torch")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device={device!r} is not a torch device; use 'cpu' or 'cuda'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was asked for but torch sees no CUDA GPU here; use device='cpu'.")
    return dev


def load_state_dict_file(path: Path) -> dict[str, Any]:
    """A state dict from `path` via ``torch.load(weights_only=True)``; unwraps "state_dict"/"network_weights".

    Raises:
        ArtifactError: The file holds pickled objects (classes, functions) beyond tensors and containers.
    """
    torch = require("torch")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ArtifactError(
            f"{path.name} holds pickled Python objects, and edgemed will not unpickle arbitrary code "
            "(torch.load(weights_only=True) refused it). Re-save only the weights where you trust the file: "
            "torch.save(model.state_dict(), 'weights.pt')."
        ) from err
    if isinstance(obj, Mapping):
        for key in ("state_dict", "network_weights", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(
            f"{path.name} is not a state dict (name → tensor); save one with torch.save(model.state_dict(), path)."
        )
    return dict(obj)


def _load_into(module: torch.nn.Module, state: dict[str, Any], name: str) -> None:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(
            f"{name} does not fit the network the entry point builds ({str(err).splitlines()[0]} …). "
            "Check that the factory builds the architecture the checkpoint was trained with."
        ) from err


def _resolve_entry_point(entry_point: str) -> Any:
    if not ENTRY_POINT_PATTERN.match(entry_point):
        raise ConfigError(f"entry point {entry_point!r} is not of the form 'package.module:factory'.")
    module_name, attr = entry_point.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"cannot import {module_name!r} for teacher {entry_point!r} ({err}); install the package that "
            "defines it or add its folder to PYTHONPATH."
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name} has no {attr!r}; check the name after ':' in {entry_point!r}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{entry_point} is not callable; point at a function that returns an nn.Module.")
    return obj
