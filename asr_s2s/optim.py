"""What training optimizes and how: the model with its DDP wrapper, AdamW and the learning-rate schedule.

The schedule is a linear warm-up over ``train.warmup_steps`` updates followed by ``train.schedule``:
``cosine`` decays to ``min_lr_ratio`` of the peak over the planned updates (``train.max_steps``
when set and shorter than the epochs), ``noam`` decays as ``1 / sqrt(step)``, ``constant`` stays at
the peak, and ``plateau`` halves the rate when the dev loss stops falling, once warm-up is over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from asr_s2s.config import Config
from asr_s2s.distributed import Process
from asr_s2s.model import Seq2Seq


def build_model(config: Config, vocab_size: int) -> Seq2Seq:
    """A freshly initialized model for ``config`` (with a CTC head when ``train.ctc_weight`` > 0)."""
    return Seq2Seq(config.model, config.features.n_mels, vocab_size, ctc=config.train.ctc_weight > 0)


def ctc_only(config: Config) -> bool:
    """``train.ctc_weight`` = 1: the encoder and its CTC head train alone; the decoder is not run."""
    return config.train.ctc_weight >= 1.0


def wrap_ddp(
    model: Seq2Seq, dist: Process, device: torch.device, decoder_unused: bool = False
) -> torch.nn.Module:
    """``model`` itself in a single process, else wrapped in :class:`DistributedDataParallel`
    (told that the decoder's parameters get no gradient when ``decoder_unused``)."""
    if dist.world == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=decoder_unused)


def build_optimizer(model: torch.nn.Module, config: Config) -> torch.optim.Optimizer:
    """AdamW at the peak rate ``train.lr`` with ``train.weight_decay``."""
    t = config.train
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def planned_steps(epoch_lengths: Iterable[int], max_steps: int = 0) -> int:
    """Updates the run will make: the batches of all epochs, capped at ``max_steps`` when set."""
    total = sum(epoch_lengths)
    return min(total, max_steps) if max_steps else total


def lr_lambda(cfg: Config, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a step: linear warm-up, then the chosen decay
    (``plateau`` and ``constant`` stay at 1 after warm-up: plateau reductions come from
    :class:`LrSchedule`)."""
    t = cfg.train
    warmup = max(1, t.warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if t.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if t.schedule == "noam":
            return math.sqrt(warmup / (step + 1))
        return 1.0

    return factor


class LrSchedule:
    """The learning rate over a run: :meth:`after_update` after each optimizer step,
    :meth:`after_epoch` after each dev pass.

    A :class:`~torch.optim.lr_scheduler.LambdaLR` of :func:`lr_lambda` sets the rate at every update;
    with ``plateau`` it does so only during warm-up, after which a
    :class:`~torch.optim.lr_scheduler.ReduceLROnPlateau` on the dev loss takes over.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: Config, total_steps: int) -> None:
        self.warmup = max(1, config.train.warmup_steps)
        self.per_update = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1)
            if config.train.schedule == "plateau"
            else None
        )
        self.updates = 0

    @property
    def needs_dev_loss(self) -> bool:
        """Whether :meth:`after_epoch` uses the dev loss (so every rank must be given rank 0's)."""
        return self.plateau is not None

    def after_update(self) -> None:
        """Advance by one optimizer step."""
        self.updates += 1
        if self.plateau is None or self.updates <= self.warmup:
            self.per_update.step()

    def after_epoch(self, dev_loss: float) -> None:
        """Let the plateau rule see this epoch's dev loss (warm-up finished); no-op otherwise."""
        if self.plateau is not None and self.updates >= self.warmup:
            self.plateau.step(dev_loss)

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "per_update": self.per_update.state_dict(),
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "per_update" not in state:  # a checkpoint from before warm-up applied to plateau
            if self.plateau is not None:
                self.plateau.load_state_dict(state)
                self.updates = self.warmup
            else:
                self.per_update.load_state_dict(state)
                self.updates = state["last_epoch"]
            return
        self.updates = state["updates"]
        self.per_update.load_state_dict(state["per_update"])
        if self.plateau is not None and state["plateau"] is not None:
            self.plateau.load_state_dict(state["plateau"])
