"""PyTorch's own distributed engine under `torchrun`: which process this is, and the few collectives we need.

edgemed builds no scheduler: `torchrun` (or `srun` + `torchrun` on Slurm) starts the processes and
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `distributed()` joins them into a
process group (gloo on CPU, nccl on CUDA). Without WORLD_SIZE there is no process group at all and
every helper here is a no-op, so a plain single-process run behaves exactly as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed.errors import ConfigError

__all__ = ["BACKEND_ENV", "DistContext", "SINGLE", "distributed"]

BACKEND_ENV = "EDGEMED_DIST_BACKEND"
_BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True, slots=True)
class DistContext:
    """This process's place in a distributed run.

    Attributes:
        rank: Global rank (0 writes every artifact and shows progress bars).
        world_size: Number of processes (1: no process group).
        local_rank: Rank on this node (picks the GPU).
        backend: "gloo" or "nccl", or None without a process group.
        device: Where training tensors live: "cpu", or "cuda:<local_rank>" with nccl.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """True on the process that writes artifacts and prints (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when a process group exists (collectives are real)."""
        return self.backend is not None

    def barrier(self) -> None:
        """Wait until every process gets here (no-op without a process group)."""
        if self.active:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of `values` over all processes (int64 or float64 array; a copy when single)."""
        values = np.asarray(values)
        if not self.active:
            return values.copy()
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu().numpy()

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's `obj` (small, picklable values), in rank order ([obj] when single)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_module_(self, module: Any) -> None:
        """Copy rank 0's parameters and buffers into `module` on every process, in place."""
        if not self.active:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def wrap(self, net: Any) -> Any:
        """`net` on this process's device, in DistributedDataParallel when there is a process group."""
        net = net.to(self.device)
        if not self.active:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[self.local_rank] if self.device.startswith("cuda") else None)

    def share(self, n: int) -> slice:
        """This process's items among n per-step items: rank, rank + world, … (DistributedSampler's rule)."""
        return slice(self.rank, n, self.world_size)


SINGLE = DistContext()


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        return int(raw)
    except ValueError as err:
        raise ConfigError(f"{name}={raw!r} is not an integer; start the processes with torchrun.") from err


def _pick_backend(requested: str | None) -> str:
    import torch

    backend = (requested or os.environ.get(BACKEND_ENV) or ("nccl" if torch.cuda.is_available() else "gloo")).lower()
    if backend not in _BACKENDS:
        raise ConfigError(f"distributed backend {backend!r} is unknown; use gloo (CPU) or nccl (NVIDIA GPUs).")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError(f"the nccl backend needs CUDA GPUs, and torch {torch.__version__} sees none here. Use "
                          f"{BACKEND_ENV}=gloo to train on CPUs, or run on GPU nodes with a CUDA build of torch.")
    return backend


@contextlib.contextmanager
def distributed(backend: str | None = None) -> Iterator[DistContext]:
    """Join the processes torchrun started, for the duration of the block.

    Reads RANK, WORLD_SIZE and LOCAL_RANK (set by torchrun); without WORLD_SIZE it yields the
    single-process context and touches nothing. A process group that already exists (the caller
    made it) is used as is and left open; one made here is destroyed on exit.

    Args:
        backend: "gloo" or "nccl"; default $EDGEMED_DIST_BACKEND, else nccl when CUDA is
            available and gloo otherwise.

    Raises:
        ConfigError: nccl without CUDA, an unknown backend, or more processes on a node than GPUs.

    Example:
        >>> # torchrun --nproc_per_node 2 script.py
        >>> with distributed() as ctx:
        ...     ckpt = distill(scans, config, "runs/liver", teacher_store="store/")
    """
    if "WORLD_SIZE" not in os.environ:
        yield SINGLE
        return
    import torch
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        chosen = _pick_backend(backend)
    else:
        chosen = str(dist.get_backend()).lower()
    rank, world = (_env_int("RANK"), _env_int("WORLD_SIZE")) if created else (dist.get_rank(), dist.get_world_size())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = "cpu"
    if chosen == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}. "
                              "Start at most one process per GPU (torchrun --nproc_per_node <GPUs>).")
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if created:
        dist.init_process_group(backend=chosen, rank=rank, world_size=world,
                                **({"device_id": torch.device(device)} if chosen == "nccl" else {}))
    try:
        yield DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=chosen, device=device)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()

