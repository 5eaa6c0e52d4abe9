"""Multi-process training with ``torchrun``: DistributedDataParallel, NCCL on GPUs, gloo on CPUs.

Launch (one node, 4 GPUs)::

    torchrun --standalone --nproc_per_node 4 -m scdl train --cohort cohort.csv --out runs/a --device cuda

Several nodes: the same command on every node with ``--nnodes N --node_rank R --rdzv_backend c10d
--rdzv_endpoint HOST:PORT`` instead of ``--standalone``. ``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK;
process ``r`` uses GPU ``LOCAL_RANK`` and draws samples ``r·b .. r·b + b - 1`` of every step (b = the batch
in the config, per process), so the global batch is ``WORLD_SIZE·b`` and the data stream is the one a single
process with batch ``WORLD_SIZE·b`` sees. Rank 0 prepares the cache, validates, logs and writes checkpoints;
the others wait at a barrier. A SIGTERM/SIGINT on any process stops all of them at the same iteration.

Batch norm: per-process statistics by default on CPU/gloo; with NCCL (GPUs) ``sync_batchnorm="auto"``
converts the networks to SyncBatchNorm, so the statistics cover the global batch (2 labeled + 2 unlabeled
patches per GPU is too few for stable per-GPU statistics). The saved networks are plain BatchNorm again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands among the training processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from_torchrun() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the variables torchrun sets; (0, 1, 0) without them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group when started by torchrun (NCCL for CUDA, gloo otherwise)."""
    rank, world, local = env_from_torchrun()
    if world <= 1:
        return DistEnv()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, backend=backend)


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def mean_across(env: DistEnv, values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of scalar values over the processes (the loss a single process with the global batch logs)."""
    if not env.enabled or not values:
        return values
    keys = list(values)         # same insertion order on every rank (the step returns its terms in a fixed order)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= env.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def any_across(env: DistEnv, flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any process (used for stop requests)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """``obj`` of every process, in rank order, on every process."""
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def use_sync_batchnorm(setting: Any, env: DistEnv, device: torch.device) -> bool:
    """``auto``: SyncBatchNorm when several processes share CUDA devices (NCCL); off on CPU/gloo."""
    if not env.enabled:
        return False
    if isinstance(setting, bool):
        return setting
    return device.type == "cuda"
