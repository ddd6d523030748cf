"""Compression stages: distillation, ensembles, structured pruning, INT8 quantization. Imports torch lazily."""

from edgemed.compress._config import AugmentConfig, DistillConfig, config_from_dict
from edgemed.compress._distill import distill
from edgemed.compress._ensemble import ensemble_students
from edgemed.compress._prune import (PruneConfig, PruneResult, attention_modules, concat_sizes_from_tensors,
                                     no_inplace_ops, prune, prune_module_)
from edgemed.compress._quantize import NncfInt8Config, NncfQatConfig, OrtInt8Config, QuantizeResult, quantize

__all__ = ["AugmentConfig", "DistillConfig", "NncfInt8Config", "NncfQatConfig", "OrtInt8Config", "PruneConfig", "PruneResult",
           "QuantizeResult", "attention_modules", "concat_sizes_from_tensors", "config_from_dict", "distill",
           "ensemble_students", "no_inplace_ops", "prune", "prune_module_", "quantize"]
