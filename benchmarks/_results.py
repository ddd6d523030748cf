"""Writing a benchmark's JSON report into benchmarks/results/ (atomically, with the host's facts)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from edgemed._atomic import atomic_file

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, report: dict[str, Any]) -> Path:
    """Write `report` (plus "host") to benchmarks/results/NAME.json without a half-written file."""
    out = RESULTS / f"{name}.json"
    host = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    with atomic_file(out) as tmp:
        tmp.write_text(json.dumps({**report, "host": host}, indent=1) + "\n")
    return out
