"""benchmarks/ as a suite: every result names the script that made it, every script writes the shared schema
through benchmarks/_results.py and imports only public edgemed, and run_suite.py knows every script (fast)."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
INDEX = RESULTS / "INDEX.json"
FOLDERS = (BENCH / "suite", BENCH / "studies")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _entry_scripts() -> list[Path]:
    """Runnable benchmarks: suite/studies *.py and *.sh, not helpers (_x.py), conftest or pytest files."""
    return sorted(p for folder in FOLDERS for p in folder.iterdir()
                  if p.suffix in (".py", ".sh") and not p.name.startswith(("_", "test_")) and p.name != "conftest.py")


def _pytest_benchmarks() -> list[Path]:
    return sorted((BENCH / "suite").glob("test_*.py"))


def _index() -> dict[str, dict[str, str]]:
    return json.loads(INDEX.read_text())["files"]


def _private_imports(source: str) -> list[str]:
    """edgemed imports through a private module (a path segment after 'edgemed' starting with '_') or of a _name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [(node.module, tuple(alias.name for alias in node.names))]
        else:
            continue
        for module, names in modules:
            parts = module.split(".")
            if parts[0] != "edgemed":
                continue
            private = [p for p in parts[1:] if p.startswith("_")]
            private += [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
            if private:
                found.append(f"{module} ({', '.join(private)})")
    return found


def test_every_result_names_an_existing_script() -> None:
    index = _index()
    orphans = []
    for path in sorted(RESULTS.iterdir()):
        if path == INDEX:
            continue
        if path.suffix == ".json":
            script = json.loads(path.read_text()).get("script")
        else:
            key = path.name + ("/" if path.is_dir() else "")
            entry = index.get(key) or next((e for k, e in index.items() if fnmatch.fnmatchcase(key, k)), {})
            script = entry.get("script")
        if not script or not (ROOT / script).is_file():
            orphans.append(f"{path.name} -> {script!r}")
    assert not orphans, f"result files without an existing script (add 'script' or an INDEX.json entry): {orphans}"


def test_index_entries_are_live() -> None:
    for key, entry in _index().items():
        assert (ROOT / entry["script"]).is_file(), (key, entry["script"])
        if not any(c in key for c in "*?["):
            assert (RESULTS / key.rstrip("/")).exists(), f"INDEX.json lists {key}, which is gone"


@pytest.mark.parametrize("script", _entry_scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_writes_through_write_result(script: Path) -> None:
    assert "write_result(" in script.read_text(), f"{script.name} does not write through benchmarks/_results.py"


def test_pytest_benchmarks_write_through_write_result() -> None:
    conftest = (BENCH / "suite" / "conftest.py").read_text()
    assert _pytest_benchmarks() and "def pytest_benchmark_update_json" in conftest and "write_result(" in conftest


def test_no_private_edgemed_imports() -> None:
    offenders = {}
    for path in sorted(BENCH.rglob("*.py")):
        found = _private_imports(path.read_text())
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    for path in sorted(BENCH.rglob("*.sh")):  # embedded Python: the import lines
        found = re.findall(r"^\s*(?:from|import)\s+(edgemed(?:\.\w+)*)", path.read_text(), flags=re.M)
        found = [m for m in found if any(part.startswith("_") for part in m.split(".")[1:])]
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, f"private edgemed imports in benchmarks/: {offenders}"


def test_private_import_check_catches_them() -> None:
    assert _private_imports("from edgemed._atomic import atomic_file")
    assert _private_imports("from edgemed.profiles._measure import host_facts")
    assert _private_imports("import edgemed.pipeline._stages")
    assert _private_imports("from edgemed.pipeline import _finetune_config")
    assert not _private_imports("from edgemed import __version__\nfrom edgemed.measure import host_facts")


@pytest.mark.parametrize("study", sorted((BENCH / "studies").glob("*.py")), ids=lambda p: p.name)
def test_study_states_purpose_and_result(study: Path) -> None:
    doc = ast.get_docstring(ast.parse(study.read_text())) or ""
    assert doc.splitlines() and doc.splitlines()[0].strip(), f"{study.name}: no one-line purpose"
    assert "benchmarks/results/" in doc, f"{study.name}: its docstring names no result file"


def test_run_suite_lists_every_script() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "run_suite.py"), "--list"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for script in [*_entry_scripts(), *_pytest_benchmarks()]:
        assert str(script.relative_to(ROOT)) in done.stdout, f"run_suite.py --list misses {script.name}"


def test_run_suite_order_and_usage() -> None:
    suite = _load(BENCH / "run_suite.py")
    order = suite.ordered()
    assert len({s.name for s in order}) == len(order) == len(suite.STEPS)
    for i, step in enumerate(order):
        assert all(order.index(dep) < i for dep in suite.needs(step)), step.name
    names = [s.name for s in order]
    assert names.index("prune_liver") < names.index("quantize_pruned_liver") < names.index("int8_peak")
    assert names.index("reference_teacher") < names.index("quantize_liver")
    bad = subprocess.run([sys.executable, str(BENCH / "run_suite.py"), "--only", "no_such_step"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no_such_step" in bad.stderr


def test_write_result_schema(tmp_path: Path) -> None:
    results = _load(BENCH / "_results.py")
    out = results.write_result(tmp_path / "sub" / "x.json", benchmark="x", script=BENCH / "suite" / "prune_liver.py",
                               config={"work": ROOT / "runs" / "x", "ratios": (0.5,)}, metrics={"dice": 0.9},
                               host={"torch": "2"})
    raw = json.loads(out.read_text())
    assert tuple(raw) == results.SCHEMA_KEYS
    assert raw["script"] == "benchmarks/suite/prune_liver.py" and raw["benchmark"] == "x"
    assert raw["config"] == {"work": "runs/x", "ratios": [0.5]} and raw["metrics"] == {"dice": 0.9}
    assert raw["git_sha"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", raw["git_sha"])
    assert raw["dirty"] in (True, False, None) and raw["host"]["torch"] == "2" and raw["host"]["cpus"]
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]  # atomic: no temporary left behind
