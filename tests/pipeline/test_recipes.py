"""The recipes the repo ships: each loads and names data that exists; the default one is `edgemed distill`'s
defaults per organ; a short form of it runs end to end on the real CT (the full runs: recipes_check.py)."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from edgemed.pipeline import load_recipe, run_recipe

pytestmark = pytest.mark.filterwarnings("ignore::edgemed.errors.EdgemedWarning")

RECIPES = sorted((Path(__file__).resolve().parents[2] / "benchmarks" / "suite" / "recipes").glob("*.toml"))


def test_the_default_and_the_quick_recipe_exist() -> None:
    assert {"totalseg_4organs", "totalseg_4organs_quick"} <= {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_loads_and_names_existing_data(path: Path) -> None:
    recipe = load_recipe(path)
    for group in recipe.groups:
        for widths in recipe.search.widths:
            assert recipe.distill_config(group, widths).organs == group
    missing = [p for p in (*recipe.scans, *recipe.teacher_predictions) if not Path(p).exists()]
    if missing:
        pytest.skip(f"the shared data is not beside this checkout ({missing[0]})")


def test_default_recipe_students_are_what_edgemed_distill_makes_by_default() -> None:
    """Each organ's unpruned student: `edgemed distill --organ X` with every default (issue 22)."""
    from edgemed.compress import DistillConfig
    from edgemed.models._zoo import _unet2d

    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index("totalseg_4organs")])
    default_widths = list(inspect.signature(_unet2d).parameters["widths"].default)
    assert [list(w) for w in recipe.search.widths] == [default_widths] and 0.0 in recipe.search.prune_ratios
    for organ in recipe.organs:
        made = recipe.distill_config((organ,), recipe.search.widths[0]).to_json()
        manual = DistillConfig(organs=[organ]).to_json()
        assert made.pop("student_kwargs") == {"widths": default_widths} and manual.pop("student_kwargs") == {}
        assert json.loads(json.dumps(made)) == json.loads(json.dumps(manual))


def test_short_form_of_the_default_recipe_runs_on_the_real_ct(real_data: Path, tmp_path: Path) -> None:
    """The default recipe end to end on the real CT, shortened to fit CI: liver only, 1 epoch, ONNX Runtime."""
    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index("totalseg_4organs")])
    short = dataclasses.replace(
        recipe, organs=("liver",), min_dice=0.0, latency_budget_ms=None,
        distill={**recipe.distill, "epochs": 1, "batch_size": 4},
        search=dataclasses.replace(recipe.search, prune_ratios=(0.0,), precisions=("fp32",), backends=("ort",)),
        profile=dataclasses.replace(recipe.profile, repeats=1, warmup=0))
    result = run_recipe(short, out=tmp_path / "run", progress=False)
    organ = result.organs[0]
    assert organ.chosen is not None and (Path(organ.chosen.bundle) / "manifest.json").is_file()
    assert 0.0 <= organ.chosen.dice <= 1.0 and organ.chosen.latency_ms > 0
    assert (tmp_path / "run" / "report.html").is_file()
