"""nnU-Net v2 teachers: a trained model folder (TotalSegmentator's models are such folders)."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import ArtifactError, ConfigError, InputError
from edgemed.models.teachers._files import combined_sha256
from edgemed.models.teachers._output import TeacherOutput
from edgemed.models.teachers._torch import torch_device

if TYPE_CHECKING:
    from edgemed.io import Volume

__all__ = ["NnUNetTeacher", "find_nnunet_folder"]

_FOLDER_FILES = ("plans.json", "dataset.json")


def find_nnunet_folder(path: str | os.PathLike[str]) -> Path | None:
    """The nnU-Net model folder at `path` (holding plans.json + dataset.json), or in its single
    subfolder (``Dataset291_…/nnUNetTrainer…__3d_fullres``); None when neither holds one."""
    p = Path(path)
    if all((p / f).is_file() for f in _FOLDER_FILES):
        return p
    if p.is_dir():
        subs = [s for s in p.iterdir() if s.is_dir() and all((s / f).is_file() for f in _FOLDER_FILES)]
        if len(subs) == 1:
            return subs[0]
    return None


class NnUNetTeacher:
    """An nnU-Net v2 trained model folder as a teacher, run with nnU-Net's own predictor.

    nnU-Net does its own preprocessing (its plans.json normalisation, spacing and patch size), so
    this teacher takes no `TeacherInputConfig`. Scores are softmax probabilities (kind="probs") with
    one channel per dataset.json label; region-based models give labels only.

    Trust boundary: nnU-Net checkpoints are pickles, and nnunetv2's own loader
    (``initialize_from_trained_model_folder``) unpickles them with ``weights_only=False``, which can
    run arbitrary code. edgemed does not call it: it loads the checkpoint with
    ``torch.load(weights_only=True)`` (numpy scalars allowed, as nnU-Net's training logs hold
    them) and hands the weights to nnU-Net. ``trust_checkpoint=True`` skips that guard and lets
    nnunetv2 unpickle — only for folders from a source you trust.

    Example:
        >>> teacher = NnUNetTeacher("Dataset291_TotalSegmentator_part1_organs_1559subj", folds=(0,))  # doctest: +SKIP
        >>> teacher.label_names()[5]                                                                  # doctest: +SKIP
        'liver'
        >>> teacher.predict(volume).probabilities([5]).shape                                          # doctest: +SKIP
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        folds: Sequence[int | str] = (0,),
        checkpoint_name: str = "checkpoint_final.pth",
        device: str = "cpu",
        tile_step_size: float = 0.5,
        use_mirroring: bool = False,
        trust_checkpoint: bool = False,
    ) -> None:
        """Load the model folder and its fold checkpoints.

        Args:
            folder: The folder holding plans.json, dataset.json and fold_N/, or its parent.
            folds: Folds to ensemble (their softmax inputs are averaged, as nnU-Net does); "all" too.
            checkpoint_name: File inside each fold folder.
            device: "cpu" or "cuda".
            tile_step_size: Sliding-window step as a fraction of the patch (0.5 = half overlap).
            use_mirroring: Test-time mirroring (up to 8x slower).
            trust_checkpoint: Let nnunetv2 unpickle the checkpoints itself (see the trust boundary).

        Raises:
            InputError: No model folder or checkpoint there (names the folds that exist).
            ArtifactError: A checkpoint holds pickled objects beyond weights and trust_checkpoint is off.
            ConfigError: The model needs more than one input channel, or its trainer class is unknown.
        """
        found = find_nnunet_folder(folder)
        if found is None:
            raise InputError(
                f"{Path(folder).name}: no nnU-Net model folder (plans.json + dataset.json) there or in one subfolder."
            )
        self.folder = found
        if not 0 < tile_step_size <= 1:
            raise ConfigError(f"tile_step_size={tile_step_size}; use a fraction in (0, 1], e.g. 0.5.")
        self.folds = tuple(f if f == "all" else int(f) for f in folds)
        self.checkpoints = [self._checkpoint_path(f, checkpoint_name) for f in self.folds]
        self.dataset_json: dict[str, Any] = _read_json(found / "dataset.json")
        self._device = torch_device(device)
        self._sha256: str | None = None
        with _quiet():
            self._predictor = self._build_predictor(tile_step_size, use_mirroring, trust_checkpoint)
        manager = self._predictor.label_manager
        self._regions = bool(manager.has_regions)
        self.class_ids = tuple(int(i) for i in manager.all_labels)

    def label_names(self) -> dict[int, str]:
        """Label id → class name, from dataset.json "labels" (multi-label regions are left out)."""
        names: dict[int, str] = {}
        for name, value in self.dataset_json["labels"].items():
            if isinstance(value, int):
                names[value] = name
            elif isinstance(value, (list, tuple)) and len(value) == 1:
                names[int(value[0])] = name
        return dict(sorted(names.items()))

    def identity(self) -> dict[str, object]:
        """{"kind": "nnunetv2", "name": "<dataset folder>/<trainer__plans__config>", "sha256": of the checkpoints,
        "folds": [...]}."""
        if self._sha256 is None:
            self._sha256 = combined_sha256(self.checkpoints, self.folder)
        return {
            "kind": "nnunetv2",
            "name": f"{self.folder.parent.name}/{self.folder.name}",
            "sha256": self._sha256,
            "folds": list(self.folds),
        }

    def predict(self, volume: Volume) -> TeacherOutput:
        """nnU-Net's class probabilities on `volume`'s grid (kind="probs")."""
        # nnU-Net reads images the way SimpleITK does: the array is (z, y, x) in the file's own voxel
        # order and the spacing is reversed to match. Our Volume is the canonical-RAS array (x, y, z),
        # i.e. exactly what nnU-Net's NibabelIOWithReorient (and SimpleITKIO on a canonical NIfTI, as
        # TotalSegmentator writes) hands the network, so: transpose (x, y, z) -> (z, y, x), reverse the
        # spacing, and transpose the (C, z, y, x) probabilities back to (C, x, y, z).
        image = np.ascontiguousarray(np.asarray(volume.array, dtype=np.float32).transpose(2, 1, 0))[None]
        properties = {"spacing": [float(s) for s in volume.spacing_mm[::-1]]}
        with _quiet():
            segmentation, probabilities = self._predictor.predict_single_npy_array(image, properties, None, None, True)
        labels = np.ascontiguousarray(np.asarray(segmentation).transpose(2, 1, 0))
        if self._regions:
            # Region models give overlapping sigmoid scores, not a softmax; keep only the label map.
            return TeacherOutput(class_ids=self.class_ids, kind="labels", labels=labels.astype(np.int16))
        scores = np.ascontiguousarray(np.asarray(probabilities, dtype=np.float32).transpose(0, 3, 2, 1))
        dtype = np.uint8 if max(self.class_ids) < 256 else np.int16
        return TeacherOutput(class_ids=self.class_ids, kind="probs", scores=scores, labels=labels.astype(dtype))

    def _checkpoint_path(self, fold: int | str, name: str) -> Path:
        path = self.folder / f"fold_{fold}" / name
        if not path.is_file():
            have = sorted(p.parent.name for p in self.folder.glob(f"fold_*/{name}"))
            raise InputError(
                f"{self.folder.name} has no fold_{fold}/{name}; folds with it: {have or 'none'}. "
                "Pass folds= from those (or checkpoint_name='checkpoint_best.pth')."
            )
        return path

    def _build_predictor(self, tile_step_size: float, use_mirroring: bool, trust: bool) -> Any:
        require("nnunetv2", extra="nnunet")
        predict_mod = require("nnunetv2.inference.predict_from_raw_data", extra="nnunet")
        predictor = predict_mod.nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=use_mirroring,
            perform_everything_on_device=self._device.type == "cuda",
            device=self._device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        if trust:
            predictor.initialize_from_trained_model_folder(str(self.folder), self.folds, self.checkpoints[0].name)
            return predictor
        checkpoints = [_load_checkpoint(p) for p in self.checkpoints]
        first = checkpoints[0]
        plans = _read_json(self.folder / "plans.json")
        plans_mod = require("nnunetv2.utilities.plans_handling.plans_handler", extra="nnunet")
        labels_mod = require("nnunetv2.utilities.label_handling.label_handling", extra="nnunet")
        find_mod = require("nnunetv2.utilities.find_objects", extra="nnunet")
        plans_manager = plans_mod.PlansManager(plans)
        configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
        n_in = labels_mod.determine_num_input_channels(plans_manager, configuration, self.dataset_json)
        if n_in != 1:
            raise ConfigError(
                f"{self.folder.name} takes {n_in} input channels; edgemed teachers feed one scan (1 channel)."
            )
        n_out = plans_manager.get_label_manager(self.dataset_json).num_segmentation_heads
        trainer = find_mod.recursive_find_trainer_class_by_name(first["trainer_name"])
        if trainer is None:
            raise ConfigError(
                f"nnU-Net trainer {first['trainer_name']!r} of {self.folder.name} is not installed; install the "
                "package that defines it or point nnUNet_extTrainer at it."
            )
        # Same construction as nnunetv2's initialize_from_trained_model_folder (both build signatures).
        if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
            network = trainer.build_network_architecture(
                plans_manager, configuration, n_in, n_out, enable_deep_supervision=False
            )
        else:
            network = trainer.build_network_architecture(
                configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                configuration.network_arch_init_kwargs_req_import, n_in, n_out, enable_deep_supervision=False,
            )
        weights = [c["network_weights"] for c in checkpoints]
        network.load_state_dict(weights[0])
        predictor.manual_initialization(
            network, plans_manager, configuration, weights, self.dataset_json, first["trainer_name"],
            first.get("inference_allowed_mirroring_axes"),
        )
        return predictor


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(
            f"{path.parent.name}/{path.name} is not readable JSON ({err}); restore the model folder."
        ) from err
    if not isinstance(data, dict):
        raise InputError(f"{path.parent.name}/{path.name} should hold a JSON object; restore the model folder.")
    return data


