"""`edgemed precompute`: run a teacher once per scan into a sharded store that `edgemed distill --teacher-store` reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from edgemed.cli._options import MultiValueOption

__all__ = ["precompute"]


@click.command()
@click.option("--scans", cls=MultiValueOption, required=True,
              help="CT/MR scans: NIfTI files, DICOM series folders, or a folder of them.")
@click.option("--teacher", help="A teacher to run: model.onnx, TorchScript .pt, an nnU-Net v2 model folder, "
                                "or package.module:factory (with --teacher-checkpoint).")
@click.option("--teacher-checkpoint", type=click.Path(path_type=Path), help="State-dict checkpoint for a module:factory teacher.")
@click.option("--teacher-predictions", cls=MultiValueOption,
              help="Stored teacher outputs instead of a model, paired with --scans in order or by file name.")
@click.option("--label-map", default="totalsegmentator", show_default=True,
              help="Class names of the teacher's labels: a built-in name or a JSON file.")
@click.option("--organ", "organs", cls=MultiValueOption, required=True, help="Organ(s) by name or id, e.g. liver.")
@click.option("--temperature", type=float, default=2.0, show_default=True,
              help="KD temperature the probabilities are stored at (distill with the same --temperature).")
@click.option("--dtype", type=click.Choice(["float16", "uint8"]), default="float16", show_default=True,
              help="Precision of stored probabilities (label-map teachers store masks only).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Store directory (filled in place).")
@click.option("--json", "as_json", is_flag=True, help="Print the store's index summary as JSON on stdout.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def precompute(scans: tuple[str, ...], teacher: str | None, teacher_checkpoint: Path | None,
               teacher_predictions: tuple[str, ...], label_map: str, organs: tuple[str, ...], temperature: float,
               dtype: str, out: Path, as_json: bool, quiet: bool) -> None:
    """Run a teacher once on every scan and store its outputs for the organs, one shard per scan.

    Under torchrun, process r of N computes scans r, r+N, …; finished shards are skipped on a rerun.

    \b
    Examples:
      edgemed precompute --scans scans/ --teacher Dataset291_TotalSegmentator_part1_organs_1559subj \\
          --organ liver --out store/liver
      torchrun --nproc_per_node 8 -m edgemed precompute --scans scans/ --teacher model.onnx --organ liver --out store/liver
    """
    from edgemed.cli._distill import _load_teacher
    from edgemed.cli._pairing import pair_scans
    from edgemed.compress import TeacherStoreConfig, precompute_teacher
    from edgemed.errors import ConfigError
    from edgemed.models.teachers import StoredPredictions

    if bool(teacher) == bool(teacher_predictions):
        raise ConfigError("give exactly one of --teacher (a model to run) or --teacher-predictions (stored outputs).")
    scan_paths, pred_paths = pair_scans(scans, teacher_predictions or None)
    config = TeacherStoreConfig(organs=organs, label_map=label_map, temperature=temperature, dtype=dtype)
    if pred_paths is not None:
        teacher_obj: object = StoredPredictions(zip(scan_paths, pred_paths))
    else:
        teacher_obj = _load_teacher(str(teacher), teacher_checkpoint, None, None, None, None)
    store = precompute_teacher(scan_paths, teacher_obj, out, config, progress=not quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, only rank 0 prints
        return
    run = store.index.last_run or {}
    if as_json:
        click.echo(json.dumps({"path": str(out), "shards": len(store.index.shards), **run}, indent=2))
        return
    click.echo(f"wrote {out}: {len(store.index.shards)} shard(s), {run['computed']} computed, "
               f"{run['skipped']} already there, {run['processes']} process(es)")
    click.echo(f"next: edgemed distill --scans … --teacher-store {out} --organ {' '.join(organs)} "
               f"--temperature {temperature} --out runs/{organs[0]}")
