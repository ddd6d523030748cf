"""`measure`: time a bundle interleaved with a reference workload, and record its memory, mask and Dice."""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.measure._gate_config import GateConfig
from edgemed.measure._gate_types import BundleIdentity, GateInputs, Measurement, ScanIdentity, volume_sha256
from edgemed.measure._workload import ONNX_BACKENDS, WorkloadSpec, open_workload, size_workload
from edgemed.errors import ConfigError, InputError

__all__ = ["PHANTOM_SOURCE", "measure", "read_inputs"]

PathLike = str | os.PathLike[str]

#: The scan used when none is given: a built-in CT phantom (its labels are the Dice reference).
PHANTOM_SOURCE = "phantom:seed=3:shape=96x80x48:spacing=4x4x5"
_PHANTOM_SEED = 3
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters


def measure(bundle: Any, *, scan: PathLike | GateInputs | None = None, reference: PathLike | None = None,
            config: GateConfig = GateConfig(), workload: WorkloadSpec | None = None) -> Measurement:
    """Measure a bundle on one scan: interleaved latency, peak memory, mask and Dice.

    The bundle's `segment` and a reference workload are timed in `config.repeats` back-to-back
    pairs (alternating which goes first) after `config.warmup` untimed ones, with Python's garbage
    collector paused. Peak memory is the growth of the process's peak RSS while the bundle is
    loaded and segments the scan once (Linux; the peak is reset first).

    Args:
        bundle: A bundle directory or an opened `OnnxBundle` / `EngineBundle`.
        scan: The scan to segment (or `GateInputs` from `read_inputs`); None: a built-in CT
            phantom (CT bundles only).
        reference: A reference label map of `scan` for Dice; with no scan, the phantom's labels.
        config: Backend, threads, repeats, warmup and the reference workload kind.
        workload: The exact reference workload (a baseline's); None: sized here to take about as
            long as one `segment` call.

    Returns:
        The measurement (its `mask` is the label map of the scan).

    Raises:
        ConfigError: A reference without a scan, a phantom for an MR bundle, or a bad backend.
        InputError: The scan or reference is missing, unreadable or not on the same grid.
        ArtifactError: Not a bundle, or a bundle file is altered.
        MissingDependencyError: The backend is not installed.

    Example:
        >>> m = measure("out/liver.edgemed", scan="ct.nii.gz", reference="seg.nii.gz")
        >>> m.latency.p50_ms, m.dice["liver"], float(np.median(m.normalised))
    """
    from edgemed import runtime
    from edgemed.measure._timing import host_facts
    from edgemed.runtime import OnnxBundle, open_bundle

    started = time.perf_counter()
    opened = open_bundle(bundle.path if isinstance(bundle, OnnxBundle) else bundle)
    identity = BundleIdentity.of(opened)
    inputs = scan if isinstance(scan, GateInputs) else read_inputs(scan, reference, identity.modality)
    backend = _backend_name(opened, config.backend)
    threads = config.threads if config.threads is not None else runtime.physical_cores()
    kind = workload.kind if workload is not None else _workload_kind(config.workload, backend)
    _import_backend(backend)
    with _steady_heap():
        run = _run(runtime, opened, inputs.volume, backend, threads, kind, workload, config)
    labels = inputs.labels
    dice = _dice(run["mask"], labels, identity.organs) if labels is not None else {}
    series = run["series"]
    return Measurement(bundle=identity, scan=inputs.scan, reference=inputs.reference, backend=backend, threads=threads,
                       workload=run["workload"], clock=run["clock"], candidate_ms=tuple(series["cand_wall"]),
                       reference_ms=tuple(series["ref_wall"]), candidate_cpu_ms=tuple(series["cand_cpu"]),
                       reference_cpu_ms=tuple(series["ref_cpu"]), stages_ms=run["stages"],
                       peak_memory_bytes=run["peak"], memory_method=run["method"], dice=dice, mask=run["mask"],
                       host=host_facts(), config=config.to_json(),
                       created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       wall_s=time.perf_counter() - started, reference_labels=labels,
                       others_running=tuple(run["others"]))


