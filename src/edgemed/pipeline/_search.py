"""Budget search over candidates: the Pareto front of latency vs Dice and the model to ship (stdlib only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgemed.errors import EdgemedError

__all__ = ["BudgetError", "Candidate", "choose", "pareto_front"]


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


def choose(candidates: Sequence[Candidate], *, latency_budget_ms: float | None, min_dice: float) -> Candidate:
    """The fastest candidate with Dice >= `min_dice` and latency <= `latency_budget_ms`.

    Raises:
        BudgetError: None qualifies; names the best achievable trade-offs (the most accurate
            model within the budget, and the fastest one above the Dice floor).
    """
    if not candidates:
        raise BudgetError("no candidate was built; check the recipe's [search] grid.")
    within = [c for c in candidates if latency_budget_ms is None or c.latency_ms <= latency_budget_ms]
    good = [c for c in within if c.dice >= min_dice]
    if good:
        return min(good, key=lambda c: (c.latency_ms, -c.dice))
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
