"""Budget search on synthetic candidates: Pareto front, fastest model above the Dice floor, clear errors."""

from __future__ import annotations

import pytest

from edgemed.pipeline import LATENCY_TIE, BudgetError, Candidate, choose, knob, pareto_front


def _c(name: str, latency_ms: float, dice: float, ratio: float = 0.0, widths: tuple[int, ...] = (8,)) -> Candidate:
    return Candidate(organ="liver", name=name, widths=widths, prune_ratio=ratio, precision="fp32", backend="ort",
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


def test_latencies_within_the_default_margin_are_ties_decided_by_dice_then_grid_order() -> None:
    """A run-off measures latency with noise; within 25 % (LATENCY_TIE) the choice follows Dice, not that noise."""
    assert LATENCY_TIE == 0.25
    a, b = _c("a", 100, 0.90), _c("b", 104, 0.92)
    assert choose([a, b], latency_budget_ms=None, min_dice=0.85).name == "b"
    assert choose([_c("a", 104, 0.90), _c("b", 100, 0.92)], latency_budget_ms=None, min_dice=0.85).name == "b"
    assert choose([_c("a", 100, 0.92), _c("b", 104, 0.92)], latency_budget_ms=None, min_dice=0.85).name == "a"
    assert choose([_c("a", 100, 0.90), _c("b", 124, 0.99)], latency_budget_ms=None, min_dice=0.85).name == "b"
    assert choose([_c("a", 100, 0.90), _c("b", 126, 0.99)], latency_budget_ms=None, min_dice=0.85).name == "a"


def test_the_tie_margin_trades_speed_for_a_pick_that_follows_dice() -> None:
    """`[search] latency_tie`: 0 ships strictly the fastest; a wider margin lets Dice decide."""
    # The default recipe's liver, run-off medians of two same-seed runs (recipes_check_default.json):
    # 30 %-pruned INT8 ORT (0.9494) vs FP32 ORT (0.9497) of the same student.
    for int8_ms, fp32_ms in ((473.2, 565.1), (616.3, 609.8)):
        pair = [_c("p0.3 fp32 ort", fp32_ms, 0.9497), _c("p0.3 int8 ort", int8_ms, 0.9494)]
        assert choose(pair, latency_budget_ms=None, min_dice=0.85).name == "p0.3 fp32 ort"  # the default 25 %
    picks = {choose([_c("fp32", f, 0.9497), _c("int8", i, 0.9494)], latency_budget_ms=None, min_dice=0.85, tie=0.10).name
             for i, f in ((473.2, 565.1), (616.3, 609.8))}
    assert picks == {"fp32", "int8"}  # at 10 % (the default until runoff_repeat.json) the two runs swap
    assert choose([_c("a", 100, 0.90), _c("b", 101, 0.99)], latency_budget_ms=None, min_dice=0.85, tie=0.0).name == "a"


def _history(start: float, end: float, epochs: int = 20) -> list[dict[str, float]]:
    return [{"epoch": e + 1, "dice": start + (end - start) * e / (epochs - 1)} for e in range(epochs)]


def test_knob_names_the_setting_the_run_measured_would_lift_it() -> None:
    unpruned, pruned = _c("w8 p0", 50, 0.82), _c("w8 p0.5", 30, 0.70, ratio=0.5)
    # Capacity: pruning half the channels cost 12 points, more than training's late gain.
    k = knob([unpruned, pruned], min_dice=0.85, latency_budget_ms=None, history=_history(0.70, 0.82))
    assert k["knob"] == "width" and k["evidence"]["width"]["dice_cost_of_pruning"] == pytest.approx(0.12)
    # Still learning: the second half of training gained more than pruning cost.
    k = knob([unpruned, _c("w8 p0.5", 30, 0.81, ratio=0.5)], min_dice=0.85, latency_budget_ms=None,
             history=_history(0.30, 0.82))
    assert k["knob"] == "epochs" and "epoch 10 to 20" in k["why"]
    # Neither: plateaued, and capacity is not the limit.
    k = knob([unpruned, _c("w8 p0.5", 30, 0.819, ratio=0.5)], min_dice=0.85, latency_budget_ms=None,
             history=_history(0.819, 0.82))
    assert k["knob"] == "data"
    # A model meets the Dice floor but not the budget: the budget is the knob.
    k = knob([_c("big", 80, 0.9), pruned], min_dice=0.85, latency_budget_ms=50)
    assert k["knob"] == "latency budget" and "80.0 ms" in k["why"]
    # Two widths in the grid: the wider one's gain is the capacity evidence.
    k = knob([_c("w8", 20, 0.80), _c("w16", 40, 0.84, widths=(16,))], min_dice=0.85, latency_budget_ms=None,
             widths_tried=2, history=_history(0.83, 0.84))
    assert k["knob"] == "width" and k["evidence"]["width"]["widest"] == [16]
