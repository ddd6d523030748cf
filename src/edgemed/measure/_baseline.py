"""Baselines: a `Measurement` stored as one JSON file (samples, mask, identities), written atomically."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._atomic import atomic_file
from edgemed.measure._gate_types import BundleIdentity, Measurement, ScanIdentity
from edgemed.measure._workload import WorkloadSpec
from edgemed.errors import ArtifactError, InputError

__all__ = ["BASELINE_KIND", "BASELINE_SCHEMA", "decode_mask", "encode_mask", "load_baseline", "save_baseline"]

BASELINE_KIND = "edgemed-gate-baseline"
BASELINE_SCHEMA = 1
_DECIMALS = 4  # samples in ms to 0.1 µs


def save_baseline(measurement: Measurement, path: str | os.PathLike[str]) -> Path:
    """Write a measurement as a baseline JSON file, atomically (a crash leaves the old file intact).

    The file holds the summary `edgemed bench --json` prints, every paired sample (wall and CPU
    clocks) and the label map the bundle produced (zlib + base64; Dice against any later
    reference can be computed from it).

    Returns:
        The path written.
    """
    from edgemed import __version__

    raw = {"kind": BASELINE_KIND, "schema_version": BASELINE_SCHEMA, "edgemed_version": __version__,
           **measurement.summary_json(),
           "samples": {"wall": {"candidate_ms": _rounded(measurement.candidate_ms),
                                "reference_ms": _rounded(measurement.reference_ms)},
                       "cpu": {"candidate_ms": _rounded(measurement.candidate_cpu_ms),
                               "reference_ms": _rounded(measurement.reference_cpu_ms)}},
           "mask": encode_mask(measurement.mask)}
    target = Path(path)
    with atomic_file(target) as tmp:
        tmp.write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    return target


def load_baseline(path: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = None) -> Measurement:
    """Read a baseline written by `save_baseline` (or `edgemed check --update-baseline`).

    Args:
        path: The baseline JSON file.
        bundle: The bundle being gated, named in the command the error messages suggest.

    Raises:
        InputError: The file does not exist (says how to create it) or is not JSON.
        ArtifactError: Not a baseline, a schema this edgemed does not read, or damaged fields.
    """
    source = Path(path)
    create = f"edgemed check {bundle or 'BUNDLE'} --baseline {source} --update-baseline"
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise InputError(f"no baseline at {source}. Create it from a build you trust, then commit it: "
                         f"{create}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the baseline {source} ({err}).") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{source} is not valid JSON ({err}); restore it from version control or re-create it: "
                         f"{create}") from err
    if not isinstance(raw, dict) or raw.get("kind") != BASELINE_KIND:
        kind = raw.get("kind") if isinstance(raw, dict) else None
        raise ArtifactError(f"{source} is not an edgemed gate baseline (kind {kind!r}); re-create it: {create}")
    if raw.get("schema_version") != BASELINE_SCHEMA:
        raise ArtifactError(f"{source} has baseline schema {raw.get('schema_version')}; this edgemed reads "
                            f"{BASELINE_SCHEMA}. Re-create it with this edgemed: {create}")
    try:
        return _measurement(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ArtifactError(f"{source} is damaged ({type(err).__name__}: {err}); re-create it: {create}") from err


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A label map as JSON: shape, dtype, sha256 and zlib-compressed bytes in base64."""
    a = np.ascontiguousarray(mask)
    data = a.tobytes()
    return {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": hashlib.sha256(data).hexdigest(),
            "zlib_base64": base64.b64encode(zlib.compress(data, 9)).decode("ascii")}


def decode_mask(raw: dict[str, Any]) -> np.ndarray:
    """Inverse of `encode_mask`, checking the sha256.

    Raises:
        ArtifactError: The bytes do not decode or their sha256 differs from the recorded one.
    """
    try:
        data = zlib.decompress(base64.b64decode(raw["zlib_base64"]))
    except (zlib.error, ValueError) as err:
        raise ArtifactError(f"the baseline's mask does not decode ({err}); re-create the baseline.") from err
    if hashlib.sha256(data).hexdigest() != raw["sha256"]:
        raise ArtifactError("the baseline's mask was altered (sha256 differs); re-create the baseline.")
    return np.frombuffer(data, dtype=np.dtype(raw["dtype"])).reshape(tuple(raw["shape"])).copy()


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(float(v), _DECIMALS) for v in values]


def _measurement(raw: dict[str, Any]) -> Measurement:
    samples = raw["samples"]
    wall, cpu = samples["wall"], samples["cpu"]
    lengths = {len(wall["candidate_ms"]), len(wall["reference_ms"]), len(cpu["candidate_ms"]), len(cpu["reference_ms"])}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"sample series of different or zero lengths {sorted(lengths)}")
    reference = raw.get("reference")
    return Measurement(
        bundle=BundleIdentity.from_json(raw["bundle"]), scan=ScanIdentity.from_json(raw["scan"]),
        reference=None if reference is None else ScanIdentity.from_json(reference), backend=str(raw["backend"]),
        threads=int(raw["threads"]), workload=WorkloadSpec.from_json(raw["workload"]), clock=str(raw["clock"]),
        candidate_ms=tuple(float(v) for v in wall["candidate_ms"]),
        reference_ms=tuple(float(v) for v in wall["reference_ms"]),
        candidate_cpu_ms=tuple(float(v) for v in cpu["candidate_ms"]),
        reference_cpu_ms=tuple(float(v) for v in cpu["reference_ms"]),
        stages_ms={str(k): float(v) for k, v in raw.get("stages_ms", {}).items()},
        peak_memory_bytes=None if raw.get("peak_memory_bytes") is None else int(raw["peak_memory_bytes"]),
        memory_method=str(raw.get("memory_method", "")),
        dice={str(k): float(v) for k, v in raw.get("dice", {}).items()},
        mask=decode_mask(raw["mask"]), host=dict(raw.get("host", {})), config=dict(raw.get("config", {})),
        created_utc=str(raw.get("created_utc", "")), wall_s=float(raw.get("wall_s", 0.0)),
        others_running=tuple(int(v) for v in raw.get("others_running", ())))
