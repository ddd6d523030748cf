"""Hardware target profiles as typed data: built-in Jetsons, GPUs and CPUs, user TOML, the host (no torch).

Every figure carries its public source. Peak compute is *dense* (no 2:4 sparsity): NVIDIA's
headline "TOPS" for Jetson modules are sparse INT8 and include the DLAs; where a datasheet gives
only those, the GPU's dense figure is derived from SMs x ops per clock x clock and the source
says so.
"""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import ConfigError

__all__ = ["Accelerator", "BUILTIN_TARGETS", "Precision", "TargetProfile", "get_profile", "list_profiles",
           "load_profiles_toml"]


class Precision(str, enum.Enum):
    """Arithmetic precisions a target runs (and a model is built in)."""

    FP32 = "fp32"
    TF32 = "tf32"
    FP16 = "fp16"
    INT8 = "int8"


class Accelerator(str, enum.Enum):
    """What executes the model: a GPU (CUDA / TensorRT) or the CPU."""

    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetProfile:
    """One hardware target.

    Attributes:
        id: Kebab-case key, e.g. "jetson-orin-nano-8gb".
        name: Marketing name.
        accelerator: GPU or CPU.
        peak_tops: Dense peak per precision in tera-ops/s (1 MAC = 2 ops); FP16/INT8 on GPUs are
            tensor-core rates.
        memory_bandwidth_gbs: DRAM bandwidth, GB/s.
        memory_mib: Memory available to the model (shared with the CPU on Jetsons).
        precisions: What the target runs.
        compute_capability: CUDA (major, minor); None for CPUs.
        dla_cores: Deep-learning accelerators beside the GPU (Jetson).
        jetpack: JetPack release the profile assumes (Jetson), else None.
        tensorrt: TensorRT version that ships with it (or the one the figures assume).
        preferred_backend: "trt", "openvino" or "ort".
        latency_budget_ms: A typical per-volume budget for this class of device.
        sources: Field → where the figure comes from (URL and, when derived, how).
    """

    id: str
    name: str
    accelerator: Accelerator
    peak_tops: Mapping[Precision, float]
    memory_bandwidth_gbs: float
    memory_mib: int
    precisions: frozenset[Precision]
    compute_capability: tuple[int, int] | None = None
    dla_cores: int = 0
    jetpack: str | None = None
    tensorrt: str | None = None
    preferred_backend: str = "ort"
    latency_budget_ms: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id or self.id != self.id.lower() or " " in self.id:
            raise ConfigError(f"profile id {self.id!r} must be kebab-case, e.g. 'jetson-orin-nano-8gb'.")
        peaks = {Precision(k): float(v) for k, v in dict(self.peak_tops).items()}
        object.__setattr__(self, "peak_tops", peaks)
        object.__setattr__(self, "accelerator", Accelerator(self.accelerator))
        object.__setattr__(self, "precisions", frozenset(Precision(p) for p in self.precisions))
        missing = [p.value for p in self.precisions if p not in peaks]
        if missing:
            raise ConfigError(f"profile {self.id}: no peak_tops for {', '.join(missing)}; give one per precision.")
        if any(v <= 0 for v in peaks.values()) or self.memory_bandwidth_gbs <= 0 or self.memory_mib <= 0:
            raise ConfigError(f"profile {self.id}: peaks, memory_bandwidth_gbs and memory_mib must be > 0.")
        if self.preferred_backend not in ("trt", "openvino", "ort"):
            raise ConfigError(f"profile {self.id}: preferred_backend={self.preferred_backend!r}; use trt, openvino "
                              "or ort.")
        if self.compute_capability is not None:
            object.__setattr__(self, "compute_capability", tuple(int(v) for v in self.compute_capability))

    def peak_ops(self, precision: Precision | str) -> float:
        """Dense peak in ops/s for `precision`, falling back to the next wider precision it runs."""
        p = Precision(precision)
        for candidate in (p, Precision.FP16, Precision.TF32, Precision.FP32):
            if candidate in self.peak_tops and (candidate == p or candidate in self.precisions):
                return self.peak_tops[candidate] * 1e12
        raise ConfigError(f"profile {self.id} has no peak for {p.value} or a wider precision.")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"id": self.id, "name": self.name, "accelerator": self.accelerator.value,
                "peak_tops": {p.value: v for p, v in self.peak_tops.items()},
                "memory_bandwidth_gbs": self.memory_bandwidth_gbs, "memory_mib": self.memory_mib,
                "precisions": sorted(p.value for p in self.precisions),
                "compute_capability": list(self.compute_capability) if self.compute_capability else None,
                "dla_cores": self.dla_cores, "jetpack": self.jetpack, "tensorrt": self.tensorrt,
                "preferred_backend": self.preferred_backend, "latency_budget_ms": self.latency_budget_ms,
                "sources": dict(self.sources)}


