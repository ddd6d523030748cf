"""Budget search on synthetic candidates: Pareto front, fastest model above the Dice floor, clear errors."""

from __future__ import annotations

import pytest

from edgemed.pipeline import BudgetError, Candidate, choose, pareto_front


def _c(name: str, latency_ms: float, dice: float) -> Candidate:
    return Candidate(organ="liver", name=name, widths=(8,), prune_ratio=0.0, precision="fp32", backend="ort",
                     latency_ms=latency_ms, latency_label="measured", dice=dice, dice_scan=dice, dice_checkpoint=dice,
                     size_bytes=1, bundle="b")


CANDIDATES = [_c("big", 100, 0.95), _c("mid", 50, 0.93), _c("dominated", 60, 0.90), _c("small", 20, 0.85),
              _c("tiny", 10, 0.70)]


def test_pareto_front_keeps_only_undominated_models_fastest_first() -> None:
    assert [c.name for c in pareto_front(CANDIDATES)] == ["tiny", "small", "mid", "big"]


@pytest.mark.parametrize(("budget", "min_dice", "expected"), [
    (None, 0.9, "mid"), (None, 0.8, "small"), (None, 0.0, "tiny"), (60, 0.94, None), (200, 0.94, "big"),
    (55, 0.9, "mid"),
])
def test_choose_picks_the_fastest_model_meeting_both(budget: float | None, min_dice: float,
                                                     expected: str | None) -> None:
    if expected is None:
        with pytest.raises(BudgetError):
            choose(CANDIDATES, latency_budget_ms=budget, min_dice=min_dice)
    else:
        assert choose(CANDIDATES, latency_budget_ms=budget, min_dice=min_dice).name == expected


def test_no_qualifying_model_names_the_best_achievable() -> None:
    with pytest.raises(BudgetError) as err:
        choose(CANDIDATES, latency_budget_ms=30, min_dice=0.9)
    text = str(err.value)
    assert "no model reaches Dice >= 0.9 within 30 ms (measured)" in text
    assert "Best Dice within the budget: 0.8500 (small, 20.0 ms)" in text
    assert "Fastest with Dice >= 0.9: 50.0 ms (mid)" in text
    with pytest.raises(BudgetError, match=r"Fastest model: 10.0 ms \(tiny.*Best Dice at all: 0.9500 \(big\)"):
        choose(CANDIDATES, latency_budget_ms=5, min_dice=0.99)
    with pytest.raises(BudgetError, match="no candidate was built"):
        choose([], latency_budget_ms=None, min_dice=0.0)


def test_int8_is_judged_on_held_out_slices_organ_by_organ() -> None:
    from edgemed.pipeline._run import int8_over_budget

    fp32 = {"liver": 0.916, "spleen": 0.961}
    assert int8_over_budget(fp32, {"liver": 0.914, "spleen": 0.962}, 0.01) is None  # a gain is no loss
    assert int8_over_budget(fp32, {"liver": 0.906, "spleen": 0.961}, 0.01) is None  # exactly the budget
    reason = int8_over_budget(fp32, {"liver": 0.8905, "spleen": 0.9627}, 0.01)
    assert reason is not None and "liver" in reason and "0.0255" in reason and "budget 0.01" in reason
