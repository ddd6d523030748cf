"""`edgemed quantize`: an FP32 bundle → INT8 where it is faster and within the Dice budget."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgemed.cli._options import MultiValueOption, overwrite_option

__all__ = ["quantize"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--scans", cls=MultiValueOption, required=True, help="Calibration scans (real, unlabeled).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle directory to write.")
@click.option("--method", type=click.Choice(["nncf", "ort", "qat"]), default="nncf", show_default=True,
              help="nncf: NNCF PTQ for OpenVINO (fast INT8 on x86/ARM CPUs); ort: ONNX Runtime's quantize_static; "
                   "qat: NNCF quantization-aware training of --student, distilled from its FP32 self (when PTQ "
                   "misses the budget).")
@click.option("--student", type=click.Path(path_type=Path), default=None,
              help="qat: the student checkpoint the bundle was exported from.")
@click.option("--epochs", type=int, default=8, show_default=True, help="qat: training epochs.")
@click.option("--validation-scans", cls=MultiValueOption, help="Scans the Dice drop is measured on "
                                                               "(default: the calibration scans).")
@click.option("--references", cls=MultiValueOption,
              help="Reference label maps for the validation scans (else Dice vs the FP32 model's masks).")
@click.option("--max-dice-drop", type=float, default=0.005, show_default=True,
              help="Largest Dice loss INT8 may cost (0.005 = half a point); else FP32 is kept.")
@click.option("--calibration-slices", type=int, default=None,
              help="Slices to calibrate on (qat: also to train on)  [default: 128; qat 256].")
@click.option("--calibrate-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="ort method only.")
@click.option("--keep-if-slower", is_flag=True,
              help="Keep INT8 within the Dice budget even where it is not faster on this machine (the target is "
                   "another device: time it there with edgemed profile).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@overwrite_option
def quantize(bundle: Path, scans: tuple[str, ...], out: Path, method: str, student: Path | None, epochs: int,
             validation_scans: tuple[str, ...],
             references: tuple[str, ...], max_dice_drop: float, calibration_slices: int | None, calibrate_method: str,
             keep_if_slower: bool, as_json: bool, overwrite: bool) -> None:
    """Quantize a bundle to INT8, Dice-checked, and keep it only where it is faster.

    FP32, the NNCF/ORT INT8 model and the target backend are timed side by side; the written
    bundle records what was chosen and why, and the runtime's backend="auto" follows it.

    \b
    Example:
      edgemed quantize liver.edgemed --scans ct1.nii.gz ct2.nii.gz --out liver-int8.edgemed
      edgemed quantize liver.edgemed --method qat --student runs/liver --scans ct1.nii.gz --out liver-qat.edgemed
    """
    from edgemed.compress import NncfInt8Config, NncfQatConfig, OrtInt8Config, quantize as run
    from edgemed.errors import ConfigError

    if method == "qat":
        if student is None:
            raise ConfigError("--method qat trains the torch student: pass --student, the checkpoint the bundle was "
                              "exported from.")
        config: NncfInt8Config | OrtInt8Config | NncfQatConfig = NncfQatConfig(
            student=student, calibration_slices=calibration_slices or 256, epochs=epochs,
            max_dice_drop=max_dice_drop)
    elif method == "nncf":
        config = NncfInt8Config(calibration_slices=calibration_slices or 128, max_dice_drop=max_dice_drop)
    else:
        config = OrtInt8Config(calibration_slices=calibration_slices or 128, max_dice_drop=max_dice_drop,
                               calibrate_method=calibrate_method)
    click.echo(f"quantizing {bundle} with {method} on {len(scans)} calibration scan(s) → {out}", err=True)
    result = run(bundle, list(scans), config, out, validation_scans=list(validation_scans) or None,
                 references=list(references) or None, overwrite=overwrite, require_faster=not keep_if_slower)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(f"wrote {out}: {result.chosen_precision} on {result.chosen_backend} — {result.reason}")
    for key, ms in result.latency_ms.items():
        click.echo(f"  {key:<16} {ms:8.1f} ms per 16-slice batch")
    for organ, d in result.dice["organs"].items():
        click.echo(f"  {organ:<16} " + ", ".join(f"{k} {v}" for k, v in d.items()))
    click.echo(f"next: edgemed profile {out} --scan CT")
