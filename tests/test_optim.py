"""Tests for asr_s2s.optim: the model and optimizer builders and the learning-rate schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from asr_s2s.distributed import Process
from asr_s2s.optim import LrSchedule, build_model, build_optimizer, lr_lambda, planned_steps, wrap_ddp

PEAK = 1e-2


def _lrs(config, total: int, updates: int, dev_losses: dict[int, float] | None = None) -> list[float]:
    """The learning rate used by each of ``updates`` optimizer steps; ``dev_losses[k]`` is passed to
    :meth:`LrSchedule.after_epoch` after update ``k``."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=PEAK)
    schedule = LrSchedule(optimizer, config, total)
    seen = []
    for k in range(1, updates + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_update()
        if dev_losses and k in dev_losses:
            schedule.after_epoch(dev_losses[k])
    return seen


def test_planned_steps_caps_at_max_steps() -> None:
    assert planned_steps([5, 5, 5]) == 15
    assert planned_steps([5, 5, 5], max_steps=4) == 4
    assert planned_steps([5, 5, 5], max_steps=100) == 15


def test_cosine_reaches_its_floor_at_max_steps() -> None:
    config = tiny_config(train__schedule="cosine", train__warmup_steps=2, train__min_lr_ratio=0.1)
    total = planned_steps([50, 50], max_steps=10)
    factor = lr_lambda(config, total)
    assert factor(0) == pytest.approx(0.5) and factor(1) == pytest.approx(1.0)
    # Reference: the cosine from 1 to 0.1 over updates 2..10, written out.
    for step in range(2, 11):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 2) / 8))
        assert factor(step) == pytest.approx(expected)
    assert factor(10) == pytest.approx(0.1)


def test_trainer_decays_over_max_steps_not_the_epochs(tiny_manifest, tmp_path: Path) -> None:
    from asr_s2s.train import Trainer

    train = tiny_manifest(["one", "two", "three", "four"], 0.3)
    config = tiny_config(
        train__epochs=20, train__max_steps=6, train__max_frames=40, train__lr=PEAK, train__min_lr_ratio=0.1
    )
    trainer = Trainer(config, train, train, tmp_path / "exp", progress=False)
    assert trainer.total_steps == 6 < sum(trainer._epoch_len(e) for e in range(20))
    trainer.fit()
    assert trainer.step == 6
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * PEAK)


def test_plateau_keeps_the_warm_up_then_halves_on_a_stalled_dev_loss() -> None:
    config = tiny_config(train__schedule="plateau", train__warmup_steps=4)
    # A dev pass during warm-up (after update 2) must not count towards the plateau.
    lrs = _lrs(config, 100, 12, dev_losses={2: 1.0, 4: 1.0, 6: 1.0, 8: 1.0, 10: 1.0})
    assert lrs[:4] == pytest.approx([PEAK * k / 4 for k in (1, 2, 3, 4)])
    # After warm-up: the peak, then halved once the loss has failed to improve for 2 passes (patience 1).
    assert lrs[4:8] == pytest.approx([PEAK] * 4)
    assert lrs[8:] == pytest.approx([PEAK / 2] * 4)


def test_schedule_state_round_trip_continues_identically() -> None:
    for schedule in ("cosine", "plateau", "noam"):
        config = tiny_config(train__schedule=schedule, train__warmup_steps=3)
        losses = {3: 2.0, 5: 2.0, 7: 2.0}
        straight = _lrs(config, 10, 9, losses)
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.AdamW([param], lr=PEAK)
        first = LrSchedule(optimizer, config, 10)
        for k in range(1, 6):
            optimizer.step()
            first.after_update()
            if k in losses:
                first.after_epoch(losses[k])
        state, opt_state = first.state_dict(), optimizer.state_dict()
        param2 = torch.nn.Parameter(torch.zeros(1))
        optimizer2 = torch.optim.AdamW([param2], lr=PEAK)
        second = LrSchedule(optimizer2, config, 10)
        optimizer2.load_state_dict(opt_state)
        second.load_state_dict(state)
        resumed = []
        for k in range(6, 10):
            resumed.append(optimizer2.param_groups[0]["lr"])
            optimizer2.step()
            second.after_update()
            if k in losses:
                second.after_epoch(losses[k])
        assert resumed == pytest.approx(straight[5:]), schedule


def test_build_model_and_optimizer() -> None:
    with_ctc = build_model(tiny_config(train__ctc_weight=0.3), 12)
    without = build_model(tiny_config(train__ctc_weight=0.0), 12)
    assert with_ctc.ctc_head is not None and without.ctc_head is None
    assert wrap_ddp(without, Process(), torch.device("cpu")) is without
    optimizer = build_optimizer(without, tiny_config(train__lr=3e-3, train__weight_decay=0.5))
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["lr"] == 3e-3 and group["weight_decay"] == 0.5
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in without.parameters())
