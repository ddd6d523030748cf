"""Content-addressed stage cache and the run log (stdlib only).

A stage's directory is named by the sha256 of its config (canonical JSON) and of its inputs'
digests (artifact manifest digests, file hashes for scans). The stage writes into a temporary
directory renamed into place when it finishes (`edgemed._atomic.atomic_dir`), so a directory
with a `stage.json` is complete, and a run killed midway leaves only temporary directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgemed._atomic import atomic_dir, atomic_file
from edgemed.artifacts import MANIFEST, sha256_file
from edgemed.errors import ArtifactError

__all__ = ["STAGE_RECORD", "StageCache", "StageResult", "artifact_digest", "file_digest", "stage_key"]

STAGE_RECORD = "stage.json"
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(stage: str, config: Mapping[str, Any], inputs: Sequence[str]) -> str:
    """The sha256 naming a stage's output: stage name, canonical config JSON and input digests."""
    body = _canonical({"stage": stage, "config": config, "inputs": list(inputs)})
    return hashlib.sha256(body.encode()).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file (memoised per path, size and mtime: scans are hashed once per process)."""
    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_DIGESTS:
        _FILE_DIGESTS[memo] = sha256_file(p)
    return _FILE_DIGESTS[memo]


def artifact_digest(path: str | os.PathLike[str]) -> str:
    """The manifest digest of an artifact directory (its identity in lineage records)."""
    manifest = Path(path) / MANIFEST
    try:
        return str(json.loads(manifest.read_text())["digest"])
    except (OSError, KeyError, ValueError) as err:
        raise ArtifactError(f"{manifest} is missing or unreadable; delete {Path(path).parent} and rerun "
                            "edgemed compress to rebuild that stage.") from err


@dataclass(frozen=True)
class StageResult:
    """A finished stage: its directory (artifact in `dir / "artifact"`), key, record and status."""

    stage: str
    key: str
    dir: Path
    record: dict[str, Any]
    status: str  # "ran" or "cached"
    seconds: float

    @property
    def artifact(self) -> Path:
        """The artifact directory the stage wrote."""
        return self.dir / "artifact"


class StageCache:
    """Stage directories under `root/stages`, and a JSON-lines run log at `root/run_log.jsonl`.

    Example:
        >>> cache = StageCache("runs/liver")
        >>> res = cache.run("export", {"opset": 17}, [student_digest], lambda tmp: {"ok": True}, organ="liver")
        >>> res.status   # "ran" the first time, "cached" afterwards
    """

    def __init__(self, root: str | os.PathLike[str], *, run_id: str | None = None) -> None:
        self.root = Path(root)
        self.stages = self.root / "stages"
        self.log_path = self.root / "run_log.jsonl"
        self.run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"
        self.stages.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()

    def _remove_stale_tmp(self) -> None:
        # A killed run leaves atomic_dir's ".name.XXXX.tmp" folders; they never become stages.
        for tmp in self.stages.glob(".*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    def path(self, stage: str, key: str) -> Path:
        """The directory of a stage with this key."""
        return self.stages / f"{stage}-{key[:20]}"

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stage's record when its directory exists and is complete, else None."""
        record = self.path(stage, key) / STAGE_RECORD
        if not record.is_file():
            return None
        data = json.loads(record.read_text())
        return data if data.get("key") == key else None

    def run(self, stage: str, config: Mapping[str, Any], inputs: Sequence[str],
            work: Callable[[Path], Mapping[str, Any]], *, organ: str = "") -> StageResult:
        """Run `work(tmp_dir)` unless a complete stage with the same key exists; log either way.

        Args:
            stage: Stage name ("distill", "prune", "export", "quantize", "profile").
            config: The stage's settings (JSON-ready); part of the key.
            inputs: Digests of the stage's inputs; part of the key.
            work: Writes the stage's outputs into the directory it is given (the artifact in
                `tmp / "artifact"`) and returns a JSON-ready summary, stored in stage.json.
            organ: For the run log.
        """
        key = stage_key(stage, config, inputs)
        t0 = time.perf_counter()
        record = self.lookup(stage, key)
        status = "cached"
        if record is None:
            status = "ran"
            with atomic_dir(self.path(stage, key)) as tmp:
                summary = dict(work(tmp))
                seconds = time.perf_counter() - t0
                record = {"stage": stage, "key": key, "organ": organ, "config": dict(config), "inputs": list(inputs),
                          "seconds": round(seconds, 3), "summary": summary}
                (tmp / STAGE_RECORD).write_text(json.dumps(record, indent=1, default=str) + "\n")
        seconds = time.perf_counter() - t0
        self._log({"run": self.run_id, "organ": organ, "stage": stage, "key": key, "status": status,
                   "seconds": round(seconds, 3), "stage_seconds": record["seconds"],
                   "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        return StageResult(stage, key, self.path(stage, key), record, status, seconds)

    def _log(self, row: Mapping[str, Any]) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self, *, run_id: str | None = None) -> list[dict[str, Any]]:
        """The run log's rows (of one run when `run_id` is given)."""
        if not self.log_path.exists():
            return []
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if run_id is None or r["run"] == run_id]

    def write_json(self, name: str, data: Any) -> Path:
        """Write a JSON file under the run directory atomically."""
        target = self.root / name
        with atomic_file(target) as tmp:
            tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
        return target
