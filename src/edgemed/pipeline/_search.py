"""Budget search over candidates: the Pareto front of latency vs Dice and the model to ship (stdlib only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgemed.errors import EdgemedError

__all__ = ["LATENCY_TIE", "BudgetError", "Candidate", "choose", "knob", "pareto_front"]

#: Latencies within this share of the fastest qualifying one are ties, decided by Dice then grid order
#: (`[search] latency_tie` in a recipe). Measured (benchmarks/suite/runoff_repeat.py): the same builds'
#: run-off repeated in 3 fresh processes on one 2-core machine moved the latency ratio of two builds by up
#: to 28.5 % (median organ 19 %); at 0.10 the liver's pick changed between processes in both runs timed,
#: at 0.25 all 8 organs x 4 run-offs picked the same model, at a cost of at most 23.6 % over the fastest.
#: No margin is safe for every pair (0.40 split the spleen): a build whose ratio to the fastest sits
#: near the margin can still swap; the report says which latencies decided.
LATENCY_TIE = 0.25


class BudgetError(EdgemedError):
    """No candidate meets both the latency budget and the minimum Dice."""


@dataclass(frozen=True)
class Candidate:
    """One compressed model of an organ, measured.

    Attributes:
        organ: The organ it segments.
        name: Short grid label, e.g. "w16 p0.5 int8 openvino".
        widths: Student channel widths.
        prune_ratio: Share of channels pruned (0: unpruned).
        precision: "fp32" or "int8" (as built; `quantize` may have kept FP32).
        backend: "ort" or "openvino".
        latency_ms: Whole-volume inference time, median (measured here, or predicted on the target).
        latency_label: "measured" or "predicted".
        dice: Bundle's Dice vs the teacher on the held-out slices (what the search judges).
        dice_scan: Bundle's Dice vs the teacher on the whole scan (includes training slices).
        dice_checkpoint: The student checkpoint's own validation Dice (for a pruned student,
            vs its unpruned parent).
        size_bytes: Model file size.
        bundle: The bundle directory.
        lineage: (stage, digest) from the teacher to this bundle.
        note: Why a grid point differs from what was asked (e.g. INT8 kept out by `quantize`).
    """

    organ: str
    name: str
    widths: tuple[int, ...]
    prune_ratio: float
    precision: str
    backend: str
    latency_ms: float
    latency_label: str
    dice: float
    dice_scan: float
    dice_checkpoint: float | None
    size_bytes: int
    bundle: str
    lineage: tuple[tuple[str, str], ...] = ()
    samples_ms: tuple[float, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def pareto_front(candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates no other one beats on both latency (lower) and Dice (higher), fastest first."""
    front: list[Candidate] = []
    best_dice = float("-inf")
    for c in sorted(candidates, key=lambda c: (c.latency_ms, -c.dice)):
        if c.dice > best_dice:
            front.append(c)
            best_dice = c.dice
    return front


def choose(candidates: Sequence[Candidate], *, latency_budget_ms: float | None, min_dice: float,
           tie: float = LATENCY_TIE) -> Candidate:
    """The fastest candidate with Dice >= `min_dice` and latency <= `latency_budget_ms`.

    Candidates within `tie` (a share, default `LATENCY_TIE`) of the fastest qualifying one count as
    equally fast: of those, the most accurate wins (then the earliest in grid order). A wider margin
    makes the pick depend less on timing and more on Dice, at the cost of shipping a slower model.

    Raises:
        BudgetError: None qualifies; names the best achievable trade-offs (the most accurate
            model within the budget, and the fastest one above the Dice floor).
    """
    if not candidates:
        raise BudgetError("no candidate was built; check the recipe's [search] grid.")
    within = [c for c in candidates if latency_budget_ms is None or c.latency_ms <= latency_budget_ms]
    good = [c for c in within if c.dice >= min_dice]
    if good:
        fastest = min(c.latency_ms for c in good)
        ties = [c for c in good if c.latency_ms <= fastest * (1.0 + tie)]
        return max(ties, key=lambda c: (round(c.dice, 4), -candidates.index(c)))
    organ = candidates[0].organ
    label = candidates[0].latency_label
    budget = "no latency budget" if latency_budget_ms is None else f"{latency_budget_ms:g} ms ({label})"
    parts = [f"{organ}: no model reaches Dice >= {min_dice:g} within {budget}."]
    if within:
        best = max(within, key=lambda c: c.dice)
        parts.append(f"Best Dice within the budget: {best.dice:.4f} ({best.name}, {best.latency_ms:.1f} ms).")
    else:
        fastest = min(candidates, key=lambda c: c.latency_ms)
        parts.append(f"Fastest model: {fastest.latency_ms:.1f} ms ({fastest.name}, Dice {fastest.dice:.4f}).")
    above = [c for c in candidates if c.dice >= min_dice]
    if above:
        quick = min(above, key=lambda c: c.latency_ms)
        parts.append(f"Fastest with Dice >= {min_dice:g}: {quick.latency_ms:.1f} ms ({quick.name}).")
    else:
        top = max(candidates, key=lambda c: c.dice)
        parts.append(f"Best Dice at all: {top.dice:.4f} ({top.name}).")
    parts.append("Relax --latency-budget-ms or --min-dice, or widen [search] (wider students, more epochs); "
                 "report.html shows every candidate.")
    return _raise(" ".join(parts))