_FP, _TF, _H, _I8 = Precision.FP32, Precision.TF32, Precision.FP16, Precision.INT8
_JETSON = "https://developer.nvidia.com/embedded/jetson-modules"
_ORIN_SM = ("Orin GPU (Ampere GA10B): per SM 128 CUDA cores, 4 tensor cores = 2048 FP16 / 4096 INT8 dense ops "
            "per clock; dense peak = SMs x ops/clk x GPU clock (NVIDIA Jetson Orin technical brief)")

JETSON_ORIN_NANO_8GB = TargetProfile(
    id="jetson-orin-nano-8gb", name="Jetson Orin Nano 8GB (Super, 25 W)", accelerator=Accelerator.GPU,
    # 8 SMs at 1020 MHz: 8 x 4096 x 1.02e9 = 33.4 dense INT8 TOPS (NVIDIA: 67 sparse TOPS).
    peak_tops={_FP: 2.09, _H: 16.7, _I8: 33.4}, memory_bandwidth_gbs=102.0, memory_mib=7_620,
    precisions=frozenset({_FP, _H, _I8}), compute_capability=(8, 7), dla_cores=0, jetpack="6.2", tensorrt="10.3",
    preferred_backend="trt", latency_budget_ms=2000.0,
    sources={"peak_tops": f"{_JETSON} (67 sparse INT8 TOPS, 1024 CUDA cores, 1020 MHz); {_ORIN_SM}",
             "memory_bandwidth_gbs": f"{_JETSON} (102 GB/s LPDDR5, Super)", "jetpack": "JetPack 6.2 release notes"})

JETSON_ORIN_NX_16GB = TargetProfile(
    id="jetson-orin-nx-16gb", name="Jetson Orin NX 16GB (25 W)", accelerator=Accelerator.GPU,
    # 8 SMs at 918 MHz: 8 x 4096 x 0.918e9 = 30.1 dense INT8 TOPS on the GPU; 2 DLA v2 beside it.
    peak_tops={_FP: 1.88, _H: 15.0, _I8: 30.1}, memory_bandwidth_gbs=102.4, memory_mib=15_380,
    precisions=frozenset({_FP, _H, _I8}), compute_capability=(8, 7), dla_cores=2, jetpack="6.2", tensorrt="10.3",
    preferred_backend="trt", latency_budget_ms=1500.0,
    sources={"peak_tops": f"{_JETSON} (100 sparse INT8 TOPS incl. 2 DLA, 1024 CUDA cores, 918 MHz); {_ORIN_SM}",
             "memory_bandwidth_gbs": f"{_JETSON} (102.4 GB/s)", "dla_cores": _JETSON})

JETSON_AGX_ORIN_64GB = TargetProfile(
    id="jetson-agx-orin-64gb", name="Jetson AGX Orin 64GB (60 W)", accelerator=Accelerator.GPU,
    # 16 SMs at 1.3 GHz: 16 x 4096 x 1.3e9 = 85.2 dense INT8 TOPS (NVIDIA: 170 sparse GPU TOPS).
    peak_tops={_FP: 5.32, _H: 42.6, _I8: 85.2}, memory_bandwidth_gbs=204.8, memory_mib=62_800,
    precisions=frozenset({_FP, _H, _I8}), compute_capability=(8, 7), dla_cores=2, jetpack="6.2", tensorrt="10.3",
    preferred_backend="trt", latency_budget_ms=500.0,
    sources={"peak_tops": f"{_JETSON} (275 sparse INT8 TOPS incl. DLA; 2048 CUDA cores, 1.3 GHz); {_ORIN_SM}",
             "memory_bandwidth_gbs": f"{_JETSON} (204.8 GB/s)", "dla_cores": _JETSON})

JETSON_XAVIER_NX = TargetProfile(
    id="jetson-xavier-nx", name="Jetson Xavier NX 8GB (20 W)", accelerator=Accelerator.GPU,
    # Volta: 6 SMs x 8 tensor cores x 64 FMA x 2 x 1.1 GHz = 6.8 FP16 TFLOPS; INT8 = 2 x FP16 on Xavier's GPU.
    peak_tops={_FP: 0.85, _H: 6.8, _I8: 13.5}, memory_bandwidth_gbs=59.7, memory_mib=7_600,
    precisions=frozenset({_FP, _H, _I8}), compute_capability=(7, 2), dla_cores=2, jetpack="5.1.3", tensorrt="8.5",
    preferred_backend="trt", latency_budget_ms=3000.0,
    sources={"peak_tops": f"{_JETSON} (21 INT8 TOPS incl. 2 DLA; 384 CUDA cores, 48 tensor cores, 1.1 GHz)",
             "memory_bandwidth_gbs": f"{_JETSON} (59.7 GB/s)", "jetpack": "JetPack 5.1.3 is Xavier's last"})

