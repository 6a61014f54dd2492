"""Single-process behaviour; the multi-process paths run in test_train's torchrun tests."""

from __future__ import annotations

import pytest
import torch

from asr_s2s.distributed import Process, any_rank, gather_to_main, init_distributed


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info, device = init_distributed("cpu")
    assert info == Process(0, 1, 0) and info.main
    assert device == torch.device("cpu")
    assert not torch.distributed.is_initialized()


def test_rank_comes_from_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # WORLD_SIZE 1 joins no process group, but the ranks are still read as torchrun sets them.
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info, _ = init_distributed("cpu")
    assert (info.rank, info.local_rank, info.main) == (3, 1, False)


def test_any_rank_is_the_flag_in_one_process() -> None:
    for flag in (False, True):
        assert any_rank(flag, Process(), torch.device("cpu")) is flag


def test_gather_to_main_in_one_process() -> None:
    assert gather_to_main({"a": 1}, Process()) == [{"a": 1}]
