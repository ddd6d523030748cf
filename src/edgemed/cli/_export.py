"""`edgemed export`: student checkpoint → ONNX bundle, parity-checked against the torch student."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgemed.cli._options import MultiValueOption, overwrite_option

__all__ = ["export"]


@click.command()
@click.argument("student", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle directory to write.")
@click.option("--opset", type=int, default=17, show_default=True)
@click.option("--parity-scans", cls=MultiValueOption,
              help="Real scans to check parity on (NIfTI or DICOM folders); default: a synthetic phantom.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: half-size weights for GPUs (inputs/outputs stay float32). INT8: edgemed quantize.")
@click.option("--max-abs-logit-diff", type=float, default=None,
              help="Parity tolerance  [default: 1e-3 for fp32, 5e-2 for fp16].")
@click.option("--min-mask-dice", type=float, default=None, help="Parity tolerance  [default: 0.999 fp32, 0.99 fp16].")
@click.option("--fixed-batch", is_flag=True, help="Batch of 1 instead of a dynamic batch axis.")
@click.option("--no-simplify", is_flag=True, help="Skip onnxslim graph simplification.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle manifest's parity block as JSON.")
@overwrite_option
def export(student: Path, out: Path, opset: int, parity_scans: tuple[str, ...], precision: str,
           max_abs_logit_diff: float | None, min_mask_dice: float | None, fixed_batch: bool, no_simplify: bool, as_json: bool,
           overwrite: bool) -> None:
    """Export STUDENT (a checkpoint from `edgemed distill`) to an ONNX bundle the runtime loads.

    The exported model and the torch student run on the same slices; past the tolerances the
    export fails and nothing is written.

    \b
    Example:
      edgemed export runs/liver --out out/liver.edgemed --parity-scans ct.nii.gz
    """
    from edgemed.export import OnnxExportConfig, to_onnx

    config = OnnxExportConfig(opset=opset, dynamic_batch=not fixed_batch, simplify=not no_simplify,
                              parity_volumes=tuple(parity_scans) or None, precision=precision,
                              max_abs_logit_diff=max_abs_logit_diff,
                              min_mask_dice=min_mask_dice)
    bundle = to_onnx(student, out, config, overwrite=overwrite)
    parity = bundle.parity
    if as_json:
        click.echo(json.dumps(parity, indent=2))
        return
    click.echo(f"wrote {out}  (opset {bundle.opset}, {bundle.precision}, {bundle.model_path.stat().st_size / 1e6:.2f} MB)")
    click.echo(f"  parity vs torch: max |Δlogit| {parity['max_abs_logit_diff']:.2e}, mask Dice "
               + ", ".join(f"{k} {v:.4f}" for k, v in parity["mask_dice"].items()))
    click.echo(f"next: edgemed segment {out} SCAN --out mask.nii.gz")
