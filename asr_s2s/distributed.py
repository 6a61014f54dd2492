"""This process's place in a torchrun job (DistributedDataParallel): rank, device, and agreement."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Process:
    """Rank of this process among ``world`` (1 without torchrun) and its rank on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, evaluates and writes files."""
        return self.rank == 0


def init_distributed(device: str | None) -> tuple[Process, torch.device]:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on GPUs, gloo on CPUs) and pick
    the device: ``device`` when given, else this process's GPU, else the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        # Dev evaluation runs on rank 0 while the others wait: allow it far longer than the default.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
    info = Process(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device is None:
        device = f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return info, dev


def any_rank(flag: bool, info: Process, device: torch.device) -> bool:
    """True when ``flag`` is set on any rank (so that every rank takes the same branch)."""
    if info.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_to_main(obj: Any, info: Process) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` on the others (all ranks must call it)."""
    if info.world == 1:
        return [obj]
    gathered: list[Any] | None = [None] * info.world if info.main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered
