"""The LibriSpeech recipe end to end on a miniature LibriSpeech tree: every stage of run.sh, the
train stage in two gloo processes (torchrun), every evaluation subset scored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import LIBRISPEECH_FLAC, REPO

WORDS = ["a", "ab", "ba", "abba", "baa", "aab"]
SUBSETS = {  # subset -> (speaker, utterances); speakers are disjoint, as in LibriSpeech
    "train-clean-100": ("103", 16),
    "dev-clean": ("2412", 3),
    "dev-other": ("3081", 2),
    "test-clean": ("1089", 3),
    "test-other": ("1688", 2),
}
TINY = """\
features: {n_mels: 20}
model: {stack_frames: 3, encoder_hidden: 24, encoder_layers: 1, decoder_hidden: 24, decoder_layers: 1,
        embedding_dim: 8, attention: location, attention_dim: 16}
train: {epochs: 2, max_frames: 300, warmup_steps: 1, amp: false, average_best: 2, stats_utterances: 6,
        num_workers: 0, log_every: 1, spec_augment: true}
augment: {speed_prob: 0.5}
decode: {beam_size: 1, batch_size: 8}
"""


def build_tree(root: Path) -> dict[str, int]:
    """LibriSpeech's layout: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>-NNNN.flac`` plus the
    chapter's ``.trans.txt``; the shared real dev-clean utterance (linked) joins dev-clean."""
    rng = np.random.default_rng(0)
    counts = {}
    for subset, (speaker, n) in SUBSETS.items():
        chapter = root / "LibriSpeech" / subset / speaker / "10"
        chapter.mkdir(parents=True)
        lines = []
        for i in range(n):
            utt = f"{speaker}-10-{i:04d}"
            words = [WORDS[j] for j in rng.integers(0, len(WORDS), 1 + i % 2)]
            seconds = 0.25 + 0.1 * len(" ".join(words))
            t = np.arange(int(16000 * seconds)) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(len(t))
            sf.write(chapter / f"{utt}.flac", wave.astype(np.float32), 16000)
            lines.append(f"{utt} {' '.join(words).upper()}")
        (chapter / f"{speaker}-10.trans.txt").write_text("\n".join(lines) + "\n")
        counts[subset] = n
    real = root / "LibriSpeech" / "dev-clean" / "2412" / "153948"
    real.mkdir(parents=True)
    (real / LIBRISPEECH_FLAC.name).symlink_to(LIBRISPEECH_FLAC)
    (real / "2412-153948.trans.txt").symlink_to(LIBRISPEECH_FLAC.parent / "2412-153948.trans.txt")
    counts["dev-clean"] += 1
    return counts


@pytest.mark.slow
@pytest.mark.skipif(not LIBRISPEECH_FLAC.is_file(), reason="shared LibriSpeech sample not present")
def test_recipe_runs_every_stage_with_two_processes(tmp_path: Path) -> None:
    counts = build_tree(tmp_path / "corpus")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    exp = tmp_path / "exp"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", PYTHON=sys.executable, STATS_WORKERS="0")  # fmt: skip
    command = ["bash", "recipes/librispeech/run.sh", "--root", str(tmp_path / "corpus"),
               "--config", str(config), "--exp", str(exp), "--nproc", "2", "--average", "2",
               "--", "--device", "cpu", "--quiet"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for stage in range(7):
        assert f"== stage {stage}:" in out
    assert "all of train-clean-100 dev-clean dev-other test-clean test-other are in" in out  # no download
    data = exp / "data"
    assert len((data / "train.jsonl").read_text().splitlines()) == counts["train-clean-100"]

    # Stage 2's statistics are the model's normalization, and training ran in two processes.
    stats = json.loads((exp / "feature_stats.json").read_text())
    assert stats["utterances"] == 6
    last = torch.load(exp / "last.pt", map_location="cpu", weights_only=False)
    assert len(last["rng_per_rank"]) == 2 and last["epoch"] == 2
    mean = last["model"][next(k for k in last["model"] if k.endswith("feat_mean"))]
    torch.testing.assert_close(mean, torch.tensor(stats["mean"]))

    # Stage 4 averaged the two kept epochs; stage 5 scored every subset with that model.
    assert len(list((exp / "epochs").glob("epoch-*.pt"))) == 2 and (exp / "model_avg.pt").is_file()
    assert "wrote" in out and "(mean of 2 models)" in out
    for subset in ("dev-clean", "dev-other", "test-clean", "test-other"):
        summary = json.loads((exp / f"eval_{subset}" / "summary.json").read_text())
        assert summary["utterances"] == counts[subset], subset
        assert 0.0 <= summary["wer"]
    results = (exp / "results.md").read_text()
    assert results.count("\n| ") == 5  # the header and four subsets
    assert "model_avg.pt" in results

    # Re-running skips what is done: no new training step, no re-scoring.
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("already scored") == 4 and "feature_stats.json exists" in again.stdout
    assert torch.load(exp / "last.pt", map_location="cpu", weights_only=False)["step"] == last["step"]