def _raise(message: str) -> Candidate:
    raise BudgetError(message)


def knob(candidates: Sequence[Candidate], *, min_dice: float, latency_budget_ms: float | None,
         history: Sequence[dict[str, Any]] = (), widths_tried: int = 1) -> dict[str, Any]:
    """Which setting most likely lifts an organ that no candidate gets to `min_dice` within the budget.

    Measured from the run, not guessed: a candidate that meets `min_dice` but not the budget points
    at the budget; otherwise the held-out Dice the unpruned student gained over the second half of
    its distillation (still learning: more epochs) is weighed against what capacity was worth (the
    Dice a wider grid point added, or what pruning cost). Neither above half a point: the student
    has what these scans can teach it (more scans, or relax the bar).

    Args:
        candidates: The organ's candidates (all grid points).
        history: The unpruned student's per-epoch held-out Dice of this organ, [{"epoch", "dice"}].
        widths_tried: How many widths the grid had.

    Returns:
        {"knob": "latency budget" | "epochs" | "width" | "data", "why": one sentence, "evidence": {..}}.
    """
    above = [c for c in candidates if c.dice >= min_dice]
    if above and latency_budget_ms is not None:
        quick = min(above, key=lambda c: c.latency_ms)
        return {"knob": "latency budget", "evidence": {"fastest_above_ms": round(quick.latency_ms, 1)},
                "why": f"{quick.name} reaches Dice {quick.dice:.4f} in {quick.latency_ms:.1f} ms: raise "
                       f"--latency-budget-ms to {quick.latency_ms * 1.05:.0f}, or prune / quantize further."}
    evidence: dict[str, Any] = {}
    epochs_gain = 0.0
    if len(history) >= 4:
        half = history[len(history) // 2 - 1]
        epochs_gain = float(history[-1]["dice"]) - float(half["dice"])
        evidence["epochs"] = {"from_epoch": int(half["epoch"]), "to_epoch": int(history[-1]["epoch"]),
                              "dice_gain": round(epochs_gain, 4)}
    width_gain = 0.0
    base = [c for c in candidates if c.prune_ratio == 0 and c.precision == "fp32"]
    if widths_tried > 1 and base:
        by_width = sorted(base, key=lambda c: sum(c.widths))
        width_gain = by_width[-1].dice - by_width[-2].dice if len(by_width) > 1 else 0.0
        evidence["width"] = {"widest": list(by_width[-1].widths), "dice_gain_over_next": round(width_gain, 4)}
    else:
        for c in sorted(candidates, key=lambda c: -c.prune_ratio):
            twin = [b for b in base if b.backend == c.backend and b.widths == c.widths]
            if c.prune_ratio > 0 and c.precision == "fp32" and twin:
                width_gain = twin[0].dice - c.dice
                evidence["width"] = {"pruned": c.prune_ratio, "dice_cost_of_pruning": round(width_gain, 4)}
                break
    best = max(candidates, key=lambda c: c.dice) if candidates else None
    gap = (min_dice - best.dice) if best else None
    evidence["gap"] = None if gap is None else round(gap, 4)
    if max(epochs_gain, width_gain) < 0.005:
        return {"knob": "data", "evidence": evidence,
                "why": "the student stopped improving (held-out Dice rose "
                       f"{epochs_gain * 100:+.1f} points over the second half of training) and capacity was not the "
                       f"limit ({width_gain * 100:+.1f} points); more training scans, or a lower --min-dice."}
    if epochs_gain >= width_gain:
        e = evidence["epochs"]
        return {"knob": "epochs", "evidence": evidence,
                "why": f"held-out Dice still rose {epochs_gain * 100:.1f} points from epoch {e['from_epoch']} to "
                       f"{e['to_epoch']}: more [distill] epochs (e.g. {2 * e['to_epoch']})."}
    what = ("the widest grid point added" if "widest" in evidence.get("width", {}) else
            f"pruning {evidence['width']['pruned']:.0%} of the channels cost")
    return {"knob": "width", "evidence": evidence,
            "why": f"{what} {width_gain * 100:.1f} points: a wider student ([search] widths)."}
