"""Writing a benchmark's JSON report into benchmarks/results/ (atomically, with the host's facts)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from edgemed._atomic import atomic_file

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(out: Path, report: dict[str, Any], **host: Any) -> Path:
    """Write `report` plus "host" (this machine's facts and `host`) to `out` without a half-written file.

    Example:
        >>> write_result(RESULTS / "prune_joint.json", {"benchmark": "prune_joint"}, torch="2.13.0")
    """
    facts = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(), **host}
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps({**report, "host": facts}, indent=1) + "\n")
    return out