RTX_4090 = TargetProfile(
    id="rtx-4090", name="GeForce RTX 4090", accelerator=Accelerator.GPU,
    peak_tops={_FP: 82.6, _H: 165.2, _I8: 660.6}, memory_bandwidth_gbs=1008.0, memory_mib=24_564,
    precisions=frozenset({_FP, _H, _I8}), compute_capability=(8, 9), tensorrt="10.x", preferred_backend="trt",
    latency_budget_ms=100.0,
    sources={"peak_tops": "NVIDIA Ada Lovelace architecture whitepaper v2.1, table 2 (FP16 w/ FP32 accumulate "
                          "165.2, INT8 660.6 dense TOPS)", "memory_bandwidth_gbs": "same whitepaper (1008 GB/s)"})

A100_SXM_80GB = TargetProfile(
    id="a100", name="A100 SXM4 80GB", accelerator=Accelerator.GPU,
    peak_tops={_FP: 19.5, _TF: 156.0, _H: 312.0, _I8: 624.0}, memory_bandwidth_gbs=2039.0, memory_mib=81_920,
    precisions=frozenset({_FP, _TF, _H, _I8}), compute_capability=(8, 0), tensorrt="10.x", preferred_backend="trt",
    latency_budget_ms=100.0,
    sources={"peak_tops": "https://www.nvidia.com/en-us/data-center/a100/ (dense figures)",
             "memory_bandwidth_gbs": "same page (2039 GB/s, 80GB SXM)"})

H100_SXM = TargetProfile(
    id="h100", name="H100 SXM5 80GB", accelerator=Accelerator.GPU,
    peak_tops={_FP: 67.0, _TF: 494.7, _H: 989.4, _I8: 1978.9}, memory_bandwidth_gbs=3350.0, memory_mib=81_920,
    precisions=frozenset({_FP, _TF, _H, _I8}), compute_capability=(9, 0), tensorrt="10.x", preferred_backend="trt",
    latency_budget_ms=100.0,
    sources={"peak_tops": "https://www.nvidia.com/en-us/data-center/h100/ (datasheet sparse figures halved)",
             "memory_bandwidth_gbs": "same page (3.35 TB/s)"})

H200_SXM = TargetProfile(
    id="h200", name="H200 SXM 141GB", accelerator=Accelerator.GPU,
    peak_tops={_FP: 67.0, _TF: 494.7, _H: 989.4, _I8: 1978.9}, memory_bandwidth_gbs=4800.0, memory_mib=144_384,
    precisions=frozenset({_FP, _TF, _H, _I8}), compute_capability=(9, 0), tensorrt="10.x", preferred_backend="trt",
    latency_budget_ms=100.0,
    sources={"peak_tops": "https://www.nvidia.com/en-us/data-center/h200/ (datasheet sparse figures halved; "
                          "same Hopper GPU as H100 SXM)", "memory_bandwidth_gbs": "same page (4.8 TB/s)"})

X86_AVX2_8C = TargetProfile(
    id="x86-avx2-8c", name="x86-64, 8 cores with AVX2/FMA at 3.0 GHz", accelerator=Accelerator.CPU,
    # 2 FMA units x 8 fp32 lanes x 2 ops x 8 cores x 3.0 GHz; INT8 via vpmaddubsw ~2x fp32 throughput.
    peak_tops={_FP: 0.768, _I8: 1.536}, memory_bandwidth_gbs=51.2, memory_mib=16_384,
    precisions=frozenset({_FP, _I8}), preferred_backend="openvino", latency_budget_ms=3000.0,
    sources={"peak_tops": "derived: cores x clock x 2 FMA ports x 8 lanes x 2 (Intel optimization manual, AVX2)",
             "memory_bandwidth_gbs": "dual-channel DDR4-3200"})

X86_AVX512_VNNI_16C = TargetProfile(
    id="x86-avx512-vnni-16c", name="x86-64, 16 cores with AVX-512 VNNI at 2.5 GHz", accelerator=Accelerator.CPU,
    # 2 FMA x 16 lanes x 2 x 16 cores x 2.5 GHz = 2.56 TFLOPS; VNNI vpdpbusd: 4 int8 MACs per fp32 lane → 4x.
    peak_tops={_FP: 2.56, _I8: 10.24}, memory_bandwidth_gbs=153.6, memory_mib=65_536,
    precisions=frozenset({_FP, _I8}), preferred_backend="openvino", latency_budget_ms=1500.0,
    sources={"peak_tops": "derived: cores x clock x 2 FMA ports x 16 lanes x 2; VNNI 4x (Intel DL Boost brief)",
             "memory_bandwidth_gbs": "6-channel DDR4-3200"})

