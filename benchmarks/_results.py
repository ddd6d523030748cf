"""The one writer of benchmark results: every script's JSON in one schema, written atomically.

Every JSON a script in benchmarks/suite/ or benchmarks/studies/ writes into benchmarks/results/ is

    {"benchmark": "prune_liver", "script": "benchmarks/suite/prune_liver.py", "edgemed_version": "0.1.0",
     "git_sha": "3f2c…" or "unknown", "dirty": true/false/null, "config": {the run's arguments and settings},
     "metrics": {what was measured}, "host": {this machine's facts}}

Scripts run as `python benchmarks/suite/x.py` from the repository root, so benchmarks/ is not on
sys.path by itself; each puts it there before importing this module:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from _results import RESULTS, ROOT, write_result  # noqa: E402
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
#: Real scans (TotalSegmentator example, dcmqi, sam_med2d_demo); see ../shared/data/*/README.md.
DATA = Path(os.environ.get("EDGEMED_DATA", ROOT.parent / "shared" / "data"))
SCHEMA_KEYS = ("benchmark", "script", "edgemed_version", "git_sha", "dirty", "config", "metrics", "host")


def git_state(root: Path = ROOT) -> tuple[str, bool | None]:
    """(HEAD's sha, whether tracked files differ from it); ("unknown", None) outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown", None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
        return "unknown", None
    return sha.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)


def repo_path(path: str | os.PathLike[str]) -> str:
    """`path` relative to the repository root when it lies inside it (POSIX form), else as given."""
    p = Path(path)
    resolved = p.resolve() if p.is_absolute() or p.exists() else (Path.cwd() / p).resolve()
    return resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(path)


def to_json(value: Any) -> Any:
    """`value` with paths made repo-relative, tuples/sets made lists, enums and dataclasses unwrapped."""
    if isinstance(value, Path):
        return repo_path(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(to_json(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def config_from_args(args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """A result's "config": the parsed command line plus fixed settings of the run (teacher, scan, ...)."""
    return to_json({**vars(args), **settings})


def write_result(out: str | os.PathLike[str], *, benchmark: str, script: str | os.PathLike[str],
                 config: Mapping[str, Any], metrics: Mapping[str, Any], host: Mapping[str, Any] | None = None) -> Path:
    """Write one benchmark result in the shared schema to `out`, atomically (never a half-written file).

    Args:
        benchmark: The benchmark's name, e.g. "prune_liver".
        script: The script that ran (pass `__file__`); stored relative to the repository root.
        config: The run's arguments and settings.
        metrics: What was measured.
        host: Facts beyond Python version, machine and CPU count (versions, `edgemed.measure.host_facts()`).

    Example:
        >>> write_result(RESULTS / "prune_joint.json", benchmark="prune_joint", script=__file__,
        ...              config={"ratio": 0.3}, metrics={"runs": []}, host={"torch": "2.13.0"})
    """
    from edgemed import __version__
    from edgemed.artifacts import atomic_file

    sha, dirty = git_state()
    report = {
        "benchmark": benchmark,
        "script": repo_path(script),
        "edgemed_version": __version__,
        "git_sha": sha,
        "dirty": dirty,
        "config": to_json(config),
        "metrics": to_json(metrics),
        "host": to_json({"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                         **(host or {})}),
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    return path


def result_metrics(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The measured part of a result file: "metrics" in the shared schema, the whole file in older ones."""
    raw = json.loads(Path(path).read_text())
    return raw["metrics"] if isinstance(raw.get("metrics"), dict) else raw
