"""Recipe parsing: TOML keys are the CLI's flag names; unknown keys get a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_recipe_toml

from edgemed.errors import ConfigError, InputError
from edgemed.pipeline import RecipeConfig, SearchConfig, load_recipe, recipe_from_dict


def test_recipe_parses_sections_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text("""
organs = ["liver", "spleen"]
scans = ["data/ct.nii.gz"]
teacher_predictions = ["data/seg.nii.gz"]
latency_budget_ms = 250
min_dice = 0.85
target = "jetson-orin-nano-8gb"
[distill]
epochs = 3
ema_decay = "none"
[search]
widths = [[8, 16], [16, 32]]
prune_ratios = [0.0, 0.5]
precisions = ["fp32"]
backends = ["ort", "openvino"]
""")
    recipe = load_recipe(tmp_path / "r.toml")
    assert recipe.organs == ("liver", "spleen") and recipe.latency_budget_ms == 250 and recipe.min_dice == 0.85
    assert recipe.scans == (str(tmp_path / "data/ct.nii.gz"),)
    assert recipe.search == SearchConfig(widths=((8, 16), (16, 32)), prune_ratios=(0.0, 0.5), precisions=("fp32",),
                                         backends=("ort", "openvino"))
    cfg = recipe.distill_config(("spleen",), (16, 32))
    assert cfg.organs == ("spleen",) and cfg.epochs == 3 and cfg.ema_decay is None
    assert cfg.student_kwargs == {"widths": [16, 32]}
    assert recipe.with_overrides(min_dice=0.5, target=None).min_dice == 0.5


def test_tiny_recipe_is_valid(phantom_data: Path, tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(tiny_recipe_toml(phantom_data))
    assert isinstance(load_recipe(tmp_path / "r.toml"), RecipeConfig)


@pytest.mark.parametrize(("raw", "message"), [
    ({"min_dise": 0.8}, "unknown recipe key 'min_dise'. Did you mean 'min_dice'?"),
    ({"search": {"prune_ratio": [0.5]}}, "unknown recipe key [search] 'prune_ratio'. Did you mean 'prune_ratios'?"),
    ({"distill": {"epoch": 3}}, "Did you mean 'epochs'?"),
    ({"search": {"precisions": ["fp16"]}}, "use some of fp32, int8"),
    ({"search": {"latency_tie": 10}}, "search.latency_tie=10 is a share of the fastest latency in [0, 1]"),
    ({"search": {"latency_tie": "10 %"}}, "search.latency_tie='10 %' is a share"),
    ({"teacher_predictions": []}, "1 scans but 0 teacher_predictions"),
    ({"min_dice": 1.5}, "min_dice=1.5 must be in"),
    ({"joint": "yes"}, "joint='yes' must be true or false"),
    ({"organs": ["liver", "liver"]}, "names an organ twice"),
    ({"distill": {"augment": {"context_flat": 2}}}, "augment.context_flat=2 must be in [0, 1]"),
])
def test_recipe_errors_say_what_to_fix(raw: dict, message: str) -> None:
    base = {"organs": ["liver"], "scans": ["ct.nii.gz"], "teacher_predictions": ["seg.nii.gz"]}
    with pytest.raises(ConfigError) as err:
        recipe_from_dict({**base, **raw})
    assert message in str(err.value)


def test_missing_or_broken_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("organs = [liver")
    with pytest.raises(InputError, match="not valid TOML"):
        load_recipe(tmp_path / "bad.toml")
