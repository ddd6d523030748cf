"""`edgemed build`: ONNX bundle → TensorRT engine bundle, built on the target GPU itself."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgemed.cli._options import overwrite_option

__all__ = ["build"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--target", required=True, help="Target profile id, e.g. jetson-orin-nx-16gb or rtx-4090.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp16", show_default=True,
              help="int8 needs a QDQ bundle from `edgemed quantize`.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Engine bundle directory to write (required unless --print-config).")
@click.option("--workspace-mib", type=int, default=1024, show_default=True, help="TensorRT scratch memory.")
@click.option("--batch", type=int, nargs=3, default=None, metavar="MIN OPT MAX",
              help="Slices per call  [default: 1 8 16; a fixed-batch model: its batch].")
@click.option("--size-px", type=int, nargs=3, default=None, metavar="MIN OPT MAX",
              help="Slice height/width range  [default: 200/350/500 mm at the student's spacing].")
@click.option("--dla-core", type=int, default=None, help="Build for this DLA core (Jetson); fixed shapes.")
@click.option("--no-gpu-fallback", is_flag=True, help="With --dla-core: fail instead of running layers on the GPU.")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None,
              help="Timing cache file: reused when present, updated after the build.")
@click.option("--hardware-compatible", is_flag=True, help="One engine for all Ampere-or-newer GPUs (not Jetson).")
@click.option("--version-compatible", is_flag=True, help="The engine also runs on later TensorRT versions.")
@click.option("--fallback", type=click.Choice(["none", "fp32"]), default="none", show_default=True,
              help="fp32: build fp32 if fp16/int8 is unavailable or fails (recorded in the manifest).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config and shape profiles as JSON and exit (needs no TensorRT or GPU).")
@click.option("--json", "as_json", is_flag=True, help="Print the engine manifest's build record as JSON.")
@overwrite_option
def build(bundle: Path, target: str, precision: str, out: Path | None, workspace_mib: int,
          batch: tuple[int, int, int] | None, size_px: tuple[int, int, int] | None, dla_core: int | None,
          no_gpu_fallback: bool, timing_cache: Path | None, hardware_compatible: bool, version_compatible: bool,
          fallback: str, print_config: bool, as_json: bool, overwrite: bool) -> None:
    """Build a TensorRT engine from BUNDLE (an ONNX bundle) on this GPU, for --target.

    Run it on the target device itself (a Jetson, or the same GPU model): TensorRT tunes the
    engine for the GPU and TensorRT version that build it.

    \b
    Example:
      edgemed build out/liver.edgemed --target jetson-orin-nx-16gb --precision fp16 --print-config
      edgemed build out/liver.edgemed --target jetson-orin-nx-16gb --precision fp16 --out out/liver-orin.engine.d
    """
    from edgemed.export import TrtBuildConfig, check_build_request, derive_shape_profiles, shape_profiles_json
    from edgemed.profiles import get_profile
    from edgemed.runtime import OnnxBundle

    config = TrtBuildConfig(precision=precision, workspace_mib=workspace_mib, batch=batch or None,
                            size_px=size_px or None, dla_core=dla_core, gpu_fallback=not no_gpu_fallback,
                            hardware_compatibility="ampere_plus" if hardware_compatible else "none",
                            version_compatible=version_compatible, timing_cache=timing_cache, fallback=fallback)
    profile = get_profile(target)
    onnx = OnnxBundle.load(bundle)
    check_build_request(onnx, profile, config)
    shapes = derive_shape_profiles(onnx, config)
    if print_config:
        click.echo(json.dumps({"bundle": str(bundle), "target": profile.id, "config": config.to_json(),
                               "shape_profiles": shape_profiles_json(shapes),
                               "pad_multiple": onnx.preprocess.pad_multiple,
                               "spacing_mm": list(onnx.preprocess.spacing_mm)}, indent=2))
        return
    if out is None:
        raise click.UsageError("--out is required to build (or pass --print-config to only see the config).")
    from edgemed.export import build_engine

    engine = build_engine(onnx, profile, config, out, overwrite=overwrite)
    meta = engine.meta
    if as_json:
        click.echo(json.dumps({
            "precision_requested": meta.precision_requested, "precision_built": meta.precision_built,
            "fallback": meta.fallback, "tensorrt_version": meta.tensorrt_version, "cuda_version": meta.cuda_version,
            "gpu_name": meta.gpu_name, "compute_capability": list(meta.compute_capability),
            "shape_profiles": meta.shape_profiles, "layer_precision_counts": meta.layer_precision_counts,
            "build_seconds": meta.build_seconds, "timing_cache": meta.timing_cache}, indent=2))
        return
    cc = ".".join(map(str, meta.compute_capability))
    click.echo(f"wrote {out}  (TensorRT {meta.tensorrt_version}, {engine.precision} on {meta.gpu_name} "
               f"{cc}, {engine.model_path.stat().st_size / 1e6:.2f} MB, {meta.build_seconds or 0:.0f} s)")
    click.echo("  layers: " + ", ".join(f"{k} {v}" for k, v in meta.layer_precision_counts.items()))
    if meta.fallback:
        click.echo(f"  fell back to {meta.fallback['to']}: {meta.fallback['reason']}")
    click.echo(f"next: edgemed segment {out} SCAN --out mask.nii.gz")
