"""A writer killed (SIGKILL) at random points leaves the old artifact or the new one, never a broken one."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgemed.artifacts import read_manifest

# The child rewrites one artifact directory and one JSON report over and over, each version a few
# MB of payload whose content is tied to the version in the manifest and in the report.
_CHILD = r"""
import json, os, sys
from pathlib import Path
from edgemed._atomic import atomic_file
from edgemed.artifacts import write_artifact
target, report = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
version = int(sys.argv[3])
while True:
    version += 1
    blob = version.to_bytes(8, "little") * (3 << 17)   # 3 MiB
    write_artifact(target, kind="student", schema_version=1, metadata={"version": version}, overwrite=True,
                   payload={"weights.bin": blob, "version.json": json.dumps({"version": version}).encode()})
    with atomic_file(report) as tmp:
        tmp.write_text(json.dumps({"version": version, "pad": "x" * 200_000}))
"""


def _check(target: Path, report: Path) -> int:
    manifest = read_manifest(target)  # every file present and matching its sha256
    version = int(manifest.metadata["version"])
    assert json.loads((target / "version.json").read_text())["version"] == version
    assert (target / "weights.bin").read_bytes()[:8] == version.to_bytes(8, "little")
    assert json.loads(report.read_text())["version"] >= 0  # complete JSON
    return version


def test_sigkill_at_random_points_never_leaves_a_broken_artifact(tmp_path: Path) -> None:
    target, report = tmp_path / "student", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = random.Random(8)
    version, kills, progressed = 0, 20, 0
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(target), str(report), str(version)],
                                 stdout=subprocess.PIPE, env=env)
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.02, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if version == 0 and not target.exists():
            continue  # killed before the very first version was complete: nothing old to keep
        new = _check(target, report)
        progressed += new > version
        version = new
    assert progressed >= kills // 2, "most children should have completed at least one version before the kill"
    # The next write cleans up what killed writers left beside the artifact.
    from edgemed.artifacts import atomic_file, write_artifact

    with atomic_file(report) as tmp:  # removes the temporary files of killed report writers
        tmp.write_text(json.dumps({"version": version + 1}))
    write_artifact(target, kind="student", schema_version=1, metadata={"version": version + 1}, overwrite=True,
                   payload={"weights.bin": b"", "version.json": json.dumps({"version": version + 1}).encode()})
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith((".student.", ".report.json."))]
    assert leftovers == []
    assert read_manifest(target).metadata["version"] == version + 1
