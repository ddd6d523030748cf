"""`compare`: judge a measurement against a baseline — latency by bootstrap bounds, memory, Dice per organ."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgemed.measure._gate_config import GateConfig
from edgemed.measure._stats import RatioEstimate, bootstrap_ratio
from edgemed.measure._gate_types import BundleIdentity, Measurement
from edgemed.errors import CompatibilityError

__all__ = ["GateResult", "MetricCheck", "check_compatible", "compare"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class MetricCheck:
    """One row of the gate's table.

    Attributes:
        name: Machine name: "latency_p50", "latency_p99", "peak_memory", "dice_<organ>".
        label: What the table shows, e.g. "latency p50".
        baseline: The baseline's value, formatted.
        candidate: This run's value, formatted.
        change: The change judged, formatted (latency: normalised by the reference workload).
        interval: The bootstrap interval of the change, formatted, or "".
        limit: The largest change that passes, formatted.
        status: "pass"; "fail" (fails the gate); "warn" (over the limit, but within this run's
            noise: not declared); "info" (reported, not gated); "busy" (not judged: other programs
            competed for the CPUs while timing, so the gate is inconclusive).
        detail: A sentence saying what was found (the failure message for "fail").
        values: The numbers behind the row, for JSON.
    """

    name: str
    label: str
    baseline: str
    candidate: str
    change: str
    interval: str
    limit: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "label": self.label, "status": self.status, "baseline": self.baseline,
                "candidate": self.candidate, "change": self.change, "interval": self.interval, "limit": self.limit,
                "detail": self.detail, "values": self.values}


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate run.

    Attributes:
        bundle: The candidate bundle's name.
        baseline_path: The baseline file compared with.
        checks: One row per metric (empty when the run only wrote a baseline).
        candidate: This run's measurement.
        baseline: The baseline's measurement (None when the run only wrote a baseline).
        notes: Things to know when reading the table (machine speed, another host...).
        baseline_written: True when this run wrote the baseline (`--update-baseline`).
    """

    bundle: str
    baseline_path: str
    checks: tuple[MetricCheck, ...]
    candidate: Measurement
    baseline: Measurement | None = None
    notes: tuple[str, ...] = ()
    baseline_written: bool = False

    @property
    def passed(self) -> bool:
        """No metric regressed, and every gated metric could be judged."""
        return not self.failures and not self.inconclusive

    @property
    def inconclusive(self) -> bool:
        """Nothing regressed, but latency could not be judged: the machine was too busy."""
        return not self.failures and any(c.status == "busy" for c in self.checks)

    @property
    def verdict(self) -> str:
        """"passed", "failed" or "inconclusive" (the CLI exits 0, 1 or 3)."""
        return "failed" if self.failures else "inconclusive" if self.inconclusive else "passed"

    @property
    def failures(self) -> tuple[MetricCheck, ...]:
        """The rows that fail the gate."""
        return tuple(c for c in self.checks if c.status == "fail")

    def table(self) -> str:
        """A plain-text table of every metric, then the verdict naming what regressed and by how much."""
        m = self.candidate
        head = (f"edgemed check: {self.bundle} vs {self.baseline_path} (backend {m.backend}, {m.threads} thread"
                f"{'s' if m.threads != 1 else ''}, {len(m.candidate_ms)} interleaved repeats, {m.clock} clock)")
        cols = ("metric", "baseline", "candidate", "change", "interval", "limit", "verdict")
        rows = [cols] + [(c.label, c.baseline, c.candidate, c.change, c.interval, c.limit, _VERDICT[c.status])
                         for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [head] + ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        if self.checks:
            lines.append(f"  (latency: ms are wall-clock, each on its own run's machine; change and interval are "
                         f"{m.clock}-clock times normalised by the reference workload)")
        lines += [f"  note: {n}" for n in self.notes]
        if self.failures:
            lines.append(f"FAILED: {len(self.failures)} regression{'s' if len(self.failures) > 1 else ''}")
            lines += [f"  - {c.label}: {c.detail}" for c in self.failures]
        elif self.inconclusive:
            busy = next(c for c in self.checks if c.status == "busy")
            lines.append(f"INCONCLUSIVE: latency not judged. {busy.detail}")
        else:
            lines.append("PASSED: no regression beyond the limits.")
        lines += [f"  warning - {c.label}: {c.detail}" for c in self.checks if c.status == "warn"]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: verdict, rows, notes, and both measurements' summaries."""
        return {"passed": self.passed, "verdict": self.verdict, "bundle": self.bundle, "baseline_path": self.baseline_path,
                "baseline_written": self.baseline_written, "failures": [c.name for c in self.failures],
                "checks": [c.to_json() for c in self.checks], "notes": list(self.notes),
                "candidate": self.candidate.summary_json(),
                "baseline": None if self.baseline is None else self.baseline.summary_json()}


_VERDICT = {"pass": "ok", "warn": "noisy", "fail": "REGRESSED", "info": "(report)", "busy": "busy: not judged"}


def check_compatible(candidate: BundleIdentity, baseline: Measurement, *, backend: str = "auto",
                     threads: int | None = None, baseline_path: str = "the baseline") -> None:
    """Refuse a baseline that cannot judge this bundle (another task, backend or thread count).

    Raises:
        CompatibilityError: Names the difference and the command that creates a fitting baseline.
    """
    redo = "If the change is intended, re-create the baseline with --update-baseline."
    if candidate.task() != baseline.bundle.task():
        raise CompatibilityError(
            f"{baseline_path} was measured on {baseline.bundle.name} ({_task(baseline.bundle)}), another model "
            f"than {candidate.name} ({_task(candidate)}). Point --baseline at this model's baseline. {redo}")
    if backend != "auto" and backend != baseline.backend:
        raise CompatibilityError(f"{baseline_path} was measured on backend {baseline.backend!r}; this run asks for "
                                 f"{backend!r}. Drop --backend (the baseline's is used) or keep one baseline per "
                                 f"backend. {redo}")
    if threads is not None and threads != baseline.threads:
        raise CompatibilityError(f"{baseline_path} was measured with {baseline.threads} thread(s); this run asks "
                                 f"for {threads}. Drop --threads (the baseline's is used). {redo}")


def compare(candidate: Measurement, baseline: Measurement, config: GateConfig = GateConfig(), *,
            baseline_path: str = "baseline") -> GateResult:
    """Compare a measurement with a baseline of the same bundle task, scan and backend.

    Latency: the per-pair normalised samples of both runs, p50 (and p99) ratio bounded by a
    seeded bootstrap; a regression only when the lower bound exceeds 1 + tolerance. Memory: the
    peak growth, with a relative tolerance and an absolute slack. Dice per organ: against the
    reference label map when the candidate has one (the baseline's Dice is recomputed from its
    stored mask), else the candidate's mask against the baseline's (agreement).

    Raises:
        CompatibilityError: Another scan, backend, thread count or task than the baseline's.
    """
    check_compatible(candidate.bundle, baseline, backend=candidate.backend, threads=candidate.threads,
                     baseline_path=baseline_path)
    if candidate.scan.sha256 != baseline.scan.sha256:
        raise CompatibilityError(
            f"{baseline_path} was measured on scan {baseline.scan.source} ({baseline.scan.sha256[:12]}…), this run "
            f"on {candidate.scan.source} ({candidate.scan.sha256[:12]}…). Pass the baseline's scan with --scan, or "
            "re-create the baseline with --update-baseline.")
    if candidate.workload != baseline.workload:
        raise CompatibilityError(f"this run's reference workload {candidate.workload} differs from the baseline's "
                                 f"{baseline.workload}; measure with the baseline's (edgemed check does).")
    kw = dict(confidence=config.confidence, resamples=config.resamples, seed=config.seed)
    q_c, q_b = candidate.normalised_on(candidate.clock), baseline.normalised_on(candidate.clock)
    checks = [_latency("latency_p50", "latency p50", bootstrap_ratio(q_c, q_b, percentile=50, **kw),
                       baseline.latency.p50_ms, candidate.latency.p50_ms, config.latency_tolerance),
              _latency("latency_p99", "latency p99", bootstrap_ratio(q_c, q_b, percentile=99, **kw),
                       baseline.latency.p99_ms, candidate.latency.p99_ms, config.p99_tolerance),
              _memory(candidate, baseline, config)]
    busy = _busy(candidate, baseline, config)
    if busy is not None:  # latency measured beside other work: say so instead of passing or failing
        checks = [replace(c, status="busy", detail=busy) if c.name.startswith("latency") and c.status != "info"
                  else c for c in checks]
    checks += _dice_checks(candidate, baseline, config)
    return GateResult(bundle=candidate.bundle.name, baseline_path=baseline_path, checks=tuple(checks),
                      candidate=candidate, baseline=baseline, notes=tuple(_notes(candidate, baseline)))


def _busy(candidate: Measurement, baseline: Measurement, config: GateConfig) -> str | None:
    """Why latency cannot be trusted (other programs competed for the CPUs), or None."""
    from edgemed._threads import usable_cpus

    if config.idle_headroom is None:
        return None
    free = max(0, usable_cpus() - candidate.threads)
    limit = max(free - config.idle_headroom, 0.25)  # a stray task now and then is always tolerated
    for who, m in (("this run", candidate), ("the baseline", baseline)):
        load = m.contention
        if load is not None and load > limit:
            return (f"while {who} was timed, {load:.1f} other tasks were runnable on average beside its "
                    f"{m.threads} thread{'s' if m.threads != 1 else ''} on {usable_cpus()} usable CPUs (at most "
                    f"{limit:g} keep the timing fair). Rerun on an idle runner"
                    + (", or re-baseline on one" if who == "the baseline" else "")
                    + "; --ignore-load judges it anyway.")
    return None


def _task(b: BundleIdentity) -> str:
    organs = ", ".join(f"{n}={i}" for n, i in b.organs)
    return f"{b.modality}, {organs}" + (f", {b.label_map}" if b.label_map else "")


def _latency(name: str, label: str, est: RatioEstimate, base_ms: float, cand_ms: float,
             tolerance: float | None) -> MetricCheck:
    pct = est.change_percent
    values = {**est.to_json(), "baseline_ms": round(base_ms, 3), "candidate_ms": round(cand_ms, 3),
              "tolerance": tolerance}
    interval = f"[{pct(est.low):+.1f}, {pct(est.high):+.1f}] %"
    conf = f"{100 * est.confidence:.0f} %"
    if tolerance is None:
        status, limit = "info", "not gated"
        detail = f"{pct():+.1f} % normalised (reported only; gate it with --p99-tolerance)."
    else:
        limit = f"+{100 * tolerance:.0f} %"
        if est.low > 1 + tolerance:
            status = "fail"
            detail = (f"{pct():+.1f} % slower than the baseline (normalised by the reference workload); even the "
                      f"{conf} lower bound, {pct(est.low):+.1f} %, exceeds the {limit} limit.")
        elif est.ratio > 1 + tolerance:
            status = "warn"
            detail = (f"{pct():+.1f} % is over the {limit} limit, but the {conf} lower bound {pct(est.low):+.1f} % is "
                      "not: within this run's noise, so not declared. Rerun with more --repeats to decide.")
        else:
            status = "pass"
            detail = f"{pct():+.1f} % (normalised), within {limit}."
    return MetricCheck(name=name, label=label, baseline=f"{base_ms:.2f} ms", candidate=f"{cand_ms:.2f} ms",
                       change=f"{pct():+.1f} %", interval=interval, limit=limit, status=status, detail=detail,
                       values=values)


def _memory(candidate: Measurement, baseline: Measurement, config: GateConfig) -> MetricCheck:
    c, b = candidate.peak_memory_bytes, baseline.peak_memory_bytes
    values = {"baseline_bytes": b, "candidate_bytes": c, "method": candidate.memory_method,
              "tolerance": config.memory_tolerance, "slack_mib": config.memory_slack_mib}
    fmt = (lambda v: "n/a" if v is None else f"{v / _MIB:.1f} MiB")
    if c is None or b is None or candidate.memory_method != "vmhwm" or baseline.memory_method != "vmhwm":
        return MetricCheck("peak_memory", "peak memory", fmt(b), fmt(c), "", "", "not gated", "info",
                           "peak memory is gated on Linux only (the peak RSS can be reset there); reported only.",
                           values)
    allowed = max(config.memory_tolerance * b, config.memory_slack_mib * _MIB)
    growth = c - b
    change = f"{growth / _MIB:+.1f} MiB" + (f" ({100 * growth / b:+.0f} %)" if b > 0 else "")
    limit = f"+{100 * config.memory_tolerance:.0f} % or {config.memory_slack_mib:g} MiB"
    if growth > allowed:
        return MetricCheck("peak_memory", "peak memory", fmt(b), fmt(c), change, "", limit, "fail",
                           f"the bundle needs {change} more memory than the baseline (allowed {allowed / _MIB:.1f} "
                           "MiB).", values)
    return MetricCheck("peak_memory", "peak memory", fmt(b), fmt(c), change, "", limit, "pass",
                       f"{change}, within the limit.", values)


def _dice_checks(candidate: Measurement, baseline: Measurement, config: GateConfig) -> list[MetricCheck]:
    from edgemed.metrics import dice

    ref = candidate.reference_labels
    tol = config.dice_tolerance_points
    rows = []
    for organ, label_id in candidate.bundle.organs:
        cand_mask = candidate.mask == label_id
        base_mask = baseline.mask == label_id
        if ref is not None:
            kind, label = "reference", f"Dice {organ}"
            base_d, cand_d = dice(base_mask, ref == label_id), dice(cand_mask, ref == label_id)
        else:  # no reference: how far the candidate's mask moved from the baseline's
            kind, label = "baseline mask", f"Dice {organ} vs baseline mask"
            base_d, cand_d = 1.0, dice(cand_mask, base_mask)
        drop = 100.0 * (base_d - cand_d)
        values = {"against": kind, "baseline": round(base_d, 6), "candidate": round(cand_d, 6),
                  "drop_points": round(drop, 4), "tolerance_points": tol}
        fail = drop > tol
        detail = (f"Dice vs the {kind} fell {drop:.2f} points ({base_d:.4f} → {cand_d:.4f}), more than the "
                  f"{tol:g}-point limit." if fail else f"{-drop:+.2f} points vs the {kind}.")
        rows.append(MetricCheck(f"dice_{organ}", label, f"{base_d:.4f}", f"{cand_d:.4f}", f"{-drop:+.2f} pts", "",
                                f"-{tol:g} pts", "fail" if fail else "pass", detail, values))
    return rows


def _notes(candidate: Measurement, baseline: Measurement) -> list[str]:
    notes = []
    clock = candidate.clock
    ref_c = np.median(candidate.reference_cpu_ms if clock == "cpu" else candidate.reference_ms)
    ref_b = np.median(baseline.reference_cpu_ms if clock == "cpu" else baseline.reference_ms)
    speed = ref_c / ref_b
    if abs(speed - 1) > 0.05:
        notes.append(f"this machine ran the reference workload {speed:.2f}x as long as when the baseline was made; "
                     "latency changes are normalised by it.")
    if candidate.host.get("cpu_model") != baseline.host.get("cpu_model"):
        notes.append(f"the baseline was measured on {baseline.host.get('cpu_model')!r}, this run on "
                     f"{candidate.host.get('cpu_model')!r}: normalising corrects for speed, not for different "
                     "instruction sets; prefer a baseline from this runner class.")
    if candidate.bundle.digest == baseline.bundle.digest:
        notes.append("the candidate is the baseline's own bundle (same digest): any change is noise.")
    if candidate.reference is None:
        notes.append("no reference label map: Dice is the agreement with the baseline's mask (pass --reference SEG "
                     "to score against ground truth).")
    return notes