def _run(runtime: Any, opened: Any, volume: Any, backend: str, threads: int, kind: str,
         workload: WorkloadSpec | None, config: GateConfig) -> dict[str, Any]:
    """Memory probe, warm-up, reference sizing (for a new baseline) and the interleaved timing."""
    # The reference session opens first: a backend's one-time global setup is then never counted
    # as the bundle's memory, in a fresh CLI process or the hundredth run of a study alike.
    probe = open_workload(workload or WorkloadSpec(kind), backend=backend, threads=threads)
    seg = None
    try:
        probe.run()
        gc.collect()
        _return_free_memory()
        before = _rss_now()
        method = _reset_peak()
        seg = runtime.load(opened, backend=backend, threads=threads)
        mask = np.asarray(seg.segment(volume).array)
        peak = _peak_growth(method, before)
        for _ in range(max(1, config.warmup)):
            seg.segment(volume)
        if workload is None:
            probe.close()
            workload = size_workload(kind, _best_segment_ms(seg, volume), backend=backend, threads=threads)
            probe = open_workload(workload, backend=backend, threads=threads)
            probe.run()
        series, stages, others = _interleave(seg, volume, probe, config)
        return {"mask": mask, "peak": peak, "method": method, "workload": workload, "series": series,
                "stages": stages, "others": others, "clock": _clock(config.clock, threads, backend, seg.session)}
    finally:
        if seg is not None:
            seg.close()
        probe.close()


def read_inputs(scan: PathLike | None, reference: PathLike | None, modality: str) -> GateInputs:
    """The scan and reference label array with their identities (the phantom when `scan` is None).

    Raises:
        ConfigError: A reference without a scan, or the phantom for a non-CT bundle.
        InputError: A file is missing or unreadable, or the labels are not on the scan's grid.
    """
    if scan is None:
        if reference is not None:
            raise ConfigError("--reference is a label map of --scan; pass the scan it belongs to as well.")
        if modality != "CT":
            raise ConfigError(f"the built-in phantom is a CT; this bundle segments {modality} scans. "
                              "Pass one: --scan SCAN (and --reference SEG for Dice).")
        from edgemed.phantom import PhantomConfig, make_phantom

        # Pinned (not PhantomConfig's defaults): baselines name this scan and must keep meaning it.
        volume, labels = make_phantom(_PHANTOM_SEED, PhantomConfig(shape=(96, 80, 48), spacing_mm=(4.0, 4.0, 5.0)))
        return GateInputs(volume, np.asarray(labels.array), _identity(PHANTOM_SOURCE, volume),
                          _identity(PHANTOM_SOURCE + ":labels", labels))
    from edgemed.io import read_labels, read_volume

    if not Path(scan).exists():
        raise InputError(f"scan {scan} does not exist; pass a NIfTI/NRRD file or a DICOM series folder.")
    volume = read_volume(scan)
    if reference is None:
        return GateInputs(volume, None, _identity(str(scan), volume), None)
    labels = read_labels(reference, like=volume)
    return GateInputs(volume, np.asarray(labels.array), _identity(str(scan), volume), _identity(str(reference), labels))


def _identity(source: str, volume: Any) -> ScanIdentity:
    return ScanIdentity(source=source, sha256=volume_sha256(volume.array, volume.affine),
                        shape=tuple(int(s) for s in volume.shape))


def _backend_name(opened: Any, requested: str) -> str:
    """The backend `runtime.load` will use for this bundle (resolved before loading, for the memory probe)."""
    from edgemed.runtime import EngineBundle
    from edgemed.runtime.backends import resolve_backend

    if isinstance(opened, EngineBundle):
        return "trt"
    preferred = opened.meta.preferred_backend
    return resolve_backend(requested, prefer=None if preferred == "trt" else preferred)


def _workload_kind(requested: str, backend: str) -> str:
    if requested == "auto":
        return "conv" if backend in ONNX_BACKENDS else "matmul"
    if requested == "conv" and backend not in ONNX_BACKENDS:
        raise ConfigError(f"the 'conv' reference workload needs an ONNX backend; {backend!r} is not one. "
                          "Use --workload matmul (or auto).")
    return requested


def _import_backend(backend: str) -> None:
    """Import the backend's library and session module now, so their memory is not the bundle's."""
    from edgemed.runtime.backends import BACKENDS

    info = BACKENDS.get(backend)
    if info is None:
        return  # runtime.load names the backends it knows
    try:
        importlib.import_module(info.library)
        importlib.import_module(info.session.partition(":")[0])
    except ImportError:
        pass  # runtime.load raises MissingDependencyError with the pip extra to install


