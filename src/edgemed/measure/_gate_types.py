"""What the gate measures and records: `Measurement` and the identities of the bundle and scan it ran on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgemed.measure._stats import normalise
from edgemed.measure._workload import WorkloadSpec
from edgemed.measure._timing import Percentiles

__all__ = ["BundleIdentity", "GateInputs", "Measurement", "ScanIdentity", "volume_sha256"]


@dataclass(frozen=True)
class BundleIdentity:
    """Which bundle was measured, and which task it solves.

    Two versions of one model (retrained, pruned, quantized) differ in `digest` but share the
    task: organs with their label ids, label map and modality. A baseline gates only bundles of
    its own task.

    Attributes:
        name: The bundle directory's name.
        digest: The manifest digest (sha256 over its files).
        precision: "fp32", "fp16" or "int8".
        organs: (name, label id) per organ.
        label_map: The label map the ids come from.
        modality: "CT" or "MR".
    """

    name: str
    digest: str
    precision: str
    organs: tuple[tuple[str, int], ...]
    label_map: str
    modality: str

    @classmethod
    def of(cls, bundle: Any) -> "BundleIdentity":
        """The identity of an opened bundle (`OnnxBundle` or `EngineBundle`)."""
        return cls(name=bundle.path.name, digest=bundle.manifest.digest, precision=bundle.precision,
                   organs=tuple((o.name, int(o.label_id)) for o in bundle.organs), label_map=bundle.label_map,
                   modality=bundle.preprocess.modality)

    def task(self) -> dict[str, Any]:
        """The fields a baseline must share with a candidate."""
        return {"organs": [list(o) for o in self.organs], "label_map": self.label_map, "modality": self.modality}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "digest": self.digest, "precision": self.precision, **self.task()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "BundleIdentity":
        """Inverse of `to_json` (KeyError/TypeError/ValueError on malformed input)."""
        return cls(name=str(raw["name"]), digest=str(raw["digest"]), precision=str(raw["precision"]),
                   organs=tuple((str(n), int(i)) for n, i in raw["organs"]), label_map=str(raw["label_map"]),
                   modality=str(raw["modality"]))


@dataclass(frozen=True)
class ScanIdentity:
    """A scan (or label map) by content: where it came from and the sha256 of its voxels and affine.

    Attributes:
        source: The path given, or "phantom:..." for the built-in phantom.
        sha256: Of the array bytes, dtype, shape and affine (format-independent).
        shape: The voxel grid.
    """

    source: str
    sha256: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"source": self.source, "sha256": self.sha256, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ScanIdentity":
        """Inverse of `to_json`."""
        return cls(source=str(raw["source"]), sha256=str(raw["sha256"]), shape=tuple(int(s) for s in raw["shape"]))


@dataclass(frozen=True)
class GateInputs:
    """A scan read for measuring, with its reference label map (if any) and both identities.

    Attributes:
        volume: The scan (`edgemed.io.Volume`).
        labels: The reference label map's array on the scan's grid, or None.
        scan: The scan's identity.
        reference: The reference's identity, or None.
    """

    volume: Any
    labels: np.ndarray | None
    scan: ScanIdentity
    reference: ScanIdentity | None


def volume_sha256(array: np.ndarray, affine: np.ndarray) -> str:
    """sha256 of a volume's voxels (dtype, shape, bytes) and affine."""
    digest = hashlib.sha256()
    a = np.ascontiguousarray(array)
    digest.update(f"{a.dtype.str}{a.shape}".encode())
    digest.update(a.tobytes())
    digest.update(np.ascontiguousarray(affine, dtype=np.float64).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class Measurement:
    """One gate run of a bundle on a scan: paired timings, memory, masks and Dice.

    Attributes:
        bundle: The bundle measured.
        scan: The scan it segmented.
        reference: The reference label map Dice was measured against, or None.
        backend: The backend it ran on.
        threads: Backend threads.
        workload: The reference workload timed beside it.
        clock: The series the gate compares: "cpu" (process CPU time: immune to the waits of a
            time-shared machine; used with one thread on a CPU backend) or "wall".
        candidate_ms: Wall-clock `segment` times of the timed repeats (the latency reported).
        reference_ms: The reference workload's wall-clock times, paired with `candidate_ms`.
        candidate_cpu_ms: Process CPU time of the same `segment` calls.
        reference_cpu_ms: Process CPU time of the same reference calls.
        stages_ms: Median preprocess / inference / postprocess times inside `segment`.
        peak_memory_bytes: Peak resident memory the bundle added while loading and segmenting, or
            None where it cannot be measured.
        memory_method: "vmhwm" (Linux peak RSS, reset before loading) or "ru_maxrss" (the whole
            process's high-water mark; not comparable between runs in one process).
        dice: Dice per organ vs `reference` (empty without one).
        mask: The label map `segment` returned (from the first call; every call gives the same).
        host: CPU, cores, platform and versions (`edgemed.profiles.host_facts`).
        config: The `GateConfig` it ran with, as JSON.
        created_utc: When it was measured (ISO 8601).
        wall_s: How long the measurement took.
        reference_labels: The reference label map's array (not stored in baselines).
        others_running: Before each timed pair, the tasks other than this one runnable on the
            machine (/proc/stat procs_running - 1): how much other programs competed for the CPUs.
            Empty where it could not be read (and in baselines written before it was recorded).
    """

    bundle: BundleIdentity
    scan: ScanIdentity
    reference: ScanIdentity | None
    backend: str
    threads: int
    workload: WorkloadSpec
    clock: str
    candidate_ms: tuple[float, ...]
    reference_ms: tuple[float, ...]
    candidate_cpu_ms: tuple[float, ...]
    reference_cpu_ms: tuple[float, ...]
    stages_ms: dict[str, float]
    peak_memory_bytes: int | None
    memory_method: str
    dice: dict[str, float]
    mask: np.ndarray
    host: dict[str, Any]
    config: dict[str, Any]
    created_utc: str
    wall_s: float
    reference_labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    others_running: tuple[int, ...] = ()

    @property
    def contention(self) -> float | None:
        """Mean other runnable tasks while timing (None: not recorded)."""
        return float(np.mean(self.others_running)) if self.others_running else None

    @property
    def normalised(self) -> np.ndarray:
        """Per-pair candidate / reference ratios on `clock` (the samples the gate compares)."""
        return self.normalised_on(self.clock)

    def normalised_on(self, clock: str) -> np.ndarray:
        """Per-pair candidate / reference ratios of the "cpu" or "wall" series."""
        if clock == "cpu":
            return normalise(self.candidate_cpu_ms, self.reference_cpu_ms)
        return normalise(self.candidate_ms, self.reference_ms)

    @property
    def latency(self) -> Percentiles:
        """Percentiles of the candidate's `segment` time, in ms."""
        return Percentiles.of_ms(np.asarray(self.candidate_ms))

    @property
    def reference_latency(self) -> Percentiles:
        """Percentiles of the reference workload's time, in ms (how fast the machine was)."""
        return Percentiles.of_ms(np.asarray(self.reference_ms))

    def summary_json(self) -> dict[str, Any]:
        """Everything except raw samples and the mask: what `edgemed bench --json` prints."""
        q = self.normalised
        return {
            "bundle": self.bundle.to_json(), "scan": self.scan.to_json(),
            "reference": None if self.reference is None else self.reference.to_json(),
            "backend": self.backend, "threads": self.threads, "workload": self.workload.to_json(),
            "clock": self.clock, "latency_ms": self.latency.to_json(),
            "reference_workload_ms": self.reference_latency.to_json(),
            "normalised": {"p50": round(float(np.percentile(q, 50)), 5), "p99": round(float(np.percentile(q, 99)), 5)},
            "stages_ms": {k: round(v, 3) for k, v in self.stages_ms.items()},
            "peak_memory_bytes": self.peak_memory_bytes, "memory_method": self.memory_method,
            "dice": {k: round(v, 5) for k, v in self.dice.items()},
            "host": self.host, "config": self.config, "created_utc": self.created_utc, "wall_s": round(self.wall_s, 3),
            "others_running": list(self.others_running),
        }