ARM_CORTEX_A78AE_12C = TargetProfile(
    id="arm-cortex-a78ae-12c", name="Arm Cortex-A78AE x12 at 2.2 GHz (Jetson AGX Orin CPU)",
    accelerator=Accelerator.CPU,
    # 2 x 128-bit NEON FMA pipes: 16 fp32 ops/clk/core; sdot/udot: 4x for int8.
    peak_tops={_FP: 0.422, _I8: 1.69}, memory_bandwidth_gbs=204.8, memory_mib=62_800,
    precisions=frozenset({_FP, _I8}), preferred_backend="ort", latency_budget_ms=5000.0,
    sources={"peak_tops": "derived: 12 cores x 2.2 GHz x 16 fp32 ops/clk (Arm Cortex-A78AE TRM: 2 NEON FMA "
                          "pipes); int8 dot product 4x", "memory_bandwidth_gbs": f"{_JETSON} (AGX Orin 64GB)"})

BUILTIN_TARGETS: dict[str, TargetProfile] = {p.id: p for p in (
    JETSON_ORIN_NANO_8GB, JETSON_ORIN_NX_16GB, JETSON_AGX_ORIN_64GB, JETSON_XAVIER_NX, RTX_4090, A100_SXM_80GB,
    H100_SXM, H200_SXM, X86_AVX2_8C, X86_AVX512_VNNI_16C, ARM_CORTEX_A78AE_12C)}


def load_profiles_toml(path: str | os.PathLike[str]) -> dict[str, TargetProfile]:
    """Read user target profiles from a TOML file: one `[targets.<id>]` table per profile.

    Example file:
        [targets.my-orin]
        name = "Our cart's Orin NX"
        accelerator = "gpu"
        peak_tops = { fp16 = 12.0, int8 = 24.0 }
        memory_bandwidth_gbs = 102.4
        memory_mib = 15000
        precisions = ["fp16", "int8"]
        compute_capability = [8, 7]
        sources = { peak_tops = "measured with trtexec, 2026-11" }

    Raises:
        ConfigError: The file is missing, not TOML, or a profile is incomplete (names which).
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6)
        try:
            import tomli as tomllib
        except ImportError as err:
            raise ConfigError("reading TOML profiles on Python 3.10 needs `pip install tomli`.") from err
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"profile file {p} does not exist.") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p} is not valid TOML ({err}).") from err
    tables = raw.get("targets")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{p} has no [targets.<id>] tables; see `edgemed profiles --help` for the format.")
    out: dict[str, TargetProfile] = {}
    for pid, t in tables.items():
        try:
            out[pid] = TargetProfile(id=pid, **{**t, "precisions": frozenset(t.get("precisions", ())),
                                                "peak_tops": dict(t.get("peak_tops", {}))})
        except TypeError as err:
            raise ConfigError(f"{p}: profile {pid!r} is incomplete or has unknown keys ({err}).") from err
        except ValueError as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{p}: profile {pid!r} has an invalid value ({err}).") from err
    return out


def list_profiles(user_file: str | os.PathLike[str] | None = None) -> list[TargetProfile]:
    """Built-in profiles, then those of `user_file` (or $EDGEMED_PROFILES) — a user id overrides a built-in one."""
    merged = dict(BUILTIN_TARGETS)
    user_file = user_file or os.environ.get("EDGEMED_PROFILES")
    if user_file:
        merged.update(load_profiles_toml(user_file))
    return list(merged.values())


def get_profile(profile_id: str, user_file: str | os.PathLike[str] | None = None) -> TargetProfile:
    """The stored profile called `profile_id` (built-in or from `user_file`/`EDGEMED_PROFILES`).

    This machine ("host") is measured, not stored: `edgemed.measure.get_target("host")`.

    Raises:
        ConfigError: Unknown id (with the closest known ids), or "host".
    """
    if profile_id == "host":
        raise ConfigError("'host' is measured, not stored: use edgemed.measure.get_target('host') "
                          "(the CLI's --target host does this).")
    known = {p.id: p for p in list_profiles(user_file)}
    if profile_id in known:
        return known[profile_id]
    import difflib

    close = difflib.get_close_matches(profile_id, sorted(known), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"no target profile {profile_id!r}.{hint} `edgemed profiles` lists them.")
