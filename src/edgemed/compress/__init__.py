"""Compression stages: distillation (and, later, pruning and quantization). Imports torch lazily."""

from edgemed.compress._config import AugmentConfig, DistillConfig, config_from_dict
from edgemed.compress._distill import distill
from edgemed.compress._ensemble import ensemble_students

__all__ = ["AugmentConfig", "DistillConfig", "config_from_dict", "distill", "ensemble_students"]
