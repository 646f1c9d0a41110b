"""Sharding across processes started by torchrun: rank, world size and a barrier (gloo).

Scoring needs no gradient exchange, only "everyone has finished" before rank 0 merges, so one
CPU process group (gloo) serves for CPU and CUDA runs alike.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from petctiqa.pool import available_cores


@dataclass(frozen=True)
class Shard:
    rank: int
    world: int
    local_rank: int
    barrier: Callable[[], None] | None
    """None when not distributed."""


def torchrun_shard() -> Shard:
    """This process's shard: from torchrun's environment (gloo group started here), else 0/1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(0, 1, 0, None)
    if not dist.is_initialized():
        # Scoring a large archive may keep one rank busy long after another: a long timeout.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
    return Shard(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.barrier
    )


def local_world_size() -> int:
    """How many processes torchrun started on this node (1 when not under torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def threads_per_process(cores: int | None = None) -> int:
    """Model threads for one of this node's ``LOCAL_WORLD_SIZE`` processes: the node's cores
    shared out among them. torchrun sets ``OMP_NUM_THREADS=1`` for every process it starts,
    which leaves cores idle when a node has more cores than processes, and a thread count
    set by hand for a single process oversubscribes the cores once several run."""
    return max(1, (cores or available_cores()) // local_world_size())


def broadcast_flag(shard: Shard, value: int) -> int:
    """Rank 0's ``value`` on every rank (the exit status after the merge)."""
    if shard.barrier is None:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.broadcast(tensor, 0)
    return int(tensor.item())


def close(shard: Shard) -> None:
    if shard.barrier is not None:
        dist.destroy_process_group()
