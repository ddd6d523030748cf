"""The CLI: help everywhere, distill with stored predictions and with a model teacher, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemed.cli import _cli
from edgemed.io import write_nifti
from edgemed.phantom import PhantomConfig, make_phantom

SMALL = PhantomConfig(shape=(40, 32, 16), spacing_mm=(8.0, 8.0, 10.0))
FAST = ["--epochs", "2", "--spacing-mm", "8", "8", "--threads", "2", "--quiet"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    (root / "scans").mkdir()
    (root / "preds").mkdir()
    for seed in (3, 4):
        ct, labels = make_phantom(seed, SMALL)
        write_nifti(ct, root / "scans" / f"case{seed}.nii.gz")
        write_nifti(labels, root / "preds" / f"case{seed}.nii.gz")
    return root / "scans", root / "preds"


@pytest.mark.parametrize("command", ["distill", "ensemble", "inspect", "precompute", "prune", "quantize",
                                     "students"])
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(_cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_distill_folders_pair_by_name_and_inspect(folders: tuple[Path, Path], tmp_path: Path) -> None:
    scans, preds = folders
    out = tmp_path / "kidneys"
    res = _run(["distill", "--scans", str(scans), "--teacher-predictions", str(preds), "--label-map",
                "totalsegmentator", "--organ", "kidney_left", "kidney_right", "--out", str(out), *FAST, "--json"])
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report["validation"]["dice"]) == {"kidney_left", "kidney_right"}
    assert all(0.0 <= d <= 1.0 for d in report["validation"]["dice"].values())
    shown = _run(["inspect", str(out), "--json"])
    assert shown.returncode == 0, shown.stderr
    manifest = json.loads(shown.stdout)
    assert manifest["kind"] == "student"
    assert manifest["metadata"]["scans"] == ["case3.nii.gz", "case4.nii.gz"]


def test_precompute_a_store_then_distill_from_it(folders: tuple[Path, Path], tmp_path: Path) -> None:
    scans, preds = folders
    store = tmp_path / "store"
    fill = ["precompute", "--scans", str(scans), "--teacher-predictions", str(preds), "--organ", "liver",
            "--out", str(store), "--quiet"]
    first = _run(fill)
    assert first.returncode == 0, first.stderr
    assert "2 shard(s), 2 computed, 0 already there, 1 process(es)" in first.stdout
    assert "next: edgemed distill" in first.stdout
    again = _run([*fill, "--json"])
    assert json.loads(again.stdout) == {"path": str(store), "shards": 2, "computed": 0, "skipped": 2, "processes": 1}
    res = _run(["distill", "--scans", str(scans), "--teacher-store", str(store), "--organ", "liver", "--out",
                str(tmp_path / "liver"), *FAST, "--resume", "--json"])
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout)["validation"]["dice"]) == {"liver"}
    wrong = _run(["distill", "--scans", str(scans), "--teacher-store", str(store), "--organ", "spleen", "--out",
                  str(tmp_path / "spleen"), *FAST])
    assert wrong.returncode == 2 and "Fill a store for these organs" in wrong.stderr


def test_distill_from_an_onnx_teacher(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """A model teacher run in the loop: a tiny ONNX network that thresholds HU (liver-like range)."""
    import onnx
    from onnx import TensorProto, helper

    # logits = [0, 8 * (x in window)] — a "teacher" that calls soft tissue 40..80 HU label 5.
    # Input is windowed to [0, 1] over (-1024, 1024): 40 HU → 0.52, 80 HU → 0.54.
    nodes = [
        helper.make_node("Sub", ["x", "lo"], ["a"]), helper.make_node("Sub", ["hi", "x"], ["b"]),
        helper.make_node("Min", ["a", "b"], ["m"]), helper.make_node("Mul", ["m", "k"], ["s"]),
        helper.make_node("Sub", ["s", "s"], ["zero"]), helper.make_node("Concat", ["zero", "s"], ["y"], axis=1),
    ]
    init = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in
            (("lo", 0.515), ("hi", 0.545), ("k", 2000.0))]
    graph = helper.make_graph(nodes, "thr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "d", "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, "d", "h", "w"])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "teacher.onnx")
    scans, _ = folders
    out = tmp_path / "liver"
    res = _run(["distill", "--scans", str(scans / "case3.nii.gz"), "--teacher", str(tmp_path / "teacher.onnx"),
                "--teacher-classes", "0,5", "--teacher-patch-size", "16", "16", "16", "--organ", "liver",
                "--out", str(out), *FAST, "--json"])
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "manifest.json").read_text())["metadata"]
    assert meta["teacher"]["kind"] == "onnx"
    assert meta["training"]["soft_targets"] is True


@pytest.mark.parametrize(("args", "code", "message"), [
    (["distill", "--scans", "nope.nii.gz", "--teacher-predictions", "x.nii.gz", "--organ", "liver", "--out", "o"],
     1, "does not exist"),
    (["distill", "--scans", "SCANS", "--organ", "liver", "--out", "o"], 2, "exactly one of --teacher"),
    (["distill", "--scans", "SCANS", "--teacher-predictions", "PREDS", "--organ", "livr", "--out", "o"], 2,
     "Did you mean 'liver'"),
    (["inspect", "."], 1, "has no manifest.json"),
])
def test_errors_are_one_clear_line(folders: tuple[Path, Path], args: list[str], code: int, message: str) -> None:
    scans, preds = folders
    args = [str(scans) if a == "SCANS" else str(preds) if a == "PREDS" else a for a in args]
    res = _run(args)
    assert res.returncode == code, res.stderr
    assert message in res.stderr
    assert "Traceback" not in res.stderr


def test_one_scan_warns_plainly_and_ensembles_pool(folders: tuple[Path, Path], tmp_path: Path) -> None:
    scans, preds = folders
    outs = []
    for seed in ("0", "1"):
        outs.append(tmp_path / f"liver{seed}")
        res = _run(["distill", "--scans", str(scans / "case3.nii.gz"), "--teacher-predictions",
                    str(preds / "case3.nii.gz"), "--organ", "liver", "--out", str(outs[-1]), "--seed", seed, *FAST])
        assert res.returncode == 0, res.stderr
        assert "warning: only slices of the training scan could be held out" in res.stderr
        assert "Traceback" not in res.stderr and "EdgemedWarning" not in res.stderr
        assert "held-out slices" in res.stdout
    res = _run(["ensemble", *map(str, outs), "--out", str(tmp_path / "ens")])
    assert res.returncode == 0, res.stderr
    assert "2 members" in res.stdout
    shown = json.loads(_run(["inspect", str(tmp_path / "ens"), "--json"]).stdout)
    assert shown["metadata"]["training"]["member_seeds"] == [0, 1]