def _best_segment_ms(seg: Any, volume: Any, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        seg.segment(volume)
        best = min(best, (time.perf_counter_ns() - t0) / 1e6)
    return best


def _interleave(seg: Any, volume: Any, workload: Any, config: GateConfig) -> tuple[dict[str, list[float]],
                                                                                 dict[str, float], list[int]]:
    """Timed pairs: wall and process-CPU time of each candidate and reference call, in ms; and before
    each timed pair, the other tasks runnable on the machine (this thread is the one task of ours
    running while it reads /proc/stat: the backend's threads wait passively)."""
    from edgemed._threads import runnable_tasks

    others: list[int] = []
    series: dict[str, list[float]] = {"cand_wall": [], "cand_cpu": [], "ref_wall": [], "ref_cpu": []}
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call would land on one side of a pair only
    try:
        for i in range(config.warmup + config.repeats):
            row = {}
            running = runnable_tasks() if i >= config.warmup else None
            if running is not None:
                others.append(max(0, running - 1))
            # Alternate the order: whichever runs second meets caches the first one left behind.
            for who in (("cand", "ref") if i % 2 == 0 else ("ref", "cand")):
                w0, c0 = time.perf_counter_ns(), time.process_time_ns()
                if who == "cand":
                    seg.segment(volume)
                else:
                    workload.run()
                c1, w1 = time.process_time_ns(), time.perf_counter_ns()
                row[f"{who}_wall"], row[f"{who}_cpu"] = (w1 - w0) / 1e6, (c1 - c0) / 1e6
            if i < config.warmup:
                continue
            for key, value in row.items():
                series[key].append(value)
            tm = seg.last_timings
            stages["preprocess"].append(tm.preprocess_ms)
            stages["inference"].append(tm.inference_ms)
            stages["postprocess"].append(tm.postprocess_ms)
    finally:
        if gc_was_enabled:
            gc.enable()
    return series, {k: float(np.median(v)) for k, v in stages.items()}, others


def _clock(requested: str, threads: int, backend: str, session: Any) -> str:
    """The clock to compare on: "cpu" (process CPU time) where that is all the work — one thread on a
    CPU backend — else "wall" (GPU work and waiting thread pools are not CPU time)."""
    if requested != "auto":
        return requested
    on_cpu = backend == "openvino" or (backend == "ort" and
                                       tuple(getattr(session, "providers", ()))[:1] == ("CPUExecutionProvider",))
    return "cpu" if threads == 1 and on_cpu else "wall"


def _dice(mask: np.ndarray, labels: np.ndarray, organs: tuple[tuple[str, int], ...]) -> dict[str, float]:
    from edgemed.metrics import dice

    return {name: float(dice(mask == label_id, labels == label_id)) for name, label_id in organs}


# --- peak memory: Linux resets the peak RSS on request (/proc/self/clear_refs, "5") ----------------------

def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_now() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


@contextlib.contextmanager
def _steady_heap() -> Iterator[None]:
    """glibc: serve every allocation from the heap and keep freed memory, while measuring.

    By default glibc maps large arrays afresh (and unmaps them on free) until its adaptive
    thresholds have seen enough frees, so how many page faults a `segment` call pays — 10-15 %
    of a small model's time — depends on what the process did before. A fixed heap makes the
    first run in a fresh CLI process time like the hundredth run in a study. Restored afterwards.
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 65536)  # glibc's defaults
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)


def _glibc() -> Any:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both exist on glibc only)
    except (OSError, AttributeError):  # macOS, musl, Windows
        return None
    return libc


def _return_free_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc), so this run's growth is its own.

    Without it, a bundle loaded in a process that already loaded one reuses the freed heap and
    seems to need no memory at all; with it, repeated runs in one process measure like fresh ones.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _reset_peak() -> str:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return "ru_maxrss"
    return "vmhwm" if _status_kib("VmHWM") is not None else "ru_maxrss"


def _peak_growth(method: str, before: int | None) -> int | None:
    if method == "vmhwm" and before is not None:
        hwm = _status_kib("VmHWM")
        return None if hwm is None else max(0, hwm * 1024 - before)
    from edgemed.measure._timing import peak_rss_bytes

    return peak_rss_bytes()
