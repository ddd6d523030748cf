"""edgemed.pipeline: one recipe from teacher to the best organ models for a target, cached and reported.

Stages distill → prune (+KD fine-tune) → export → quantize → profile run per organ and grid
point, each cached under the sha256 of its config and inputs; the budget search picks the fastest
model meeting the Dice floor within the latency budget and `report.html` shows why.
Imports no torch until a stage runs.

Example:
    >>> from edgemed.pipeline import load_recipe, run_recipe
    >>> result = run_recipe(load_recipe("benchmarks/suite/recipes/totalseg_4organs.toml"), out="runs/4organs")
    >>> [(o.organ, o.chosen.name) for o in result.organs]
"""

from edgemed.pipeline._cache import STAGE_RECORD, StageCache, StageResult, artifact_digest, file_digest, stage_key
from edgemed.pipeline._recipe import (PRECISIONS, SEARCH_BACKENDS, ProfileStageConfig, PruneStageConfig,
                                      QuantizeStageConfig, RecipeConfig, SearchConfig, load_recipe, recipe_from_dict)
from edgemed.pipeline._report import SECTIONS, write_report
from edgemed.pipeline._run import OrganResult, RunResult, run_recipe
from edgemed.pipeline._search import LATENCY_TIE, BudgetError, Candidate, choose, knob, pareto_front
from edgemed.pipeline._stages import runoff_stage

__all__ = ["LATENCY_TIE", "PRECISIONS", "SEARCH_BACKENDS", "SECTIONS", "STAGE_RECORD", "BudgetError", "Candidate", "OrganResult",
           "ProfileStageConfig", "PruneStageConfig", "QuantizeStageConfig", "RecipeConfig", "RunResult", "SearchConfig",
           "StageCache", "StageResult", "artifact_digest", "choose", "file_digest", "knob", "load_recipe", "pareto_front",
           "recipe_from_dict", "run_recipe", "runoff_stage", "stage_key", "write_report"]
