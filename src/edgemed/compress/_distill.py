"""Label-free, organ-specific distillation: teacher outputs on unlabeled scans → a small student."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemed.artifacts import (STUDENT_KIND, STUDENT_SCHEMA, OrganChannel, StudentCheckpoint, StudentMeta,
                               TrainingRecord, ValidationRecord, write_artifact)
from edgemed.compress._config import DistillConfig
from edgemed.compress._progress import progress_bar
from edgemed.compress._slices import ScanSlices, heldout_scans, make_batch, scan_slices
from edgemed._threads import job_threads, legacy_requested
from edgemed.errors import ConfigError, EdgemedWarning, InputError
from edgemed.io import Volume, from_student_grid, load_label_map, read_volume
from edgemed.metrics import dice

__all__ = ["distill"]



def distill(
    scans: Sequence[str | os.PathLike[str] | Volume],
    config: DistillConfig,
    out: str | os.PathLike[str],
    *,
    teacher: object | None = None,
    teacher_predictions: Sequence[str | os.PathLike[str]] | None = None,
    teacher_store: str | os.PathLike[str] | None = None,
    progress: bool | str = True,
    init: StudentCheckpoint | str | os.PathLike[str] | None = None,
    resume: bool = False,
    state_every: int = 1,
    overwrite: bool = False,
    calibrate_qc: bool = True,
) -> StudentCheckpoint:
    """Distill a teacher into an organ-specific student from unlabeled scans.

    The teacher is either run here (`teacher`, any `edgemed.models.teachers.Teacher`), or its
    stored predictions are read (`teacher_predictions`, paired with `scans` in order), or its
    outputs come from a sharded store that `precompute_teacher` filled (`teacher_store`). No
    manual label is used. A contiguous block of each scan's organ slices is held out, never
    trained on, and the student's Dice vs the teacher there is measured every epoch and recorded.

    Under `torchrun --nproc_per_node N` the processes train one student with DistributedDataParallel
    (gloo on CPU, nccl on CUDA): every process draws the same global batch of `batch_size` slices
    from the seeded sample stream, exactly as one process would, and builds, augments and
    back-propagates only its share (slices rank, rank + N, …); gradients are averaged. Validation
    is split across the processes and summed. Rank 0 writes the checkpoint and the resume state;
    the others wait and return the same checkpoint.

    Args:
        scans: NIfTI files, DICOM series folders, or Volumes.
        config: What to distill and how.
        out: The student checkpoint directory to write (replaced atomically).
        progress: Show progress bars; True names the training bar after the organs
            ("distill liver"), a string names it (the demo's "train teacher").
        init: Start from this student's weights and structure instead of a fresh network (e.g.
            a pruned student, fine-tuned from its unpruned parent as the teacher). Its
            preprocessing must match `config.preprocess`.
        resume: Continue from the training state in `<out>.resume/` when there is one (written
            every `state_every` epochs, removed when the student is written); without one, start
            afresh. The continued run gives the same weights as an uninterrupted one.
        state_every: Epochs between training-state saves (0: never save one).
        calibrate_qc: Measure the runtime QC's reference on the training scans after training
            (stored in the checkpoint, carried into bundles). False skips it (a model that is only
            used as a teacher, like the demo's); its bundles then report QC "not calibrated".
        overwrite: Replace a student checkpoint at `out`; anything else there is refused before any
            scan is read (`edgemed.artifacts.check_output`).

    Returns:
        The written student checkpoint.

    Example:
        >>> ckpt = distill(["ct.nii.gz"], DistillConfig(organs=("liver",)), "runs/liver",
        ...                teacher_predictions=["seg.nii.gz"])
        >>> ckpt.meta.validation.dice["liver"]
    """
    from edgemed.compress._dist import distributed

    if sum(t is not None for t in (teacher, teacher_predictions, teacher_store)) != 1:
        raise ConfigError("give exactly one teacher: a model (--teacher), stored predictions (--teacher-predictions) "
                          "or a teacher store (--teacher-store).")
    if state_every < 0:
        raise ConfigError(f"state_every={state_every} must be >= 0 (0: no resumable state).")
    from edgemed.artifacts import check_output

    # Before loading scans or training: a bad --out fails in seconds, not after the last epoch.
    check_output(out, kind=STUDENT_KIND, overwrite=overwrite,
                 inputs=[*scans, *(teacher_predictions or ()), teacher_store, init])
    with distributed() as ctx:
        return _distill(scans, config, Path(out), teacher, teacher_predictions, teacher_store, progress, init, resume,
                        state_every, ctx, overwrite, calibrate_qc)


def _distill(scans, config, out, teacher, teacher_predictions, teacher_store, progress, init, resume,  # type: ignore[no-untyped-def]
             state_every, ctx, overwrite=False, calibrate_qc=True):
    import torch

    from edgemed.compress._train_state import load_state, state_dir
    from edgemed.models import StudentSpec, create_student, load_student, student_payload

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
    if ctx.world_size > config.batch_size:
        raise ConfigError(f"{ctx.world_size} processes share batches of {config.batch_size} slices; each needs at "
                          f"least one: raise --batch-size to >= {ctx.world_size} or start fewer processes.")
    label = progress if isinstance(progress, str) else None
    progress = bool(progress) and ctx.is_main
    _set_torch_threads(config.threads)
    slices, soft, teacher_identity = _load_data(scans, teacher, teacher_predictions, teacher_store, ids, config,
                                                progress)
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
    fingerprint = {"recipe": {k: v for k, v in config.to_json().items() if k != "threads"},
                   "scans": [sc.name for sc in slices], "teacher": teacher_identity,
                   "init": None if init_ckpt is None else init_ckpt.manifest.digest}
    fingerprint = json.loads(json.dumps(fingerprint))  # as stored: tuples become lists
    saved = load_state(state_dir(out), fingerprint) if resume else None
    if not resume and ctx.is_main and (state_dir(out) / "state.json").is_file():
        warnings.warn(f"starting afresh: {state_dir(out)} holds the state of an unfinished run, which this run will "
                      "overwrite; pass resume=True (--resume) to continue it instead.", EdgemedWarning, stacklevel=3)
    members, history = [], []
    run = _Run(slices, organ_train, other_train, organs, soft, num_classes, config, progress, ctx,
               state_dir(out) if state_every and ctx.is_main else None, state_every, fingerprint)
    start = time.perf_counter() - (saved.seconds if saved is not None else 0.0)
    for m in range(config.ensemble):
        # Members differ by seed only: their own initialisation, batches and augmentation.
        seed = config.seed + m
        torch.manual_seed(seed)
        name = (label or "distill " + "+".join(o.name for o in organs)) + (
            f" [{m + 1}/{config.ensemble}]" if config.ensemble > 1 else "")
        start_net = load_student(init_ckpt).train() if init_ckpt is not None else create_student(member_spec)
        if saved is not None and m < saved.member:  # finished before the interruption
            start_net.load_state_dict(saved.finished[m])
            members.append(start_net.eval())
            history.extend(h for h in saved.history if h.get("member") == m)
            continue
        net, member_history = _train_member(start_net, run, seed, name, m, members, history, start,
                                            saved if saved is not None and m == saved.member else None)
        members.append(net)
        history.extend({"member": m, **h} for h in member_history)
    train_s = time.perf_counter() - start
    if config.ensemble == 1:
        net = members[0]
    else:
        from edgemed.models import Ensemble

        net = Ensemble(members).eval()
        history.append({"ensemble_val_dice": _validate_student_grid(net, slices, organs, config, ctx)})
    if not ctx.is_main:
        ctx.barrier()  # rank 0 evaluates on the native grids and writes the checkpoint
        return StudentCheckpoint.load(out)
    native = _evaluate_native(net, slices, organs, config)
    from edgemed.compress._qc_calibrate import qc_record

    qc = (qc_record(net, slices, organs, config, teacher_identity, seed=config.seed)  # the runtime QC's reference
          if calibrate_qc else None)
    training_extra: dict[str, object] = {"torch": torch.__version__, "soft_targets": soft,
                                          "threads": torch.get_num_threads()}
    if ctx.active:
        training_extra["distributed"] = {"world_size": ctx.world_size, "backend": ctx.backend,
                                         "per_process_batch": len(range(config.batch_size)[ctx.share(config.batch_size)])}
    if saved is not None:
        training_extra["resumed"] = {"member": saved.member, "epoch": saved.epoch}
    metadata = StudentMeta(
        organs=tuple(organs), label_map=label_map.to_json(), preprocess=config.preprocess,
        postprocess=config.postprocess, teacher=teacher_identity, scans=[sc.name for sc in slices],
        recipe=config.to_json(), validation=ValidationRecord.from_json(native),
        training=TrainingRecord(epochs=config.epochs, members=config.ensemble, seconds=round(train_s, 1),
                                seed=config.seed, parameters=int(sum(p.numel() for p in net.parameters())),
                                extra=training_extra),
        init=None if init_ckpt is None else {"digest": init_ckpt.manifest.digest, "pruning": init_ckpt.meta.pruning},
        qc=qc,
    )
    payload = student_payload(net, spec)
    if init_ckpt is not None:
        if init_ckpt.architecture.get("pruned"):
            payload["architecture.json"] = (json.dumps({**spec.to_json(), "pruned": True}, indent=2) + "\n").encode()
    payload["history.json"] = (json.dumps(history, indent=1) + "\n").encode()
    write_artifact(out, kind=STUDENT_KIND, schema_version=STUDENT_SCHEMA, payload=payload, overwrite=overwrite,
                   metadata=metadata.to_json(), parent=teacher_identity.get("sha256") if isinstance(teacher_identity, dict) else None)
    shutil.rmtree(state_dir(out), ignore_errors=True)
    ctx.barrier()
    return StudentCheckpoint.load(out)


@dataclass
class _Run:
    """What every member's training shares: the data, the recipe, the process group, where state goes."""

    slices: list[ScanSlices]
    organ_train: list[tuple[int, int]]
    other_train: list[tuple[int, int]]
    organs: list[OrganChannel]
    soft: bool
    num_classes: int
    config: DistillConfig
    progress: bool
    ctx: object
    state_path: Path | None
    state_every: int
    fingerprint: dict[str, object]


def _set_torch_threads(requested: int | None) -> int:
    """Set torch's threads for this job: `requested`, else $EDGEMED_THREADS, else the CPUs free now.

    Threads on CPUs that other programs keep busy stall every parallel region (2 threads beside one busy
    process on 2 cores: 2.3x the idle epoch time, 1 thread 1.4x; benchmarks/suite/busy_machine.py), so
    the default counts the free CPUs once, at the start. Inter-op threads stay at 1: the training loop runs ops one at a time.
    EDGEMED_THREADS=legacy keeps torch's own defaults (all cores).
    """
    import torch

    if requested is None and legacy_requested():
        return torch.get_num_threads()
    threads = job_threads(requested)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first inter-op work of the process
        pass
    return threads


def _train_member(net, run: _Run, seed: int, name: str, member: int, finished: list, history_before: list,  # type: ignore[no-untyped-def]
                  started: float, saved):
    """Train one network; returns it (its EMA weights when EMA is on) and its per-epoch history.

    Every process draws the same picks and augmentation parameters from the same seeded streams
    (what a single process draws) and keeps its share of each batch, so the global batch does not
    depend on the number of processes, and a run can resume on another number of them.
    """
    import torch

    from edgemed.compress._augment import augment_batch
    from edgemed.compress._losses import distill_loss
    from edgemed.compress._train_state import restore_training, save_training

    config, ctx = run.config, run.ctx
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    net = net.to(ctx.device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-(len(run.organ_train) + len(run.other_train)) // config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch,
                                                pct_start=0.15)
    ema = _Ema(net, config.ema_decay) if config.ema_decay is not None else None
    history: list[dict[str, object]] = []
    first = 0
    if saved is not None:
        first = restore_training(saved, net, ema, opt, sched, rng, gen)
        history = [{k: v for k, v in h.items() if k != "member"} for h in saved.history if h.get("member") == member]
    shipped = lambda: ema.module if ema is not None else net  # noqa: E731
    model = ctx.wrap(net)
    share = ctx.share(config.batch_size)
    bar = progress_bar(range(first, config.epochs), run.progress, desc=name, unit="epoch",
                       initial=first, total=config.epochs)
    for epoch in bar:
        model.train()
        losses = []
        for _ in range(steps_per_epoch):
            picks = _sample(rng, run.organ_train, run.other_train, config.batch_size, config.organ_slice_ratio)
            batch = make_batch(run.slices, picks, config.preprocess.context_slices, run.num_classes, rng=rng,
                               truncate_prob=config.augment.context_truncate,
                               flat_prob=config.augment.context_flat, keep=share)
            x, s_t, h_t = (torch.from_numpy(a) for a in batch)
            x, both = augment_batch(x, torch.cat([s_t, h_t], 1), config.augment, gen, batch=len(picks), keep=share)
            x, both = x.to(ctx.device), both.to(ctx.device)
            s_t, h_t = both[:, :run.num_classes], both[:, run.num_classes:]
            loss = distill_loss(model(x), s_t, h_t, temperature=config.temperature, soft=run.soft,
                                dice_weight=config.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(net)
            losses.append(loss.item())
        mean_loss = float(np.mean(losses))
        if ctx.active:
            mean_loss = float(ctx.all_reduce_sum(np.array([mean_loss]))[0]) / ctx.world_size
            ctx.broadcast_module_(shipped())  # BatchNorm statistics differ per process; rank 0's are shipped
        val = _validate_student_grid(shipped(), run.slices, run.organs, config, ctx)
        history.append({"epoch": epoch + 1, "loss": mean_loss, "val_dice": val})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{mean_loss:.3f}", **{o: f"{d:.3f}" for o, d in val.items()})
        done = epoch + 1
        last = done == config.epochs
        if run.state_path is not None and (done % run.state_every == 0 or last) and \
                not (last and member == config.ensemble - 1):
            save_training(run.state_path, run.fingerprint, member, done, net, ema, opt, sched, rng, gen, finished,
                          history_before, history, started, shipped().eval() if last else None)
    return shipped().cpu().eval(), history


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


def _load_data(scans, teacher, teacher_predictions, teacher_store, ids, config, progress):  # type: ignore[no-untyped-def]
    """Read every scan, get the teacher's output for it, and put both on the student grid.

    Scans are read one at a time, and with a teacher store each one's shard is read beside it, so
    only the student-grid training data stay in memory, never a teacher or its native-grid outputs.
    """
    from edgemed.compress._store import TeacherStore
    from edgemed.models.teachers import load_stored_prediction

    slices: list[ScanSlices] = []
    soft_flags: list[bool] = []
    identity: dict[str, object] = {}
    whole = heldout_scans(len(scans), config.holdout_fraction)
    if config.holdout_fraction > 0 and not whole:
        warnings.warn(
            "only slices of the training scan could be held out, so the validation Dice measures how the student "
            "fills gaps in a scan it has seen, not how it does on a new patient. Give 2 or more scans to hold out "
            "whole scans.", EdgemedWarning, stacklevel=4)
    store = None
    if teacher_store is not None:
        store = TeacherStore.open(teacher_store)
        store.check_matches(ids, config.label_map, config.temperature)
        identity = store.identity()
    desc = "run teacher" if teacher is not None else "read scans"
    for i, scan in enumerate(progress_bar(scans, progress and len(scans) > 1, desc=desc, unit="scan")):
        volume = scan if isinstance(scan, Volume) else read_volume(scan)
        name = volume.source or (Path(scan).name if not isinstance(scan, Volume) else f"volume{i}")
        if store is not None:
            probs, mask, is_soft = store.read(scan, volume)
        else:
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
                           config: DistillConfig, ctx=None) -> dict[str, float]:
    """Dice vs the teacher on the held-out slices, on the student grid (cheap; run every epoch).

    With several processes each predicts its share of every scan's held-out slices and the voxel
    counts are summed, so the Dice is the one a single process measures.
    """
    from edgemed.compress._dist import SINGLE
    from edgemed.models import predict_slices

    ctx = ctx or SINGLE
    counts = np.zeros((len(organs), 3), np.int64)  # per organ: overlap, predicted, reference voxels
    held_out = False
    for sc in slices:
        if not sc.val_ks.size:
            continue
        held_out = True
        ks = sc.val_ks[ctx.share(sc.val_ks.size)]
        if not ks.size:
            continue
        pred = predict_slices(net, sc.image, ks, config.preprocess.context_slices, step=sc.geom.context_step).argmax(1)
        ref = sc.hard[ks]
        for i, o in enumerate(organs):
            p, r = pred == o.channel, ref == o.channel
            counts[i] += (int(np.logical_and(p, r).sum()), int(p.sum()), int(r.sum()))
    if not held_out:
        return {}
    counts = ctx.all_reduce_sum(counts)
    return {o.name: round(_dice_from_counts(*counts[i]), 4) for i, o in enumerate(organs)}


def _dice_from_counts(overlap: int, predicted: int, reference: int) -> float:
    """`edgemed.metrics.dice` from voxel counts (1.0 when both masks are empty)."""
    total = int(predicted) + int(reference)
    return 1.0 if total == 0 else 2.0 * int(overlap) / total


def _evaluate_native(net, slices: list[ScanSlices], organs: list[OrganChannel],  # type: ignore[no-untyped-def]
                     config: DistillConfig) -> dict[str, object]:
    """Dice vs the teacher on the held-out slices, on each scan's own grid (as users will see it)."""
    from edgemed.models import predict_slices

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
