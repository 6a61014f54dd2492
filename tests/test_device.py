"""Device choice: ``cpu``/``cuda``/``cuda:N``, torchrun's LOCAL_RANK GPU, one-line errors without CUDA.

CUDA is simulated with monkeypatched ``torch.cuda`` functions, so these run on any machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asr_s2s import distributed
from asr_s2s.cli import main
from asr_s2s.device import resolve_device
from asr_s2s.errors import DeviceError

TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0) -> list[torch.device]:
    """Pretend ``count`` GPUs are visible; returns the list that ``torch.cuda.set_device`` appends to."""
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_cpu_and_default_without_gpu(no_torchrun: pytest.MonkeyPatch) -> None:
    fake_gpus(no_torchrun, 0)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu_is_one_line(no_torchrun: pytest.MonkeyPatch, name: str) -> None:
    fake_gpus(no_torchrun, 0)
    with pytest.raises(DeviceError) as err:
        resolve_device(name)
    message = str(err.value)
    assert message.startswith(f"--device {name}: CUDA is not available")
    assert "use --device cpu" in message and "\n" not in message


def test_unknown_device_names(no_torchrun: pytest.MonkeyPatch) -> None:
    fake_gpus(no_torchrun, 1)
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="unsupported device type 'meta'"):
        resolve_device("meta")


def test_plain_cuda_gets_an_index(no_torchrun: pytest.MonkeyPatch) -> None:
    # torch.device("cuda") has no index, which torch.cuda.set_device rejects (the old traceback).
    fake_gpus(no_torchrun, 2, current=1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device(None) == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"no such GPU \(2 visible: cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_torchrun_rank_takes_its_local_rank_gpu(no_torchrun: pytest.MonkeyPatch) -> None:
    fake_gpus(no_torchrun, 4)
    no_torchrun.setenv("LOCAL_WORLD_SIZE", "4")
    for local_rank in range(4):
        no_torchrun.setenv("LOCAL_RANK", str(local_rank))
        assert resolve_device("cuda") == torch.device("cuda", local_rank)
        assert resolve_device(None) == torch.device("cuda", local_rank)
    no_torchrun.setenv("LOCAL_RANK", "5")
    with pytest.raises(DeviceError, match="LOCAL_RANK 5 but 4 GPU"):
        resolve_device("cuda")


def test_fixed_gpu_index_refused_with_several_processes_per_node(no_torchrun: pytest.MonkeyPatch) -> None:
    fake_gpus(no_torchrun, 2)
    no_torchrun.setenv("LOCAL_RANK", "1")
    no_torchrun.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(DeviceError, match="every process would use the same GPU"):
        resolve_device("cuda:0")
    # One process per node (several nodes): a fixed index is that process's choice.
    no_torchrun.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_init_distributed_sets_this_ranks_gpu(no_torchrun: pytest.MonkeyPatch) -> None:
    chosen = fake_gpus(no_torchrun, 2)
    # WORLD_SIZE 1 joins no process group; the rank and device still come from torchrun's variables.
    no_torchrun.setenv("WORLD_SIZE", "1")
    no_torchrun.setenv("RANK", "1")
    no_torchrun.setenv("LOCAL_RANK", "1")
    info, device = distributed.init_distributed("cuda")
    assert device == torch.device("cuda", 1) and chosen == [torch.device("cuda", 1)]
    assert (info.rank, info.local_rank) == (1, 1)


def test_init_distributed_fails_before_joining_a_group(no_torchrun: pytest.MonkeyPatch) -> None:
    # With WORLD_SIZE 2 a process group would wait for a second process: the device error comes first.
    fake_gpus(no_torchrun, 0)
    no_torchrun.setenv("WORLD_SIZE", "2")
    no_torchrun.setattr(
        torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("joined a process group")
    )
    with pytest.raises(DeviceError):
        distributed.init_distributed("cuda")


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--train", "{m}", "--dev", "{m}", "--out", "{d}/exp"],
        ["evaluate", "--model", "{d}/model.pt", "--manifest", "{m}", "--out", "{d}/eval"],
        ["transcribe", "--model", "{d}/model.pt", "{d}/a.wav"],
        ["serve", "--model", "{d}/model.pt"],
        ["train-lm", "--text", "{d}/a.txt", "--out", "{d}/lm.pt"],
    ],
)
def test_cli_cuda_without_gpu_prints_one_line(
    no_torchrun: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    fake_gpus(no_torchrun, 0)
    argv = [a.format(m=tmp_path / "m.jsonl", d=tmp_path) for a in command] + ["--device", "cuda"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "asr-s2s: error: --device cuda: CUDA is not available (no GPU is visible); use --device cpu"
    ] or err.splitlines() == [
        "asr-s2s: error: --device cuda: CUDA is not available (this PyTorch is built without CUDA); "
        "use --device cpu"
    ]
