"""What each torchrun process runs in tests/compress/test_distributed.py: one edgemed call described by a JSON file.

    python -m torch.distributed.run --standalone --nproc_per_node 2 _dist_worker.py job.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    from edgemed.compress import TeacherStoreConfig, config_from_dict, distill, precompute_teacher
    from edgemed.models.teachers import StoredPredictions

    if job["action"] == "distill":
        distill(job["scans"], config_from_dict(job["config"]), job["out"], progress=False,
                teacher_predictions=job.get("teacher_predictions"), teacher_store=job.get("teacher_store"),
                resume=job.get("resume", False))
    elif job["action"] == "precompute":
        teacher = StoredPredictions(zip(job["scans"], job["teacher_predictions"]))
        precompute_teacher(job["scans"], teacher, job["out"], TeacherStoreConfig(**job["config"]), progress=False)
    elif job["action"] == "qat":
        from edgemed.compress import NncfQatConfig, quantize

        quantize(job["bundle"], job["scans"], NncfQatConfig(student=job["student"], **job["config"]), job["out"],
                 timing_repeats=1)
    else:
        raise SystemExit(f"unknown action {job['action']!r}")


if __name__ == "__main__":
    main()
