"""The CUDA path on a real GPU (``pytest -m cuda``, run by ``make gpu-check``); skipped without one.

Checks that ``--device cuda`` resolves to an indexed GPU, that a training step runs under bf16
autocast through cuDNN's LSTM kernels, and that the GPU computes what the CPU computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from asr_s2s.device import resolve_device

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_cuda_resolves_to_an_indexed_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    device = resolve_device("cuda")
    assert device.type == "cuda" and device.index == torch.cuda.current_device()
    torch.cuda.set_device(device)  # the call that failed with an unindexed torch.device("cuda")
    assert resolve_device(f"cuda:{torch.cuda.device_count() - 1}").index == torch.cuda.device_count() - 1


def _trainer(tiny_manifest, tmp_path: Path, **overrides):
    from asr_s2s.train import Trainer

    texts = ["one two", "three", "four five six", "seven", "eight nine"]
    manifest = tiny_manifest(texts, [0.4, 0.3, 0.6, 0.3, 0.5])
    config = tiny_config(train__amp=True, train__max_frames=400, **overrides)
    return Trainer(config, manifest, manifest, tmp_path / "exp", progress=False, device="cuda")


def test_training_step_uses_bf16_autocast_and_cudnn_lstms(tiny_manifest, tmp_path: Path) -> None:
    trainer = _trainer(tiny_manifest, tmp_path, model__attention="location")
    assert trainer.device.type == "cuda" and trainer.device.index is not None
    assert next(trainer.model.parameters()).device == trainer.device
    dtypes: list[torch.dtype] = []
    hook = trainer.model.decoder.output.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    batch = next(iter(trainer.loader)).to(trainer.device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        parts = trainer.train_step(batch)
    hook.remove()
    assert parts is not None and all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the output layer ran under bf16 autocast
    ops = {event.key for event in prof.key_averages()}
    assert any("cudnn_rnn" in op for op in ops), sorted(op for op in ops if "rnn" in op or "lstm" in op)
    # The weights stay float32 (autocast casts per op) and were updated.
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


@pytest.mark.parametrize("attention", ["none", "dot", "location"])
def test_gpu_forward_matches_cpu(attention: str) -> None:
    from asr_s2s.config import Config
    from asr_s2s.model import Seq2Seq

    config = Config()
    config.model.encoder_hidden, config.model.decoder_hidden, config.model.attention = 32, 32, attention
    torch.manual_seed(0)
    model = Seq2Seq(config.model, 20, 12, ctc=True).eval()
    feats = torch.randn(3, 50, 20)
    lengths = torch.tensor([50, 41, 17])
    tokens = torch.randint(4, 12, (3, 9))
    with torch.no_grad():
        cpu = model(feats, lengths, tokens)
        gpu = model.to("cuda")(feats.cuda(), lengths.cuda(), tokens.cuda())
    # float32 on both (cuDNN may use TF32 for matmuls: a loose tolerance).
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, atol=2e-2, rtol=2e-2)


def test_transcriber_on_gpu_matches_cpu(tiny_manifest, tmp_path: Path) -> None:
    from asr_s2s.audio import load_audio
    from asr_s2s.checkpoint import save_model
    from asr_s2s.transcribe import load_model

    trainer = _trainer(tiny_manifest, tmp_path, train__max_steps=3, model__attention="dot")
    trainer.fit()
    path = tmp_path / "m.pt"
    save_model(path, trainer.model.cpu(), trainer.config, trainer.vocab)
    wave, _ = load_audio(trainer.train_set.utterances[0].audio_filepath, 16000)
    on_cpu = load_model(path, device="cpu").transcribe(wave, sample_rate=16000).text
    on_gpu = load_model(path, device=resolve_device("cuda")).transcribe(wave, sample_rate=16000).text
    assert on_gpu == on_cpu


DDP_GPU_SCRIPT = """
import json, os, signal, sys
from pathlib import Path

import torch
import torch.distributed as dist

# Same results from the same inputs: cuBLAS needs a fixed workspace for that.
torch.use_deterministic_algorithms(True, warn_only=True)
from asr_s2s.config import load_config
from asr_s2s.train import Interrupted, Trainer

