"""Resumable distillation: the training state beside the student (`<out>.resume/`), no pickle.

Tensors (weights, EMA, AdamW moments, the augmentation generator, finished ensemble members) go
into one safetensors file; everything else (epoch, member, history, the sampling RNG, optimizer
hyper-parameters, the one-cycle schedule) into JSON. Restored, a run continues bit-for-bit where
it stopped: the same samples, augmentations and updates as if it had never stopped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._atomic import atomic_dir
from edgemed.errors import ArtifactError, ConfigError

__all__ = ["TrainState", "load_state", "restore_training", "save_state", "save_training", "state_dir"]

STATE_SCHEMA = 1
_JSON, _TENSORS = "state.json", "tensors.safetensors"


def state_dir(out: str | os.PathLike[str]) -> Path:
    """Where the resumable state of the student `out` lives: `<out>.resume` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".resume")


@dataclass
class TrainState:
    """Everything needed to continue distillation after member `member` has done `epoch` epochs.

    Attributes:
        fingerprint: Recipe, scans, teacher and init the state belongs to (resume refuses others).
        member: The ensemble member in training (earlier ones are in `finished`).
        epoch: Epochs of `member` completed.
        history: Per-epoch records of every member so far.
        finished: Shipped weights of members 0 .. member-1.
        net / ema: The member's weights and its EMA (None without EMA); ema_steps its step count.
        optimizer / scheduler: torch state dicts (optimizer tensors included).
        rng: numpy bit-generator state of the sample stream; generator: torch generator state.
        seconds: Training time spent so far.
    """

    fingerprint: dict[str, Any]
    member: int
    epoch: int
    history: list[dict[str, Any]]
    finished: list[dict[str, Any]]
    net: dict[str, Any]
    ema: dict[str, Any] | None
    ema_steps: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    generator: Any
    seconds: float


def save_state(path: Path, state: TrainState) -> None:
    """Write `state` to the directory `path`, atomically (the old state stays until the new one is whole)."""
    import torch
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {"generator": state.generator.clone()}
    tensors.update({f"net.{k}": v for k, v in state.net.items()})
    if state.ema is not None:
        tensors.update({f"ema.{k}": v for k, v in state.ema.items()})
    for m, weights in enumerate(state.finished):
        tensors.update({f"member{m}.{k}": v for k, v in weights.items()})
    opt_scalars: dict[str, dict[str, Any]] = {}
    for idx, per_param in state.optimizer["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{idx}.{key}"] = value.reshape(-1) if value.dim() == 0 else value
                if value.dim() == 0:
                    opt_scalars.setdefault(str(idx), {})[key] = "scalar"
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    meta = {
        "schema": STATE_SCHEMA, "fingerprint": state.fingerprint, "member": state.member, "epoch": state.epoch,
        "members_finished": len(state.finished), "history": state.history, "ema": state.ema is not None,
        "ema_steps": state.ema_steps, "optimizer": {"param_groups": state.optimizer["param_groups"],
                                                    "scalars": opt_scalars},
        "scheduler": state.scheduler, "rng": state.rng, "seconds": state.seconds,
    }
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / _TENSORS))
        (tmp / _JSON).write_text(json.dumps(meta, indent=1) + "\n")


def load_state(path: Path, fingerprint: dict[str, Any]) -> TrainState | None:
    """The state in `path`, or None when there is none.

    Raises:
        ConfigError: The state belongs to another recipe, scan list, teacher or init.
        ArtifactError: The state files are unreadable.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (path / _JSON).is_file():
        return None
    try:
        meta = json.loads((path / _JSON).read_text())
        tensors = load_file(str(path / _TENSORS))
    except (OSError, ValueError, SafetensorError) as err:
        raise ArtifactError(f"{path} is damaged ({err}); delete it to start afresh.") from err
    if meta.get("schema") != STATE_SCHEMA:
        raise ArtifactError(f"{path} has state schema {meta.get('schema')}; this edgemed reads {STATE_SCHEMA}. "
                            "Delete it to start afresh.")
    if meta["fingerprint"] != fingerprint:
        differ = sorted(k for k in set(fingerprint) | set(meta["fingerprint"])
                        if fingerprint.get(k) != meta["fingerprint"].get(k))
        raise ConfigError(f"{path} was saved by a run with other {', '.join(differ)}; resume with the same scans, "
                          f"teacher and options, or delete {path} (or drop --resume) to start afresh.")

    def part(prefix: str) -> dict[str, Any]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    opt_state: dict[int, dict[str, Any]] = {}
    for idx, scalars in meta["optimizer"]["scalars"].items():
        opt_state[int(idx)] = {k: v for k, v in scalars.items() if v != "scalar"}
    for key, value in part("opt.").items():
        idx, name = key.split(".", 1)
        scalar = meta["optimizer"]["scalars"].get(idx, {}).get(name) == "scalar"
        opt_state.setdefault(int(idx), {})[name] = value.reshape(()) if scalar else value
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return TrainState(
        fingerprint=meta["fingerprint"], member=int(meta["member"]), epoch=int(meta["epoch"]),
        history=meta["history"], finished=[part(f"member{m}.") for m in range(int(meta["members_finished"]))],
        net=part("net."), ema=part("ema.") if meta["ema"] else None, ema_steps=int(meta["ema_steps"]),
        optimizer={"state": opt_state, "param_groups": groups}, scheduler=meta["scheduler"],
        rng=meta["rng"], generator=tensors["generator"], seconds=float(meta["seconds"]),
    )


def rng_state_json(rng: np.random.Generator) -> dict[str, Any]:
    """The numpy generator's state as JSON-ready data (ints stay exact in JSON)."""
    return dict(rng.bit_generator.state)


def save_training(path: Path, fingerprint: dict[str, Any], member: int, epoch: int, net: Any, ema: Any, opt: Any,
                  sched: Any, rng: np.random.Generator, gen: Any, finished: list[Any], history_before: list[Any],
                  history: list[Any], started: float, done_net: Any) -> None:
    """Save a member's training after `epoch` epochs; with `done_net` the member is finished (next starts at 0)."""
    import time

    cpu = lambda module: {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}  # noqa: E731
    records = list(history_before) + [{"member": member, **h} for h in history]
    done = [cpu(m) for m in finished] + ([cpu(done_net)] if done_net is not None else [])
    save_state(path, TrainState(
        fingerprint=fingerprint, member=member + (done_net is not None), epoch=0 if done_net is not None else epoch,
        history=records, finished=done, net=cpu(net), ema=cpu(ema.module) if ema is not None else None,
        ema_steps=ema.steps if ema is not None else 0, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
        rng=rng_state_json(rng), generator=gen.get_state(), seconds=time.perf_counter() - started))


def restore_training(saved: TrainState, net: Any, ema: Any, opt: Any, sched: Any, rng: np.random.Generator,
                     gen: Any) -> int:
    """Load a saved member's weights, EMA, optimizer, schedule and random streams; returns the epoch to start at."""
    import torch

    device = next(net.parameters()).device
    net.load_state_dict({k: v.to(device) for k, v in saved.net.items()})
    if ema is not None:
        if saved.ema is None:
            raise ConfigError("the saved state has no EMA weights but this run uses EMA; start afresh.")
        ema.module.load_state_dict({k: v.to(device) for k, v in saved.ema.items()})
        ema.steps = saved.ema_steps
    opt.load_state_dict(saved.optimizer)
    sched.load_state_dict(saved.scheduler)
    rng.bit_generator.state = saved.rng
    gen.set_state(saved.generator.to(torch.uint8))
    return int(saved.epoch)
