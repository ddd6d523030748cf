"""`run_recipe` and `edgemed compress` on a phantom: stages, cache hits, resume after kill -9, report.html."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import tiny_recipe_toml

from edgemed.pipeline import LATENCY_TIE, SECTIONS, load_recipe, run_recipe

pytestmark = pytest.mark.filterwarnings("ignore::edgemed.errors.EdgemedWarning")

STAGES = {"distill", "prune", "export", "quantize", "profile", "runoff"}


@pytest.fixture(scope="module")
def first_run(phantom_data: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One run of the tiny recipe: width 8 x ratios {0, 0.5} x {fp32, int8} on ONNX Runtime (seconds)."""
    root = tmp_path_factory.mktemp("run")
    (root / "r.toml").write_text(tiny_recipe_toml(phantom_data))
    recipe = load_recipe(root / "r.toml")
    return recipe, run_recipe(recipe, out=root / "out", progress=False)


def _stage_files(out: Path) -> dict[str, float]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "stages").rglob("*") if p.is_file()}


def test_every_stage_runs_once_and_is_logged(first_run) -> None:  # type: ignore[no-untyped-def]
    _, result = first_run
    assert {r["stage"] for r in result.log} == STAGES
    assert all(r["status"] == "ran" and r["seconds"] >= 0 and len(r["key"]) == 64 for r in result.log)
    assert Counter(r["key"] for r in result.log).most_common(1)[0][1] == 1
    logged = [json.loads(line) for line in (result.out / "run_log.jsonl").read_text().splitlines()]
    assert logged == list(result.log)
    organ = result.organs[0]
    names = {c.name for c in organ.candidates} | {s["name"] for s in organ.skipped}
    assert names == {"w8 p0 fp32 ort", "w8 p0.5 fp32 ort", "w8 p0 int8 ort", "w8 p0.5 int8 ort"}
    assert organ.chosen is not None and organ.chosen.latency_label == "measured"
    # min_dice = 0: every candidate qualifies, so all were timed again side by side (the run-off), and the
    # choice is the fastest there, or the most accurate of those within the tie margin (25 %) of it
    runoff = organ.runoff
    assert runoff is not None and set(runoff["latency_ms"]) == {c.name for c in organ.candidates}
    assert runoff["rounds"] >= 5 and runoff["chosen"] == organ.chosen.name
    assert runoff["latency_tie"] == LATENCY_TIE == 0.25
    fastest = min(runoff["latency_ms"].values())
    assert runoff["latency_ms"][runoff["fastest"]] == fastest
    ties = [c for c in organ.candidates if runoff["latency_ms"][c.name] <= fastest * (1 + LATENCY_TIE)]
    assert organ.chosen in ties and organ.chosen.dice == max(c.dice for c in ties)
    record = json.loads(next((result.out / "stages").glob("runoff-*/stage.json")).read_text())
    samples = record["summary"]["samples_ms"]
    assert all(len(v) == runoff["rounds"] and min(v) > 0 for v in samples.values())
    lineage = dict(organ.chosen.lineage)
    assert {"teacher predictions", "student", "bundle fp32"} <= set(lineage)
    results = json.loads((result.out / "results.json").read_text())
    assert results["organs"][0]["chosen"] == organ.chosen.name


def test_rerun_reuses_every_stage_and_gives_identical_results(first_run) -> None:  # type: ignore[no-untyped-def]
    recipe, result = first_run
    before = _stage_files(result.out)
    again = run_recipe(recipe, out=result.out, progress=False)
    assert {r["status"] for r in again.log} == {"cached"}
    assert [r["key"] for r in again.log] == [r["key"] for r in result.log]
    assert _stage_files(result.out) == before  # nothing rewritten
    assert [c.to_json() for c in again.organs[0].candidates] == [c.to_json() for c in result.organs[0].candidates]


