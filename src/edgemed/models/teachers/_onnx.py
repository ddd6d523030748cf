"""ONNX teachers, run through onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgemed._deps import require
from edgemed.errors import BackendError, ConfigError
from edgemed.models.teachers._config import TeacherInputConfig
from edgemed.models.teachers._files import combined_sha256, existing_file
from edgemed.models.teachers._inference import run_pipeline
from edgemed.models.teachers._output import TeacherOutput

if TYPE_CHECKING:
    from edgemed.io import Volume

__all__ = ["OnnxTeacher"]


class OnnxTeacher:
    """An ONNX model as a teacher (onnxruntime; the CPU provider unless device="cuda").

    Weights stored beside the model (``model.onnx.data``, as ``torch.onnx.export`` writes for
    large or newer exports) are found by onnxruntime and included in `identity()`'s hash.

    Example:
        >>> teacher = OnnxTeacher("teacher.onnx", TeacherInputConfig(dims=2, class_ids=(0, 5)))  # doctest: +SKIP
        >>> teacher.predict(volume).mask([5]).sum()                                              # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: TeacherInputConfig | None = None,
        *,
        device: str = "cpu",
        input_name: str | None = None,
        output_name: str | None = None,
    ) -> None:
        """Open `path` in an onnxruntime session.

        Args:
            path: The ``.onnx`` file.
            config: Input preprocessing and tiling; defaults to ``TeacherInputConfig()``.
            device: "cpu", or "cuda" to put the CUDA execution provider first (CPU stays as fallback
                for unsupported nodes).
            input_name: The image input; default the model's first input.
            output_name: The scores output; default the model's first output.

        Raises:
            InputError: The file is missing.
            ConfigError: Unknown input/output name, CUDA asked for but unavailable, or static
                input dims that contradict `config`.
            BackendError: onnxruntime cannot load the model.
        """
        ort = require("onnxruntime", extra="runtime")
        self.path = existing_file(path, "ONNX model")
        self.config = config or TeacherInputConfig()
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"device={device!r} was asked for but this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu); use device='cpu'."
                )
            providers.insert(0, "CUDAExecutionProvider")
        elif device != "cpu":
            raise ConfigError(f"device={device!r}; use 'cpu' or 'cuda'.")
        try:
            self._session = ort.InferenceSession(str(self.path), providers=providers)
        except _ort_errors() as err:
            raise BackendError(f"onnxruntime cannot load {self.path.name}: {err}") from err
        self._input = _pick(self._session.get_inputs(), input_name, "input", self.path.name)
        self._output = _pick(self._session.get_outputs(), output_name, "output", self.path.name)
        self._dtype = np.float16 if self._input.type == "tensor(float16)" else np.float32
        self._check_static_dims()
        self._sha256: str | None = None

    def identity(self) -> dict[str, object]:
        """{"kind": "onnx", "name": file name, "sha256": of the model and its external data files}."""
        if self._sha256 is None:
            self._sha256 = combined_sha256([self.path, *_external_data_files(self.path)], self.path.parent)
        return {"kind": "onnx", "name": self.path.name, "sha256": self._sha256}

    def predict(self, volume: Volume) -> TeacherOutput:
        """The model's scores on `volume`'s grid (see `TeacherInputConfig` for the steps)."""
        return run_pipeline(volume, self.config, self._run_batch, name=self.path.name)

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        static_batch = self._input.shape[0]
        if isinstance(static_batch, int) and static_batch != batch.shape[0]:
            # A model exported with a fixed batch: feed it one item at a time.
            return np.concatenate([self._run_batch(batch[i : i + 1]) for i in range(batch.shape[0])])
        try:
            (out,) = self._session.run([self._output.name], {self._input.name: batch.astype(self._dtype)})
        except _ort_errors() as err:
            raise BackendError(
                f"{self.path.name} failed on input {batch.shape} ({err}). If the model has fixed spatial dims, "
                "match them with spacing_mm/patch_size, or re-export with dynamic axes."
            ) from err
        return np.asarray(out, dtype=np.float32)

    def _check_static_dims(self) -> None:
        shape = self._input.shape
        want_rank = self.config.dims + 2
        if len(shape) != want_rank:
            raise ConfigError(
                f"{self.path.name} input {self._input.name!r} has rank {len(shape)} {shape}; "
                f"TeacherInputConfig(dims={self.config.dims}) feeds rank {want_rank} (N, 1, *spatial)."
            )
        spatial = shape[2:]
        if self.config.dims == 3 and all(isinstance(s, int) for s in spatial):
            if self.config.patch_size is None:
                raise ConfigError(
                    f"{self.path.name} takes fixed {tuple(spatial)} patches; set "
                    f"TeacherInputConfig(patch_size={tuple(spatial)})."
                )
            if tuple(self.config.patch_size) != tuple(spatial):
                raise ConfigError(
                    f"{self.path.name} takes {tuple(spatial)} patches, not patch_size={self.config.patch_size}; "
                    f"set TeacherInputConfig(patch_size={tuple(spatial)})."
                )


def _ort_errors() -> tuple[type[Exception], ...]:
    """onnxruntime's own exception types (they derive from Exception only)."""
    state = require("onnxruntime.capi.onnxruntime_pybind11_state", extra="runtime")
    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NotImplemented",
             "RuntimeException")
    return tuple(getattr(state, n) for n in names if hasattr(state, n))


def _pick(nodes: list, name: str | None, what: str, model: str):  # type: ignore[no-untyped-def]
    if name is None:
        return nodes[0]
    for node in nodes:
        if node.name == name:
            return node
    raise ConfigError(f"{model} has no {what} {name!r}; its {what}s are {[n.name for n in nodes]}.")


def _external_data_files(path: Path) -> list[Path]:
    """Files holding the model's external tensors (read from the graph, not guessed from names)."""
    onnx = require("onnx")
    model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if onnx.external_data_helper.uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path.parent / loc for loc in sorted(locations) if (path.parent / loc).is_file()]
