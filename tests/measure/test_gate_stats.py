"""The gate's statistics and verdicts on synthetic samples: normalisation, bootstrap bounds, tables, JUnit, baselines."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from edgemed.measure import (BundleIdentity, GateConfig, Measurement, ScanIdentity, WorkloadSpec, bootstrap_ratio,
                           check_compatible, compare, junit_xml, load_baseline, normalise, save_baseline)
from edgemed.errors import ArtifactError, CompatibilityError, ConfigError, InputError

LIVER = BundleIdentity(name="liver.edgemed", digest="a" * 64, precision="fp32", organs=(("liver", 5),),
                       label_map="totalsegmentator", modality="CT")
SCAN = ScanIdentity(source="ct.nii.gz", sha256="b" * 64, shape=(8, 8, 4))


def _mask(radius: int = 3) -> np.ndarray:
    x, y, z = np.mgrid[:8, :8, :4]
    return np.where((x - 4) ** 2 + (y - 4) ** 2 <= radius**2, 5, 0).astype(np.uint8)


def _measurement(*, slowdown: float = 1.0, machine: float = 1.0, seed: int = 0, n: int = 40, noise: float = 0.01,
                 mask: np.ndarray | None = None, memory: int = 40 << 20, **changes: object) -> Measurement:
    """Paired timings: the machine's speed varies per pair (x `machine`), the model is `slowdown` slower."""
    rng = np.random.default_rng(seed)
    load = machine * rng.uniform(1.0, 1.6, n)  # how busy the machine was during each pair
    ref = 10.0 * load * rng.lognormal(0, noise, n)
    cand = 12.0 * slowdown * load * rng.lognormal(0, noise, n)
    m = Measurement(bundle=LIVER, scan=SCAN, reference=None, backend="ort", threads=1,
                    workload=WorkloadSpec("conv", batch=8), clock="cpu", candidate_ms=tuple(cand),
                    reference_ms=tuple(ref), candidate_cpu_ms=tuple(cand), reference_cpu_ms=tuple(ref),
                    stages_ms={"inference": 8.0}, peak_memory_bytes=memory, memory_method="vmhwm", dice={},
                    mask=_mask() if mask is None else mask, host={"cpu_model": "test"}, config={},
                    created_utc="2026-01-01T00:00:00+00:00", wall_s=1.0)
    return dataclasses.replace(m, **changes)  # type: ignore[arg-type]


