"""Label-free, organ-specific distillation: teacher outputs on unlabeled scans → a small student."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgemed.artifacts import STUDENT_KIND, OrganChannel, StudentCheckpoint, write_artifact
from edgemed.compress._config import DistillConfig
from edgemed.compress._progress import progress_bar
from edgemed.compress._slices import ScanSlices, heldout_scans, make_batch, scan_slices
from edgemed.errors import ConfigError, EdgemedWarning, InputError
from edgemed.io import Volume, from_student_grid, load_label_map, read_volume
from edgemed.metrics import dice

__all__ = ["distill"]

STUDENT_SCHEMA = 1


def distill(
    scans: Sequence[str | os.PathLike[str] | Volume],
    config: DistillConfig,
    out: str | os.PathLike[str],
    *,
    teacher: object | None = None,
    teacher_predictions: Sequence[str | os.PathLike[str]] | None = None,
    progress: bool = True,
    init: StudentCheckpoint | str | os.PathLike[str] | None = None,
) -> StudentCheckpoint:
    """Distill a teacher into an organ-specific student from unlabeled scans.

    The teacher is either run here (`teacher`, any `edgemed.models.teachers.Teacher`) or its
    stored predictions are read (`teacher_predictions`, paired with `scans` in order). No manual
    label is used. A contiguous block of each scan's organ slices is held out, never trained on,
    and the student's Dice vs the teacher there is measured every epoch and recorded.

    Args:
        scans: NIfTI files, DICOM series folders, or Volumes.
        config: What to distill and how.
        out: The student checkpoint directory to write (replaced atomically).
        init: Start from this student's weights and structure instead of a fresh network (e.g.
            a pruned student, fine-tuned from its unpruned parent as the teacher). Its
            preprocessing must match `config.preprocess`.

    Returns:
        The written student checkpoint.

    Example:
        >>> ckpt = distill(["ct.nii.gz"], DistillConfig(organs=("liver",)), "runs/liver",
        ...                teacher_predictions=["seg.nii.gz"])
        >>> ckpt.metadata["validation"]["dice"]["liver"]
    """
    import torch

    from edgemed.models import StudentSpec, create_student, load_student, student_payload

    if (teacher is None) == (teacher_predictions is None):
        raise ConfigError("give exactly one teacher: a model (--teacher) or stored predictions (--teacher-predictions).")
    if teacher_predictions is not None and len(teacher_predictions) != len(scans):
        raise ConfigError(
            f"{len(scans)} scans but {len(teacher_predictions)} teacher predictions; they pair in order, one each."
        )
    if not scans:
        raise ConfigError("no scans given; pass at least one with --scans.")
    label_map = load_label_map(config.label_map)
    ids = label_map.resolve(config.organs)
    organs = [OrganChannel(i + 1, lid, label_map.name_of(lid)) for i, lid in enumerate(ids)]
    num_classes = len(ids) + 1
    if config.threads:
        torch.set_num_threads(config.threads)
    slices, soft, teacher_identity = _load_data(scans, teacher, teacher_predictions, ids, config, progress)
    organ_train = [(s, int(k)) for s, sc in enumerate(slices) for k in np.intersect1d(sc.train_ks, sc.organ_ks)]
    other_train = [(s, int(k)) for s, sc in enumerate(slices) for k in np.setdiff1d(sc.train_ks, sc.organ_ks)]
    if not organ_train:
        raise InputError(
            f"the teacher finds no {', '.join(o.name for o in organs)} in the training slices of any scan; "
            "check --organ, --label-map and that the predictions belong to these scans."
        )

    init_ckpt = None if init is None else init if isinstance(init, StudentCheckpoint) else StudentCheckpoint.load(init)
    if init_ckpt is not None:
        if init_ckpt.preprocess != config.preprocess or len(init_ckpt.organs) != len(organs):
            raise ConfigError(f"{init_ckpt.path} was trained with other preprocessing or organs; fine-tune it with "
                              "the same preprocess spec and organs.")
        if config.ensemble != 1:
            raise ConfigError("init= fine-tunes one student; use ensemble=1.")
        spec = StudentSpec.from_json(init_ckpt.architecture)
    else:
        spec = StudentSpec(arch=config.student, in_channels=config.preprocess.in_channels, num_classes=num_classes,
                           kwargs=dict(config.student_kwargs), members=config.ensemble)
    member_spec = StudentSpec(arch=spec.arch, in_channels=spec.in_channels, num_classes=num_classes, kwargs=spec.kwargs)
    members, history = [], []
    start = time.perf_counter()
    for m in range(config.ensemble):
        # Members differ by seed only: their own initialisation, batches and augmentation.
        seed = config.seed + m
        torch.manual_seed(seed)
        name = "+".join(o.name for o in organs) + (f" [{m + 1}/{config.ensemble}]" if config.ensemble > 1 else "")
        start_net = load_student(init_ckpt).train() if init_ckpt is not None else create_student(member_spec)
        net, member_history = _train_member(start_net, slices, organ_train, other_train, organs,
                                            soft, num_classes, config, seed, progress, name)
        members.append(net)
        history.extend({"member": m, **h} for h in member_history)
    train_s = time.perf_counter() - start
    if config.ensemble == 1:
        net = members[0]
    else:
        from edgemed.models import Ensemble

        net = Ensemble(members).eval()
        history.append({"ensemble_val_dice": _validate_student_grid(net, slices, organs, config)})
    native = _evaluate_native(net, slices, organs, config)
    metadata = {
        "organs": [o.to_json() for o in organs],
        "label_map": label_map.to_json(),
        "preprocess": config.preprocess.to_json(),
        "postprocess": config.postprocess.to_json(),
        "teacher": teacher_identity,
        "scans": [sc.name for sc in slices],
        "recipe": config.to_json(),
        "validation": native,
        "training": {
            "epochs": config.epochs, "members": config.ensemble, "seconds": round(train_s, 1),
            "seed": config.seed, "parameters": int(sum(p.numel() for p in net.parameters())),
            "torch": torch.__version__, "soft_targets": soft,
        },
    }
    payload = student_payload(net, spec)
    if init_ckpt is not None:
        metadata["init"] = {"digest": init_ckpt.manifest.digest, "pruning": init_ckpt.metadata.get("pruning")}
        if init_ckpt.architecture.get("pruned"):
            payload["architecture.json"] = (json.dumps({**spec.to_json(), "pruned": True}, indent=2) + "\n").encode()
    payload["history.json"] = (json.dumps(history, indent=1) + "\n").encode()
    write_artifact(out, kind=STUDENT_KIND, schema_version=STUDENT_SCHEMA, payload=payload, metadata=metadata,
                   parent=teacher_identity.get("sha256") if isinstance(teacher_identity, dict) else None)
    return StudentCheckpoint.load(out)


def _train_member(net, slices, organ_train, other_train, organs, soft, num_classes, config, seed,  # type: ignore[no-untyped-def]
                  progress, name):
    """Train one network; returns it (its EMA weights when EMA is on) and its per-epoch history."""
    import torch

    from edgemed.compress._augment import augment_batch
    from edgemed.compress._losses import distill_loss

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-(len(organ_train) + len(other_train)) // config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    ema = _Ema(net, config.ema_decay) if config.ema_decay is not None else None
    shipped = lambda: ema.module if ema is not None else net  # noqa: E731
    history: list[dict[str, object]] = []
    bar = progress_bar(range(config.epochs), progress, desc=f"distill {name}", unit="epoch")
    for epoch in bar:
        net.train()
        losses = []
        for _ in range(steps_per_epoch):
            picks = _sample(rng, organ_train, other_train, config.batch_size, config.organ_slice_ratio)
            batch = make_batch(slices, picks, config.preprocess.context_slices, num_classes, rng=rng,
                               truncate_prob=config.augment.context_truncate)
            x, s_t, h_t = (torch.from_numpy(a) for a in batch)
            x, both = augment_batch(x, torch.cat([s_t, h_t], 1), config.augment, gen)
            s_t, h_t = both[:, :num_classes], both[:, num_classes:]
            loss = distill_loss(net(x), s_t, h_t, temperature=config.temperature, soft=soft,
                                dice_weight=config.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(net)
            losses.append(loss.item())
        val = _validate_student_grid(shipped(), slices, organs, config)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", **{o: f"{d:.3f}" for o, d in val.items()})
    return shipped().eval(), history


class _Ema:
    """Exponential moving average of weights and BatchNorm buffers, with warm-up.

    The decay ramps as min(decay, (1 + t) / (10 + t)) over steps t, so short runs (a few dozen
    steps) ship an average of the recent weights rather than one stuck near initialisation.
    """

    def __init__(self, net: object, decay: float) -> None:
        import copy

        self.module = copy.deepcopy(net)
        self.decay = decay
        self.steps = 0

    def update(self, net: object) -> None:
        import torch

        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for avg, cur in zip(self.module.state_dict().values(), net.state_dict().values()):  # type: ignore[attr-defined]
                if avg.dtype.is_floating_point:
                    avg.mul_(d).add_(cur.detach(), alpha=1 - d)
                else:
                    avg.copy_(cur)


def _load_data(scans, teacher, teacher_predictions, ids, config, progress):  # type: ignore[no-untyped-def]
    """Read every scan, get the teacher's output for it, and put both on the student grid."""
    from edgemed.models.teachers import load_stored_prediction

    slices: list[ScanSlices] = []
    soft_flags: list[bool] = []
    identity: dict[str, object] = {}
    whole = heldout_scans(len(scans), config.holdout_fraction)
    if config.holdout_fraction > 0 and not whole:
        warnings.warn(
            "only slices of the training scan could be held out, so the validation Dice measures how the student "
            "fills gaps in a scan it has seen, not how it does on a new patient. Give 2 or more scans to hold out "
            "whole scans.", EdgemedWarning, stacklevel=3)
    for i, scan in enumerate(progress_bar(scans, progress and len(scans) > 1, desc="teacher", unit="scan")):
        volume = scan if isinstance(scan, Volume) else read_volume(scan)
        name = volume.source or (Path(scan).name if not isinstance(scan, Volume) else f"volume{i}")
        if teacher_predictions is not None:
            output = load_stored_prediction(teacher_predictions[i], like=volume)
            identity = {"kind": "stored", "name": Path(teacher_predictions[0]).name,
                        "files": [Path(p).name for p in teacher_predictions]}
        else:
            output = teacher.predict(volume)  # type: ignore[union-attr]
            identity = dict(teacher.identity())  # type: ignore[union-attr]
        is_soft = output.kind != "labels"
        probs = output.probabilities(ids, temperature=config.temperature if is_soft else 1.0)
        mask = output.mask(ids)
        held_out = (i in whole) if whole else None
        slices.append(scan_slices(name, volume, probs, mask, config.preprocess, config.holdout_fraction,
                                  held_out=held_out))
        soft_flags.append(is_soft)
    # Mixed kinds (stored labels for one scan, probabilities for another) train with hard targets.
    return slices, all(soft_flags), identity