def test_report_is_self_contained_with_every_section(first_run) -> None:  # type: ignore[no-untyped-def]
    _, result = first_run
    page = result.report.read_text()
    for section in SECTIONS:
        assert f"<section id='{section}'>" in page
    pngs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(pngs) >= 4  # Pareto, latency histogram, stage times, overlay
    import base64

    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    external = re.findall(r"""(?:src|href)\s*=\s*['"](?!data:)([^'"]*)""", page)
    assert external == [] and "<script" not in page and "<link" not in page
    assert "w8 p0 fp32 ort" in page and result.organs[0].chosen.lineage[1][1] in page


def test_cli_reports_a_missed_budget_with_the_best_achievable(first_run, capsys: pytest.CaptureFixture) -> None:  # type: ignore[no-untyped-def]
    from edgemed.cli import main

    recipe, result = first_run
    recipe_file = result.out.parent / "r.toml"
    with pytest.raises(SystemExit) as exit_:
        main(["compress", str(recipe_file), "--out", str(result.out), "--min-dice", "0.9999", "--no-progress"])
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert "no model meets --min-dice 0.9999" in err and "below the bar" in err and "report.html" in err
    assert "Traceback" not in err
    # The most accurate bundle is still shipped, marked, with the setting most likely to lift it.
    assert "BELOW THE BAR" in out and "most likely lift:" in out
    results = json.loads((result.out / "results.json").read_text())
    organ = results["organs"][0]
    assert organ["below_bar"] and organ["chosen"] is None
    assert organ["best"]["dice"] == max(c["dice"] for c in organ["candidates"])
    assert (Path(organ["best"]["bundle"]) / "manifest.json").is_file()
    assert organ["knob"]["knob"] in {"epochs", "width", "data"} and organ["knob"]["why"]
    assert "below the bar" in (result.out / "report.html").read_text()


def test_killed_run_resumes_without_redoing_a_stage(phantom_data: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe_toml(phantom_data, ratios="[0.5]", precisions='["fp32"]'))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgemed", "compress", str(recipe), "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    log = out / "run_log.jsonl"
    # The first stage is done once its line is in the run log (written just after its folder is renamed
    # into place; waiting for the folder alone let the kill land between the two).
    while not (log.is_file() and log.read_text().endswith("\n")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first stage"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    first = [json.loads(line) for line in (out / "run_log.jsonl").read_text().splitlines()]
    assert first[0]["stage"] == "distill" and len(first) < 4 and not (out / "report.html").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "run_log.jsonl").read_text().splitlines()]
    second = [r for r in rows if r["run"] != first[0]["run"]]
    assert [r["stage"] for r in second] == ["distill", "prune", "export", "profile"]
    assert second[0]["status"] == "cached" and second[0]["key"] == first[0]["key"]
    ran = Counter(r["key"] for r in rows if r["status"] == "ran")
    assert set(ran.values()) == {1} and len(ran) == 4  # every stage ran exactly once over both runs
    assert not list((out / "stages").glob(".*.tmp"))  # the killed stage's temporary directory is gone
    assert (out / "report.html").exists()