def _load_checkpoint(path: Path) -> dict[str, Any]:
    torch = require("torch")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ArtifactError(
            f"{path.parent.name}/{path.name} holds pickled objects beyond weights, and edgemed will not unpickle "
            f"arbitrary code ({str(err).splitlines()[0][:160]}). If you trust where this model came from, pass "
            "NnUNetTeacher(..., trust_checkpoint=True) (nnU-Net's own loader, weights_only=False)."
        ) from err
    for key in ("network_weights", "trainer_name", "init_args"):
        if key not in checkpoint:
            raise ArtifactError(
                f"{path.parent.name}/{path.name} is not an nnU-Net v2 checkpoint (no {key!r}); use the checkpoint "
                "nnU-Net's training wrote (fold_N/checkpoint_final.pth)."
            )
    return checkpoint


def _numpy_scalar_globals() -> list[Any]:
    """Reconstructors for numpy scalars and dtypes: nnU-Net's training log (``logging``, ``_best_ema``)
    holds np.float64 values. These build numbers, never call arbitrary code."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    scalar = core.multiarray.scalar
    dtype_classes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_)]
    # A checkpoint names the reconstructor after the numpy that wrote it: allow both spellings.
    return [
        (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype, *dtype_classes
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """nnU-Net prints notices (unset nnUNet_raw, device notes) to stdout; send them to stderr so a
    `--json` stdout stays clean."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
