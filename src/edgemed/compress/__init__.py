"""Compression stages: distillation, ensembles, structured pruning, INT8 quantization. Imports torch lazily."""

from edgemed.compress._config import AugmentConfig, DistillConfig, config_from_dict
from edgemed.compress._distill import distill
from edgemed.compress._ensemble import ensemble_students
from edgemed.compress._prune import PruneConfig, concat_sizes_from_tensors, prune
from edgemed.compress._quantize import NncfInt8Config, OrtInt8Config, QuantizeResult, quantize

__all__ = ["AugmentConfig", "DistillConfig", "NncfInt8Config", "OrtInt8Config", "PruneConfig", "QuantizeResult",
           "concat_sizes_from_tensors", "config_from_dict", "distill", "ensemble_students", "prune", "quantize"]
