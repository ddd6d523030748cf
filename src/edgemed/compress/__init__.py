"""Compression stages: distillation, ensembles, structured pruning, INT8 quantization. Imports torch lazily."""

from edgemed.compress._config import AugmentConfig, DistillConfig, config_from_dict
from edgemed.compress._dist import DistContext, distributed
from edgemed.compress._distill import distill
from edgemed.compress._ensemble import ensemble_students
from edgemed.compress._prune import (PruneConfig, PruneResult, attention_modules, concat_sizes_from_tensors,
                                     no_inplace_ops, prune, prune_module_)
from edgemed.compress._qc_calibrate import calibrate_qc
from edgemed.compress._quantize import NncfInt8Config, NncfQatConfig, OrtInt8Config, QuantizeResult, quantize
from edgemed.compress._store import TeacherStore, TeacherStoreConfig, precompute_teacher

__all__ = ["AugmentConfig", "DistContext", "DistillConfig", "NncfInt8Config", "NncfQatConfig", "OrtInt8Config", "PruneConfig", "PruneResult",
           "QuantizeResult", "TeacherStore", "TeacherStoreConfig", "attention_modules", "calibrate_qc", "concat_sizes_from_tensors",
           "config_from_dict", "distill", "distributed", "ensemble_students", "no_inplace_ops", "precompute_teacher",
           "prune", "prune_module_", "quantize"]