def test_joint_recipe_trains_one_student_and_ships_one_model_for_every_organ(phantom_data: Path,
                                                                            tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(tiny_recipe_toml(phantom_data, ratios="[0.0]", precisions='["fp32"]',
                                                      organs='["liver", "spleen"]', extra="joint = true"))
    result = run_recipe(load_recipe(tmp_path / "r.toml"), out=tmp_path / "out", progress=False)
    assert Counter(r["stage"] for r in result.log) == {"distill": 1, "export": 1, "profile": 1}
    assert all(r["organ"] == "liver+spleen" for r in result.log)
    liver, spleen = result.organs
    assert (liver.organ, spleen.organ) == ("liver", "spleen")
    assert liver.chosen is not None and spleen.chosen is not None
    assert liver.chosen.bundle == spleen.chosen.bundle and liver.chosen.name == spleen.chosen.name
    # Each organ is scored on its own label: the two Dice come from one label map, not one copied twice.
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice
    from edgemed import runtime

    ct = read_volume(phantom_data / "ct3.nii.gz")
    teacher = read_labels(phantom_data / "seg3.nii.gz", like=ct).array
    with runtime.load(liver.chosen.bundle, backend="ort", threads=1) as seg:
        labels = seg.segment(ct).array
    for organ, label in ((liver, 5), (spleen, 1)):
        assert organ.chosen.dice_scan == pytest.approx(dice(labels == label, teacher == label), abs=1e-4)
    assert "Joint student" in result.report.read_text()


def test_joint_choice_is_judged_by_the_worst_organ() -> None:
    from edgemed.pipeline._recipe import RecipeConfig
    from edgemed.pipeline._run import _choose_group
    from edgemed.pipeline._search import Candidate

    def cand(organ: str, name: str, dice: float, ms: float) -> Candidate:
        return Candidate(organ=organ, name=name, widths=(8,), prune_ratio=0.0, precision="fp32", backend="ort",
                         latency_ms=ms, latency_label="measured", dice=dice, dice_scan=dice, dice_checkpoint=None,
                         size_bytes=1, bundle=name)

    by_organ = {"liver": [cand("liver", "big", 0.95, 10.0), cand("liver", "small", 0.94, 5.0)],
                "spleen": [cand("spleen", "big", 0.80, 10.0), cand("spleen", "small", 0.70, 5.0)]}
    recipe = RecipeConfig(organs=("liver", "spleen"), scans=("a",), teacher_predictions=("b",), joint=True,
                          min_dice=0.75)
    picks, runoff = _choose_group(by_organ, recipe)
    assert runoff is None  # no stage cache given: the profile latencies decide
    assert {o: c.name for o, (c, _) in picks.items()} == {"liver": "big", "spleen": "big"}  # small fails on spleen
    strict, _ = _choose_group(by_organ, RecipeConfig(organs=("liver", "spleen"), scans=("a",),
                                                     teacher_predictions=("b",), joint=True, min_dice=0.9))
    (chosen, error), = set(strict.values())
    assert chosen is None and "worst organ" in error and "spleen" in error


def test_same_recipe_same_seed_gives_the_same_models_and_dice(first_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A second run in a fresh directory (nothing cached): the same candidates with identical Dice, and the
    choice is the same up to latency ties (the 10 % band timing noise is allowed to move within)."""
    recipe, result = first_run
    again = run_recipe(recipe, out=tmp_path / "again", progress=False)
    assert {r["status"] for r in again.log} == {"ran"}
    a, b = result.organs[0], again.organs[0]
    assert {c.name: c.dice for c in a.candidates} == {c.name: c.dice for c in b.candidates}  # tolerance: none
    # which candidates exist depends on Dice only: INT8 is kept out for its Dice, never for one timing
    # (a CI run once lost "w8 p0 int8 ort" that the first run had, when quantize kept INT8 only if faster)
    assert [s["name"] for s in a.skipped] == [s["name"] for s in b.skipped]
    assert all("faster" not in s["reason"] for s in a.skipped + b.skipped)
    if a.chosen.name != b.chosen.name:  # only when timing noise moved one across the tie band's edge
        for run in (a, b):
            by = run.runoff["latency_ms"]  # what the search compared: the side-by-side timing
            assert by[run.chosen.name] <= (1 + LATENCY_TIE) * min(by.values())
            # the other run's pick: near the band's edge here too (drift between processes: up to 28.5 %)
            assert max(by[a.chosen.name], by[b.chosen.name]) <= (1 + LATENCY_TIE) * 1.3 * min(by.values())


def test_max_dice_drop_ships_only_what_is_within_it_of_the_unpruned_student(first_run) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    recipe, result = first_run
    strict = run_recipe(dataclasses.replace(recipe, max_dice_drop=0.0), out=result.out, progress=False)
    organ = strict.organs[0]
    ref = max(c.dice for c in organ.candidates if c.prune_ratio == 0 and c.precision == "fp32")
    assert organ.chosen is not None and organ.chosen.dice >= ref
    # a selection rule: no stage that builds or scores a model reruns (only the run-off of the new shortlist may)
    assert {r["status"] for r in strict.log if r["stage"] != "runoff"} == {"cached"}