def _sample(rng: np.random.Generator, organ: list[tuple[int, int]], other: list[tuple[int, int]], n: int,
            ratio: float) -> list[tuple[int, int]]:
    n_org = n if not other else int(rng.binomial(n, ratio))
    picks = [organ[i] for i in rng.integers(0, len(organ), n_org)]
    if other:
        picks += [other[i] for i in rng.integers(0, len(other), n - n_org)]
    return picks


def _validate_student_grid(net, slices: list[ScanSlices], organs: list[OrganChannel],  # type: ignore[no-untyped-def]
                           config: DistillConfig) -> dict[str, float]:
    """Dice vs the teacher on the held-out slices, on the student grid (cheap; run every epoch)."""
    from edgemed.models._predict import predict_slices

    preds, refs = [], []
    for sc in slices:
        if sc.val_ks.size:
            preds.append(predict_slices(net, sc.image, sc.val_ks, config.preprocess.context_slices,
                                        step=sc.geom.context_step).argmax(1))
            refs.append(sc.hard[sc.val_ks])
    if not preds:
        return {}
    pred, ref = np.concatenate([p.ravel() for p in preds]), np.concatenate([r.ravel() for r in refs])
    return {o.name: round(dice(pred == o.channel, ref == o.channel), 4) for o in organs}


