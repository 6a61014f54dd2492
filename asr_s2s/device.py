"""Which torch device a command runs on: ``cpu``, ``cuda`` (this process's GPU) or ``cuda:N``."""

from __future__ import annotations

import os

import torch

from asr_s2s.errors import DeviceError


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device for ``--device NAME``, always with an index for CUDA.

    ``None``: this process's GPU when CUDA is available, else the CPU. ``"cuda"``: under torchrun
    (``LOCAL_RANK`` set) GPU ``LOCAL_RANK``, else the current GPU (``cuda:0`` unless changed).
    ``"cuda:N"``: GPU N; with several torchrun processes on a node that would put them all on one GPU,
    so it is refused. Raises :class:`DeviceError` (one line) for an unknown name, for CUDA without a
    usable GPU, and for a GPU index that does not exist.
    """
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {name}: unknown device (expected cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise DeviceError(
            f"--device {name}: unsupported device type '{device.type}' (expected cpu, cuda or cuda:N)"
        )
    if not torch.cuda.is_available():
        why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise DeviceError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
    count = torch.cuda.device_count()
    local_rank = os.environ.get("LOCAL_RANK")
    if device.index is None:
        index = int(local_rank) if local_rank is not None else torch.cuda.current_device()
        if index >= count:
            raise DeviceError(
                f"--device {name}: this process has LOCAL_RANK {index} but {count} GPU(s) are visible; "
                "start at most one process per GPU"
            )
        return torch.device("cuda", index)
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        raise DeviceError(
            f"--device {name}: with {os.environ['LOCAL_WORLD_SIZE']} torchrun processes on this node every "
            "process would use the same GPU; use --device cuda (each process takes its LOCAL_RANK GPU) "
            "and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    if device.index >= count:
        raise DeviceError(f"--device {name}: no such GPU ({count} visible: cuda:0 to cuda:{count - 1})")
    return device
