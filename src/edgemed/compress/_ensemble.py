"""Average students that were distilled separately into one ensemble student (one network, one ONNX graph)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from edgemed.artifacts import STUDENT_KIND, StudentCheckpoint, TrainingRecord, ValidationRecord, write_artifact
from edgemed.errors import ConfigError

__all__ = ["ensemble_students"]


def ensemble_students(students: Sequence[StudentCheckpoint | str | os.PathLike[str]],
                      out: str | os.PathLike[str], *, overwrite: bool = False) -> StudentCheckpoint:
    """Combine students of the same organ(s), architecture and preprocessing into one ensemble student.

    The result averages the members' probabilities, exactly as `DistillConfig(ensemble=N)` does:
    distilling with `ensemble=2, seed=s` trains the same two networks as two runs with seeds s
    and s+1, so separately trained students can be pooled later (or on several machines).

    Raises:
        ConfigError: Fewer than two students, or students that do not agree on organs, label
            map, architecture or preprocessing (they would not average to anything meaningful).
        OutputError: `out` holds something other than a student (or one, without `overwrite`).
    """
    from edgemed.artifacts import check_output
    from edgemed.models import Ensemble, StudentSpec, load_student, student_payload

    check_output(out, kind=STUDENT_KIND, overwrite=overwrite,
                 inputs=[s.path if isinstance(s, StudentCheckpoint) else s for s in students])
    ckpts = [s if isinstance(s, StudentCheckpoint) else StudentCheckpoint.load(s) for s in students]
    if len(ckpts) < 2:
        raise ConfigError(f"an ensemble needs at least 2 students, got {len(ckpts)}.")
    first = ckpts[0]
    for other in ckpts[1:]:
        for key in ("organs", "label_map", "preprocess"):
            if getattr(other.meta, key) != getattr(first.meta, key):
                raise ConfigError(f"{other.path} and {first.path} differ in {key}; only students of the same organs, "
                                  "label map and preprocessing can be averaged.")
        if {k: v for k, v in other.architecture.items() if k != "members"} != \
                {k: v for k, v in first.architecture.items() if k != "members"}:
            raise ConfigError(f"{other.path} and {first.path} have different architectures; distill the members "
                              "with the same --student and --widths.")
    nets = []
    for ckpt in ckpts:
        net = load_student(ckpt)
        nets.extend(net.members if isinstance(net, Ensemble) else [net])
    spec = StudentSpec.from_json({**first.architecture, "members": len(nets)})
    ensemble = Ensemble(nets).eval()
    metadata = first.meta.with_(
        training=TrainingRecord(
            members=len(nets), member_seeds=[c.meta.training.seed for c in ckpts],
            member_validation=[dict(c.meta.validation.dice) for c in ckpts],
            parameters=int(sum(p.numel() for p in ensemble.parameters())),
            seconds=round(sum(float(c.meta.training.seconds or 0.0) for c in ckpts), 1),
            extra={"combined_from": [c.manifest.digest for c in ckpts]}),
        validation=ValidationRecord(holdout="see each member's validation (member_validation)"))
    payload = student_payload(ensemble, spec)
    payload["history.json"] = (json.dumps([], indent=1) + "\n").encode()
    write_artifact(out, kind=STUDENT_KIND, schema_version=first.manifest.schema_version, payload=payload,
                   metadata=metadata.to_json(), parent=first.manifest.parent, overwrite=overwrite)
    return StudentCheckpoint.load(out)
