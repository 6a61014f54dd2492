"""Single-process behaviour; the multi-process paths run in test_train's torchrun tests."""

from __future__ import annotations

import pytest
import torch

from asr_s2s.distributed import Process, any_rank, barrier, from_main, gather_to_main, init_distributed
from asr_s2s.errors import TrainingError


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


def test_barrier_in_one_process() -> None:
    barrier(Process())  # returns at once, with no process group


def test_from_main_in_one_process() -> None:
    assert from_main(lambda: {"mean": 1.0}, Process()) == {"mean": 1.0}

    def fail() -> None:
        raise TrainingError("nothing readable")

    with pytest.raises(TrainingError, match="nothing readable"):
        from_main(fail, Process())


FROM_MAIN_SCRIPT = """
import time
from pathlib import Path
import torch
from asr_s2s.distributed import barrier, from_main, init_distributed
from asr_s2s.errors import TrainingError

info, device = init_distributed("cpu")
calls = []
def compute():
    calls.append(info.rank)
    return torch.full((3,), 7.0)
got = from_main(compute, info)
assert torch.equal(got, torch.full((3,), 7.0)) and calls == ([0] if info.main else [])
def fail():
    raise TrainingError("none readable")
try:
    from_main(fail, info)
except TrainingError as err:  # one file per rank: two ranks' prints can interleave on a shared pipe
    Path(f"rank{info.rank}.txt").write_text(f"rank {info.rank}: {err}")
if info.main:  # rank 1 must not get past the barrier before rank 0's late file exists
    time.sleep(1.0)
    Path("late.txt").write_text("written")
barrier(info)
assert Path("late.txt").read_text() == "written"
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_from_main_and_barrier_across_two_processes(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "from_main.py"
    script.write_text(FROM_MAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert got == ["rank 0: none readable", "rank 1: none readable"]
