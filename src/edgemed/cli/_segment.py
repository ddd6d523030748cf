"""`edgemed segment`: run a bundle on a scan, write the mask in the scan's own geometry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from edgemed.cli._options import overwrite_option

__all__ = ["segment"]


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.argument("scan", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Mask to write (.nii.gz).")
@click.option("--backend", type=click.Choice(["auto", "ort", "openvino", "trt"]), default="auto", show_default=True,
              help="trt: TensorRT engine bundles (from edgemed build); auto picks it for them.")
@click.option("--threads", type=int, help="Backend threads (default: $EDGEMED_THREADS, else the physical cores free now).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Slices per inference call.")
@click.option("--modality", type=click.Choice(["CT", "MR"]),
              help="The scan's modality when the file does not say (NIfTI/NRRD): overrides the guess from intensities.")
@click.option("--dicom-seg", type=click.Path(path_type=Path),
              help="Also write a DICOM-SEG referencing the input series (SCAN must be a DICOM series folder).")
@click.option("--json", "as_json", is_flag=True,
              help="Print voxel counts, stage timings and the quality control (verdict, reasons, score) as JSON.")
@click.option("--no-mask-on-fail", is_flag=True,
              help="Write no mask (and no DICOM-SEG) when quality control says fail; exit 1 with one line saying why.")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(path_type=Path),
              help="Require BUNDLE signed by this public key (file or directory; repeatable; "
                   "default: $EDGEMED_TRUSTED_KEYS).")
@overwrite_option
def segment(bundle: Path, scan: Path, out: Path, backend: str, threads: int | None, batch_size: int,
            dicom_seg: Path | None, as_json: bool, overwrite: bool, trusted_keys: tuple[Path, ...] = (),
            modality: str | None = None, no_mask_on_fail: bool = False) -> None:
    """Segment SCAN (NIfTI file or DICOM series folder) with BUNDLE; write a NIfTI label map.

    The mask is on the scan's own grid (resampled back from the student's spacing), with the
    teacher's label ids (e.g. 5 = liver in TotalSegmentator's map). Quality control runs with it:
    a verdict (ok / warn / fail) with its reasons and an estimated Dice per organ, printed, in
    --json, and in the DICOM-SEG's series description. Exit codes: 0 mask written (whatever the
    verdict), 1 failed (with --no-mask-on-fail: QC said fail and nothing was written), 2 bad usage.

    \b
    Example:
      edgemed segment out/liver.edgemed ct.nii.gz --out liver.nii.gz
      edgemed segment out/liver.edgemed dicom_series/ --out liver.nii.gz --dicom-seg liver_seg.dcm
      edgemed segment out/liver.edgemed ct.nii.gz --out liver.nii.gz --no-mask-on-fail --json
    """
    import numpy as np

    from edgemed import runtime
    from edgemed.artifacts import atomic_files, check_output_file
    from edgemed.errors import ConfigError, InputError
    from edgemed.io import read_volume, write_nifti

    if dicom_seg is not None and not scan.is_dir():
        raise ConfigError("--dicom-seg needs SCAN to be a DICOM series folder (the SEG references its images).")
    if dicom_seg is not None and dicom_seg.resolve() == out.resolve():
        raise ConfigError(f"--out and --dicom-seg are the same file ({out}); give two paths.")
    outputs = [out] if dicom_seg is None else [out, dicom_seg]
    for path in outputs:  # before reading the scan or loading the model
        check_output_file(path, overwrite=overwrite, inputs=[bundle, scan])
    volume = read_volume(scan, modality=modality)
    with runtime.load(bundle, backend=backend, threads=threads, trusted_keys=list(trusted_keys) or None) as seg:
        _check_modality(volume, seg.bundle.preprocess.modality, scan)
        mask, qc = seg.segment_with_qc(volume, batch_size=batch_size)
        timings = seg.last_timings
        backend_name = seg.backend
    spacing = np.prod(volume.spacing_mm)
    counts = {o.name: int((mask.array == o.label_id).sum()) for o in seg.organs}
    withheld = no_mask_on_fail and qc.verdict == "fail"
    if not withheld:
        # Both outputs or neither: each is written aside and moved into place once both are complete.
        with atomic_files(*outputs) as staged:
            write_nifti(mask, staged[0])
            if dicom_seg is not None:
                from edgemed.io import write_dicom_seg

                write_dicom_seg(mask, scan, staged[1], {o.label_id: o.name for o in seg.organs}, note=qc.summary())
    if as_json:
        click.echo(json.dumps({"out": str(out), "written": [] if withheld else [str(p) for p in outputs],
                               "backend": backend_name, "voxels": counts,
                               "volume_ml": {k: v * spacing / 1000 for k, v in counts.items()},
                               "timings_ms": timings.to_json(), "qc": qc.to_json()},
                              indent=2))
    if withheld:
        raise InputError(f"{qc.summary()} — no mask written (--no-mask-on-fail).")
    if as_json:
        return
    click.echo(f"wrote {out}  ({backend_name}, {timings.total_ms:.0f} ms: preprocess {timings.preprocess_ms:.0f}, "
               f"inference {timings.inference_ms:.0f}, postprocess {timings.postprocess_ms:.0f})")
    for name, n in counts.items():
        click.echo(f"  {name:<24} {n:>9,d} voxels  {n * spacing / 1000:8.1f} ml")
    _echo_qc(qc)
    for path in outputs[1:]:
        click.echo(f"wrote {path}  (DICOM-SEG referencing the input series)")


def _echo_qc(qc: Any) -> None:
    """The QC verdict and its reasons, one line each (info notes included)."""
    scores = ", ".join(f"{o.name} {o.score:.2f}" for o in qc.organs if o.score is not None)
    head = f"QC {qc.verdict}" + ("" if qc.calibrated else " (not calibrated: the bundle has no QC reference)")
    click.echo(head + (f"  estimated Dice: {scores}" if scores else ""))
    for reason in qc.reasons:
        if reason.check != "calibration":
            click.echo(f"  {reason.severity:<4}  {reason.message}")


def _check_modality(volume: Any, want: str, scan: Path) -> None:
    """The runtime's modality check, worded for the command line (--modality, not a Python argument)."""
    from edgemed.errors import InputError
    from edgemed.io import check_scan_values

    if volume.modality == want:
        return
    # NaN voxels, or a label map whose modality was guessed, say so first.
    check_scan_values(volume, finite_only=not volume.meta.get("modality_guessed"))
    guessed = " (guessed from its intensities)" if volume.meta.get("modality_guessed") else ""
    raise InputError(f"{volume.source or scan.name} is {volume.modality!r}{guessed}, but this model segments {want} "
                     f"scans. Pass a {want} scan; if it is one, say so: --modality {want}.")