def test_normalising_cancels_the_machine_speed() -> None:
    fast, slow = _measurement(seed=1), _measurement(seed=1, machine=1.7)
    assert np.median(slow.candidate_ms) > 1.6 * np.median(fast.candidate_ms)
    np.testing.assert_allclose(fast.normalised, slow.normalised, rtol=1e-12)
    assert normalise([2.0, 3.0], [1.0, 2.0]).tolist() == [2.0, 1.5]
    with pytest.raises(InputError, match="equally long"):
        normalise([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="positive"):
        normalise([1.0, 0.0], [1.0, 1.0])


def test_bootstrap_bounds_bracket_the_true_ratio_and_are_seeded() -> None:
    base, same, slower = _measurement(seed=1), _measurement(seed=2), _measurement(seed=3, slowdown=1.15)
    est = bootstrap_ratio(same.normalised, base.normalised, resamples=1000)
    assert est.low < 1.0 < est.high and est.low > 0.97 and est.high < 1.03
    assert est == bootstrap_ratio(same.normalised, base.normalised, resamples=1000)  # seeded: same verdict
    est = bootstrap_ratio(slower.normalised, base.normalised, resamples=1000)
    assert 1.10 < est.low < 1.15 < est.high
    p99 = bootstrap_ratio(slower.normalised, base.normalised, percentile=99, resamples=1000)
    assert p99.high - p99.low > est.high - est.low  # a tail percentile is less certain than the median
    with pytest.raises(InputError, match="empty"):
        bootstrap_ratio([], [1.0])


def test_false_alarms_and_detections_on_simulated_runs() -> None:
    """No change: the lower bound stays under +10 %; a 15 % slowdown: it clears +10 % (noise ~5 % per sample)."""
    def runs(slowdown: float) -> list[float]:
        base = np.random.default_rng(0).lognormal(0, 0.05, 40)
        lows = []
        for seed in range(40):
            cand = slowdown * np.random.default_rng(seed + 1).lognormal(0, 0.05, 40)
            lows.append(bootstrap_ratio(cand, base, resamples=300, seed=seed).low)
        return lows

    assert sum(low > 1.10 for low in runs(1.0)) == 0
    assert sum(low > 1.10 for low in runs(1.15)) >= 38


def test_compare_names_what_regressed_and_by_how_much() -> None:
    base = _measurement(seed=1)
    ok = compare(_measurement(seed=2, machine=1.4), base, GateConfig(resamples=500))
    assert ok.passed and [c.status for c in ok.checks] == ["pass", "info", "pass", "pass"]
    assert "PASSED" in ok.table() and any("reference workload 1.4" in n for n in ok.notes)
    bad = compare(_measurement(seed=2, slowdown=1.3, mask=_mask(2), memory=60 << 20), base, GateConfig(resamples=500))
    assert not bad.passed and [c.name for c in bad.failures] == ["latency_p50", "peak_memory", "dice_liver"]
    table = bad.table()
    assert "FAILED: 3 regressions" in table and "REGRESSED" in table and "+30." in table
    assert "Dice liver vs baseline mask" in table and "+20.0 MiB" in table
    data = json.loads(json.dumps(bad.to_json()))
    assert data["passed"] is False and data["failures"] == ["latency_p50", "peak_memory", "dice_liver"]


def test_dice_against_a_reference_uses_the_baselines_stored_mask() -> None:
    truth = _mask(3)
    base = _measurement(seed=1, mask=_mask(3))
    worse = _measurement(seed=2, mask=_mask(2), reference=SCAN, reference_labels=truth)
    row = compare(worse, base, GateConfig(resamples=200)).checks[-1]
    assert row.name == "dice_liver" and row.values["against"] == "reference" and row.values["baseline"] == 1.0
    assert row.status == "fail" and row.values["drop_points"] > 0.5
    small = GateConfig(resamples=200, dice_tolerance_points=100.0)
    assert compare(worse, base, small).passed is True


def test_a_noisy_overrun_warns_but_does_not_fail() -> None:
    base = _measurement(seed=1, n=8, noise=0.04)
    noisy = _measurement(seed=5, n=8, noise=0.04, slowdown=1.12)
    result = compare(noisy, base, GateConfig(resamples=500, latency_tolerance=0.10))
    p50 = result.checks[0]
    assert p50.values["ratio"] > 1.10 and p50.values["low"] <= 1.10 and p50.status == "warn"
    assert result.passed and "within this run's noise" in result.table()


def test_junit_xml_is_well_formed_with_one_case_per_metric() -> None:
    base = _measurement(seed=1)
    result = compare(_measurement(seed=2, mask=_mask(2)), base, GateConfig(resamples=200))
    root = ET.fromstring(junit_xml(result))
    suite = root.find("testsuite")
    assert root.tag == "testsuites" and suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["latency p50", "latency p99", "peak memory", "Dice liver vs baseline mask"]
    assert suite.get("tests") == "4" and suite.get("failures") == "1"
    failure = cases[-1].find("failure")
    assert failure is not None and "Dice" in failure.get("message", "") and "points" in failure.get("message", "")
    assert "FAILED" in (suite.find("system-out").text or "")  # type: ignore[union-attr]


def test_baseline_round_trip_and_damage(tmp_path: Path) -> None:
    m = _measurement(seed=1)
    path = save_baseline(m, tmp_path / "ci" / "liver.baseline.json")
    back = load_baseline(path)
    assert back.bundle == m.bundle and back.workload == m.workload and back.clock == "cpu"
    np.testing.assert_array_equal(back.mask, m.mask)
    np.testing.assert_allclose(back.normalised, m.normalised, rtol=1e-4)
    raw = json.loads(path.read_text())
    raw["mask"]["sha256"] = "0" * 64
    (tmp_path / "altered.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="altered"):
        load_baseline(tmp_path / "altered.json")
    with pytest.raises(InputError, match="--update-baseline"):
        load_baseline(tmp_path / "missing.json", bundle="out/liver.edgemed")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_baseline(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "bundle"}))
    with pytest.raises(ArtifactError, match="not an edgemed gate baseline"):
        load_baseline(tmp_path / "other.json")
    raw = json.loads(path.read_text())
    raw["workload"]["channels"] = 99
    (tmp_path / "workload.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="workload"):
        load_baseline(tmp_path / "workload.json")


def test_baselines_of_another_task_backend_or_scan_are_refused() -> None:
    base = _measurement(seed=1)
    spleen = dataclasses.replace(LIVER, organs=(("spleen", 1),), name="spleen.edgemed")
    with pytest.raises(CompatibilityError, match="another model"):
        check_compatible(spleen, base, baseline_path="liver.baseline.json")
    with pytest.raises(CompatibilityError, match="backend 'ort'"):
        check_compatible(LIVER, base, backend="openvino")
    with pytest.raises(CompatibilityError, match="1 thread"):
        check_compatible(LIVER, base, threads=4)
    check_compatible(dataclasses.replace(LIVER, digest="c" * 64, precision="int8"), base)  # a new version: fine
    other_scan = _measurement(seed=2, scan=dataclasses.replace(SCAN, sha256="d" * 64))
    with pytest.raises(CompatibilityError, match="--scan"):
        compare(other_scan, base)


def test_gate_config_validates_itself() -> None:
    assert GateConfig().with_fast().repeats == 15
    with pytest.raises(ConfigError, match="at least 5"):
        GateConfig(repeats=2)
    with pytest.raises(ConfigError, match="workload"):
        GateConfig(workload="fft")
    with pytest.raises(ConfigError, match="fraction"):
        GateConfig(latency_tolerance=15)
    with pytest.raises(ConfigError, match="Did you mean 'latency_tolerance'"):
        GateConfig.from_mapping({"latency_tolerence": 0.1})
