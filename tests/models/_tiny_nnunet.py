"""A tiny nnU-Net v2 model folder, built in code: dataset.json, plans.json and fold_0/checkpoint_final.pth.

The folder is shaped like TotalSegmentator's (``Dataset…/nnUNetTrainer__nnUNetPlans__3d_fullres``);
the network is a 2-stage PlainConvUNet with a (z, y, x) = (8, 12, 16) patch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

LABELS = {"background": 0, "liver": 1, "spleen": 2}
# nnU-Net order (z, y, x); a RAS volume with spacing (x, y, z) = (1.5, 2.0, 3.0) mm needs no resampling.
SPACING_ZYX = [3.0, 2.0, 1.5]
PATCH_ZYX = [8, 12, 16]
INTENSITY = {"max": 1500.0, "mean": 60.0, "median": 50.0, "min": -1024.0,
             "percentile_00_5": -900.0, "percentile_99_5": 900.0, "std": 250.0}
ARCH_KWARGS = {
    "n_stages": 2,
    "features_per_stage": [4, 8],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [2, 2, 2]],
    "n_conv_per_stage": [1, 1],
    "n_conv_per_stage_decoder": [1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


def dataset_json() -> dict[str, Any]:
    return {"channel_names": {"0": "CT"}, "labels": dict(LABELS), "numTraining": 1, "file_ending": ".nii.gz"}


def plans_json() -> dict[str, Any]:
    resample = "resample_data_or_seg_to_shape"
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": PATCH_ZYX,
        "median_image_size_in_voxels": PATCH_ZYX,
        "spacing": SPACING_ZYX,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": resample,
        "resampling_fn_seg": resample,
        "resampling_fn_probabilities": resample,
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": ARCH_KWARGS,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": SPACING_ZYX,
        "original_median_shape_after_transp": PATCH_ZYX,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": INTENSITY},
    }


def build_network() -> torch.nn.Module:
    """The PlainConvUNet the plans describe, with seeded weights (no deep supervision)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    kwargs = dict(ARCH_KWARGS)
    kwargs.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
    net = PlainConvUNet(input_channels=1, num_classes=len(LABELS), deep_supervision=False, **kwargs)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        for layer in net.decoder.seg_layers:
            layer.weight.mul_(20.0)  # confident logits, so argmax comparisons mean something
            layer.bias.zero_()
    return net.eval()


def write_model_folder(root: Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write the model folder under `root`; returns the dataset folder (the trainer folder's parent).

    The checkpoint holds what nnU-Net's trainer saves, numpy scalars in the training log included;
    `extra` adds keys (e.g. an arbitrary object to test the unpickling guard).
    """
    dataset_folder = root / "Dataset999_Tiny"
    folder = dataset_folder / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(), indent=2))
    (folder / "plans.json").write_text(json.dumps(plans_json(), indent=2))
    checkpoint = {
        "network_weights": build_network().state_dict(),
        "optimizer_state": {},
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)], "train_losses": [0.9]},
        "_best_ema": np.float64(0.5),
        "current_epoch": 1,
        "init_args": {"plans": plans_json(), "configuration": "3d_fullres", "fold": 0,
                      "dataset_json": dataset_json(), "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
        **(extra or {}),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return dataset_folder


def ct_normalise(hu: np.ndarray) -> np.ndarray:
    """nnU-Net's CTNormalization with the intensities above."""
    clipped = np.clip(hu.astype(np.float32), INTENSITY["percentile_00_5"], INTENSITY["percentile_99_5"])
    return (clipped - INTENSITY["mean"]) / INTENSITY["std"]
