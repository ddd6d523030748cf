"""`edgemed check` / `edgemed bench` on a tiny student: baseline, pass, a Dice regression caught, refusals, no torch.

The failing case is a Dice regression (deterministic); no test here asserts on wall-clock times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from _no_torch import run_without_torch
from click.testing import CliRunner

from edgemed.errors import CompatibilityError, InputError
from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny phantom liver bundle, its scan and labels, a baseline of it and a Dice-degraded copy (seconds)."""
    from _phantom_pairs import tiny_liver_bundle

    from edgemed.measure import make_biased_bundle
    from edgemed.cli._check import check

    root = tmp_path_factory.mktemp("gate")
    bundle, scan, seg = tiny_liver_bundle(root)
    # A background bias of +6 leaves (almost) no liver: a Dice drop of tens of points, whatever the student learnt.
    degraded = make_biased_bundle(bundle, root / "liver-degraded.edgemed", bias=(6.0, 0.0)).path
    baseline = root / "ci" / "liver.baseline.json"
    res = CliRunner().invoke(check, [str(bundle), "--baseline", str(baseline), "--scan", str(scan),
                                     "--reference", str(seg), "--update-baseline", "--fast"])
    assert res.exit_code == 0, res.output
    return {"root": root, "bundle": bundle, "scan": scan, "seg": seg, "degraded": degraded, "baseline": baseline}


def _check(t: dict[str, Path], bundle: Path, *extra: str) -> object:
    from edgemed.cli._check import check

    return CliRunner().invoke(check, [str(bundle), "--baseline", str(t["baseline"]), "--scan", str(t["scan"]),
                                      "--reference", str(t["seg"]), "--fast", *extra])


def test_update_baseline_writes_a_complete_baseline(tiny: dict[str, Path]) -> None:
    raw = json.loads(tiny["baseline"].read_text())
    assert raw["kind"] == "edgemed-gate-baseline" and raw["backend"] in ("ort", "openvino")
    assert len(raw["samples"]["cpu"]["candidate_ms"]) == 15 and raw["workload"]["kind"] == "conv"
    assert raw["bundle"]["organs"] == [["liver", 5]] and 0.0 <= raw["dice"]["liver"] <= 1.0
    assert raw["mask"]["shape"] == list(SMALL.shape)


def test_the_same_bundle_passes_with_json_and_junit(tiny: dict[str, Path], tmp_path: Path) -> None:
    # The false-alarm rate at the default +10 % is measured by benchmarks/suite/gate_study.py (<= 1 in 20); a unit
    # test must never flake, so here latency may be up to +50 % before it fails: this checks the plumbing.
    res = _check(tiny, tiny["bundle"], "--json", "--junit-xml", str(tmp_path / "gate.xml"),
                 "--latency-tolerance", "0.5", "--ignore-load")
    data = json.loads(res.output)
    assert data["passed"] is True and res.exit_code == 0, res.output
    dice = next(c for c in data["checks"] if c["name"] == "dice_liver")
    assert dice["values"]["drop_points"] == 0.0 and dice["values"]["against"] == "reference"
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and len(suite.findall("testcase")) == 4


def test_a_dice_regression_fails_naming_the_metric(tiny: dict[str, Path], tmp_path: Path) -> None:
    res = _check(tiny, tiny["degraded"], "--junit-xml", str(tmp_path / "gate.xml"))
    assert res.exit_code == 1, res.output
    assert "Dice liver" in res.output and "REGRESSED" in res.output and "FAILED" in res.output
    assert "points" in res.output and "--update-baseline" in res.output  # what to do if it was intended
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    failed = [c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None]  # type: ignore[union-attr]
    assert failed == ["Dice liver"]


def test_missing_and_mismatched_baselines_are_refused_clearly(tiny: dict[str, Path], tmp_path: Path) -> None:
    from edgemed.cli._check import check

    res = CliRunner().invoke(check, [str(tiny["bundle"]), "--baseline", str(tmp_path / "none.json")])
    assert isinstance(res.exception, InputError) and "--update-baseline" in str(res.exception)
    assert str(tiny["bundle"]) in str(res.exception)
    res = _check(tiny, tiny["bundle"], "--backend", "openvino")
    assert isinstance(res.exception, CompatibilityError) and "backend" in str(res.exception)
    other = json.loads(tiny["baseline"].read_text())
    other["bundle"].update(name="spleen.edgemed", organs=[["spleen", 1]])
    (tmp_path / "spleen.json").write_text(json.dumps(other))
    res = CliRunner().invoke(check, [str(tiny["bundle"]), "--baseline", str(tmp_path / "spleen.json"), "--fast"])
    assert isinstance(res.exception, CompatibilityError) and "another model" in str(res.exception)
    res = CliRunner().invoke(check, [str(tiny["bundle"]), "--baseline", str(tiny["baseline"]), "--fast"])
    assert isinstance(res.exception, CompatibilityError) and "--scan" in str(res.exception)  # phantom ≠ its scan