config_path, manifest, out = sys.argv[1:4]
rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
if torch.cuda.device_count() >= 2:
    device = "cuda"  # each rank its LOCAL_RANK GPU, NCCL: the path users take
else:
    # One GPU for both ranks: NCCL refuses two ranks on one device, gloo carries CUDA tensors too.
    # resolve_device refuses a shared cuda:0 under torchrun, so this process claims to be alone.
    os.environ["LOCAL_WORLD_SIZE"] = "1"
    device = "cuda:0"
    torch.cuda.set_device(0)
    dist.init_process_group("gloo")
trainer = Trainer(load_config(config_path), manifest, manifest, out, resume=os.environ.get("RESUME") == "1",
                  progress=False, device=device)
assert trainer.dist.world == 2 and trainer.device.type == "cuda"
step = trainer.train_step
signal_at = int(os.environ.get("SIGTERM_AT_STEP", "0"))
seen = []

def recording(batch):
    seen.append(batch.ids)
    parts = step(batch)
    if len(seen) == signal_at:
        os.kill(os.getpid(), signal.SIGTERM)
    return parts

trainer.train_step = recording
try:
    trainer.fit()
except Interrupted:
    (Path(out) / f"interrupted{rank}").write_text(str(trainer.step))
torch.save({k: v.cpu() for k, v in trainer.model.state_dict().items()}, Path(out) / f"rank{rank}.pt")
(Path(out) / f"device{rank}.json").write_text(json.dumps([str(trainer.device), dist.get_backend()]))
dist.destroy_process_group()
"""


def _torchrun_gpu(folder: Path, config: Path, manifest: Path, **env_extra: str):
    import os
    import subprocess
    import sys

    from conftest import REPO

    folder.mkdir(exist_ok=True)
    script = folder / "ddp_gpu.py"
    script.write_text(DDP_GPU_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8", **env_extra}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(config), str(manifest), str(folder / "exp")],
        capture_output=True, text=True, timeout=240, env=env, cwd=folder,
    )  # fmt: skip


def test_ddp_two_processes_on_gpu_resume_exactly(tiny_manifest, tmp_path: Path) -> None:
    """torchrun with 2 processes on the GPU(s): 2 steps, SIGTERM, resume to 4 = 4 steps straight.

    CTC is off: its CUDA backward is not deterministic, which would hide what resuming changes."""
    from asr_s2s.config import save_config

    texts = ["one two", "three", "four five six", "seven", "eight nine", "ten", "eleven two", "one"]
    manifest = tiny_manifest(texts, [0.4, 0.3, 0.6, 0.3, 0.5, 0.35, 0.45, 0.3])
    config = tiny_config(train__epochs=2, train__max_frames=120, train__max_steps=4, train__amp=True,
                         train__ctc_weight=0.0, train__spec_augment=True,
                         train__token_dropout=0.3)  # fmt: skip
    save_config(config, tmp_path / "config.yaml")
    runs = {}
    for name, env in (("straight", {}), ("again", {}), ("stopped", {"SIGTERM_AT_STEP": "2"})):
        proc = _torchrun_gpu(tmp_path / name, tmp_path / "config.yaml", manifest, **env)
        assert proc.returncode == 0, proc.stderr[-4000:]
        runs[name] = tmp_path / name / "exp"
    assert (runs["stopped"] / "interrupted1").read_text() == "2"
    proc = _torchrun_gpu(tmp_path / "stopped", tmp_path / "config.yaml", manifest, RESUME="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    devices = {json.loads((runs["straight"] / f"device{r}.json").read_text())[0] for r in (0, 1)}
    assert all(d.startswith("cuda:") for d in devices)
    assert len(devices) == min(2, torch.cuda.device_count())  # one GPU per rank when there are two
    for rank in (0, 1):
        straight = torch.load(runs["straight"] / f"rank{rank}.pt")
        again = torch.load(runs["again"] / f"rank{rank}.pt")
        resumed = torch.load(runs["stopped"] / f"rank{rank}.pt")
        for key in straight:
            noise = float((straight[key] - again[key]).abs().max())  # 0 when the kernels are deterministic
            diff = float((straight[key] - resumed[key]).abs().max())
            assert diff <= 10 * noise, (rank, key, diff, noise)
