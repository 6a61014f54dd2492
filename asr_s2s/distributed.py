"""This process's place in a torchrun job (DistributedDataParallel): rank, device, and agreement."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from asr_s2s.device import resolve_device
from asr_s2s.errors import AsrError

T = TypeVar("T")


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


def init_distributed(device: str | torch.device | None) -> tuple[Process, torch.device]:
    """Pick the device (:func:`asr_s2s.device.resolve_device`: under torchrun ``cuda`` is this
    process's ``LOCAL_RANK`` GPU) and, when ``WORLD_SIZE`` > 1, join torchrun's process group: NCCL
    on GPUs, gloo on CPUs. The device is resolved first, so a bad ``--device`` fails before any
    process waits for the others."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = Process(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # Dev evaluation runs on rank 0 while the others wait: allow it far longer than the default.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
    return info, dev


def any_rank(flag: bool, info: Process, device: torch.device) -> bool:
    """True when ``flag`` is set on any rank (so that every rank takes the same branch)."""
    if info.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: Process) -> None:
    """Return once every rank has called it (at once without torchrun)."""
    if info.world > 1:
        dist.barrier()


def gather_to_main(obj: Any, info: Process) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0, ``None`` on the others (all ranks must call it)."""
    if info.world == 1:
        return [obj]
    gathered: list[Any] | None = [None] * info.world if info.main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def from_main(compute: Callable[[], T], info: Process) -> T:
    """``compute()`` run on rank 0 only, its result sent to every rank (all ranks must call it).

    An :class:`AsrError` raised on rank 0 is raised on every rank, so none is left waiting.
    """
    if info.world == 1:
        return compute()
    message: list[Any] = [None]
    if info.main:
        try:
            message = [("ok", compute())]
        except AsrError as err:
            message = [("error", err)]
    dist.broadcast_object_list(message, src=0)
    kind, value = message[0]
    if kind == "error":
        raise value
    return value