def test_slower_variant_keeps_masks_and_biased_variant_moves_them(tiny: dict[str, Path]) -> None:
    from edgemed.measure import make_slower_bundle
    from edgemed.io import read_volume
    from edgemed.runtime import load

    slow = make_slower_bundle(tiny["bundle"], tiny["root"] / "liver-slow.edgemed", width=8, layers=2)
    assert slow.metadata["variant"]["kind"] == "slower"
    ct = read_volume(tiny["scan"])
    with load(tiny["bundle"], backend="ort", threads=1) as a, load(slow, backend="ort", threads=1) as b, \
            load(tiny["degraded"], backend="ort", threads=1) as c:
        base = a.segment(ct).array
        np.testing.assert_array_equal(b.segment(ct).array, base)
        assert (c.segment(ct).array == 5).sum() < (base == 5).sum()


def test_bench_cli_json(tiny: dict[str, Path]) -> None:
    from edgemed.cli._bench import bench

    res = CliRunner().invoke(bench, [str(tiny["bundle"]), "--scan", str(tiny["scan"]), "--reference", str(tiny["seg"]),
                                     "--iterations", "5", "--warmup", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    lat = data["latency_ms"]
    assert lat["n"] == 5 and 0 < lat["p50_ms"] <= lat["p99_ms"] and data["normalised"]["p50"] > 0
    assert set(data["stages_ms"]) == {"preprocess", "inference", "postprocess"} and "liver" in data["dice"]


def test_gate_runs_without_torch(tiny: dict[str, Path]) -> None:
    result = run_without_torch(
        "import edgemed.testing, edgemed.bench\n"
        "from edgemed.cli import main\n"
        "try:\n"
        "    main(['check', sys.argv[1], '--baseline', sys.argv[2], '--scan', sys.argv[3], '--fast', '--json',\n"
        "          '--ignore-load'])\n"
        "except SystemExit as err:\n"
        "    assert not err.code, err.code\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxslim')]\n"
        "assert not heavy, heavy\n",
        str(tiny["bundle"]), str(tiny["baseline"]), str(tiny["scan"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True


def test_pytest_plugin_fixture_updates_then_gates(tiny: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "test_model.py").write_text(
        "from edgemed.measure import GateConfig\n"
        "def test_same(edgemed_gate):  # +50 %: a unit test must never flake on timing\n"
        f"    edgemed_gate({str(tiny['bundle'])!r}, 'base.json', scan={str(tiny['scan'])!r},\n"
        "                 config=GateConfig(latency_tolerance=0.5, idle_headroom=None))\n"
        "def test_degraded(edgemed_gate):\n"
        f"    edgemed_gate({str(tiny['degraded'])!r}, 'base.json', scan={str(tiny['scan'])!r})\n")

    def pytest_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "edgemed.testing", "-p", "no:cacheprovider",
                               "-q", "--edgemed-fast", "-k", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)

    first = pytest_run("test_same", "--edgemed-update-baseline")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads((tmp_path / "base.json").read_text())["kind"] == "edgemed-gate-baseline"
    second = pytest_run("test_same or test_degraded")
    assert second.returncode == 1 and "1 failed, 1 passed" in second.stdout, second.stdout
    assert "Dice liver vs baseline mask" in second.stdout and "REGRESSED" in second.stdout


def test_variants_refuse_an_existing_bundle_unless_overwrite(tiny: dict[str, Path]) -> None:
    """A variant written twice to one path (a bisection probe) needs overwrite=True, as every output does."""
    from edgemed.errors import OutputError
    from edgemed.measure import make_biased_bundle

    probe = tiny["root"] / "probe.edgemed"
    make_biased_bundle(tiny["bundle"], probe, bias=(0.5, 0.0))
    with pytest.raises(OutputError, match="overwrite"):
        make_biased_bundle(tiny["bundle"], probe, bias=(1.0, 0.0))
    again = make_biased_bundle(tiny["bundle"], probe, bias=(1.0, 0.0), overwrite=True)
    assert again.metadata["variant"]["bias"] == [1.0, 0.0]


@pytest.fixture()
def busy_machine() -> object:
    """More busy processes than this machine has usable CPUs, for as long as the test runs."""
    from edgemed._threads import usable_cpus

    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable_cpus() + 1)]
    try:
        import time

        time.sleep(0.5)  # let them reach full speed
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_busy_machine_makes_latency_inconclusive_not_pass_or_fail(tiny: dict[str, Path], tmp_path: Path,
                                                                     busy_machine: object) -> None:
    """Beside more busy processes than CPUs the gate refuses to judge latency (exit 3), says why, and
    still judges Dice: a Dice regression fails however busy the machine is."""
    res = _check(tiny, tiny["bundle"], "--json", "--junit-xml", str(tmp_path / "gate.xml"))
    assert res.exit_code == 3, res.output
    data = json.loads(res.output)
    assert data["verdict"] == "inconclusive" and data["passed"] is False and data["failures"] == []
    latency = next(c for c in data["checks"] if c["name"] == "latency_p50")
    assert latency["status"] == "busy" and "other tasks were runnable" in latency["detail"]
    assert next(c for c in data["checks"] if c["name"] == "dice_liver")["status"] == "pass"
    assert min(data["candidate"]["others_running"]) >= 1
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "1" and suite.get("failures") == "0"
    text = _check(tiny, tiny["bundle"])
    assert text.exit_code == 3 and "INCONCLUSIVE: latency not judged" in text.output and "idle" in text.output
    worse = _check(tiny, tiny["degraded"], "--json")
    assert worse.exit_code == 1 and json.loads(worse.output)["failures"] == ["dice_liver"], worse.output