def _evaluate_native(net, slices: list[ScanSlices], organs: list[OrganChannel],  # type: ignore[no-untyped-def]
                     config: DistillConfig) -> dict[str, object]:
    """Dice vs the teacher on the held-out slices, on each scan's own grid (as users will see it)."""
    from edgemed.models._predict import predict_slices

    per_scan = []
    pred_all, ref_all = [], []
    for sc in slices:
        if not sc.val_ks.size:
            continue
        probs = from_student_grid(predict_slices(net, sc.image, np.arange(sc.image.shape[0]),
                                                 config.preprocess.context_slices, step=sc.geom.context_step),
                                  sc.geom)
        pred = probs.argmax(0)[:, :, sc.val_ks]
        ref = sc.native_mask[:, :, sc.val_ks]
        per_scan.append({"scan": sc.name, "holdout_slices": [int(sc.val_ks[0]), int(sc.val_ks[-1])],
                         "whole_scan": bool(sc.train_ks.size == 0),
                         "dice": {o.name: round(dice(pred == o.channel, ref == o.channel), 4) for o in organs}})
        pred_all.append(pred.ravel())
        ref_all.append(ref.ravel())
    if not per_scan:
        return {"holdout": "none (holdout_fraction=0)", "dice": {}}
    pred, ref = np.concatenate(pred_all), np.concatenate(ref_all)
    whole = all(sc.train_ks.size == 0 for sc in slices if sc.val_ks.size)
    return {
        "holdout": (f"{len(per_scan)} whole scan(s), never trained on" if whole else
                    f"contiguous block of {config.holdout_fraction:.0%} of each scan's organ slices, never trained on"),
        "holdout_kind": "scans" if whole else "slices",
        "reference": "teacher",
        "dice": {o.name: round(dice(pred == o.channel, ref == o.channel), 4) for o in organs},
        "per_scan": per_scan,
    }
