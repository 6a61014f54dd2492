"""Tests for asr_s2s.train and the ``asr-s2s train`` command: exact resume, outputs, overfitting,
DDP on CPU and the CLI. Models are tiny (1-2 layer, 32-unit LSTMs) and features are cached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import REPO, fsdd_files, tiny_config

import asr_s2s.train as train_module
from asr_s2s.audio import load_audio
from asr_s2s.checkpoint import average_state_dicts, load_bundle, load_file
from asr_s2s.cli import main
from asr_s2s.data import BucketBatchSampler, num_frames
from asr_s2s.decoding import greedy_search
from asr_s2s.errors import CheckpointError, ManifestError, TrainingError
from asr_s2s.features import LogMel
from asr_s2s.manifest import read_manifest
from asr_s2s.report import plot_training
from asr_s2s.train import Interrupted, Trainer, train

TEXTS = ["one two", "three", "four five six", "seven", "eight nine", "zero one", "two", "three four"]
SECONDS = [0.3 + 0.05 * i for i in range(len(TEXTS))]


@pytest.fixture
def corpus(tiny_manifest) -> tuple[Path, Path]:
    """(train manifest, dev manifest): 8 generated utterances, and 3 of them as dev."""
    train_manifest = tiny_manifest(TEXTS, SECONDS)
    dev = train_manifest.parent / "dev.jsonl"
    dev.write_text("".join(train_manifest.read_text().splitlines(keepends=True)[:3]))
    return train_manifest, dev


def _resume_config():
    # Every source of randomness on: SpecAugment, LSTM and decoder dropout, scheduled sampling,
    # token dropout; CTC on; a shortest-first curriculum epoch, then a shuffled one.
    return tiny_config(
        train__epochs=2,
        train__curriculum_epochs=1,
        train__max_frames=120,
        train__spec_augment=True,
        train__scheduled_sampling=0.2,
        train__token_dropout=0.1,
        train__label_smoothing=0.1,
        train__ctc_weight=0.3,
        train__schedule="cosine",
        train__warmup_steps=2,
        model__encoder_layers=2,
        model__encoder_dropout=0.2,
        model__decoder_dropout=0.2,
    )


def _assert_same_tensors(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_exact_resume_after_interruptions(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = _resume_config()
    result = Trainer(config, train_manifest, dev, tmp_path / "full", progress=False).fit()
    # Steps per epoch, from the dev evaluations at each epoch's end (epochs may differ by a batch).
    first_epoch, total = (r["step"] for r in result.history)
    assert result.steps == total and first_epoch >= 4 and total - first_epoch >= 3

    out = tmp_path / "cut"
    with pytest.raises(Interrupted):
        Trainer(config, train_manifest, dev, out, progress=False).fit(stop_after_steps=2)
    state = load_file(out / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (2, 0, 2)
    early_weights = state["model"]
    # Second interruption: after the last batch of the epoch, before its dev evaluation.
    with pytest.raises(Interrupted):
        Trainer(config, train_manifest, dev, out, resume=True, progress=False).fit(
            stop_after_steps=first_epoch - 2
        )
    state = load_file(out / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (first_epoch, 0, first_epoch)
    assert state["history"] == []
    # Third interruption, in the middle of the second epoch.
    with pytest.raises(Interrupted):
        Trainer(config, train_manifest, dev, out, resume=True, progress=False).fit(stop_after_steps=2)
    state = load_file(out / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (first_epoch + 2, 1, 2)
    assert len(state["history"]) == 1
    resumed = Trainer(config, train_manifest, dev, out, resume=True, progress=False).fit()
    assert resumed.steps == result.steps

    a, b = load_file(tmp_path / "full" / "last.pt"), load_file(out / "last.pt")
    assert a["step"] == b["step"] == total
    _assert_same_tensors(a["model"], b["model"], "model")
    _assert_same_tensors(a["optimizer"], b["optimizer"], "optimizer")
    _assert_same_tensors(a["scheduler"], b["scheduler"], "scheduler")
    assert a["history"] == b["history"] and a["best"] == b["best"]
    _assert_same_tensors(
        load_file(tmp_path / "full" / "model.pt")["model"], load_file(out / "model.pt")["model"], "model.pt"
    )
    # Training went on after the first interruption (the comparison is not between stale weights).
    assert not torch.equal(a["model"]["decoder.output.weight"], early_weights["decoder.output.weight"])


def test_sigint_stops_after_the_step_with_a_checkpoint(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=1, train__max_frames=120)
    trainer = Trainer(config, train_manifest, dev, tmp_path / "exp", progress=False)
    step = trainer.train_step

    def step_then_ctrl_c(batch):
        parts = step(batch)
        if trainer.step == 1:  # the counter is bumped after train_step: this is the 2nd step
            os.kill(os.getpid(), signal.SIGINT)
        return parts

    trainer.train_step = step_then_ctrl_c
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="step 2"):
        trainer.fit()
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert load_file(tmp_path / "exp" / "last.pt")["step"] == 2


def test_dev_scoring_includes_utterances_longer_than_max_frames(
    tiny_manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_manifest = tiny_manifest(["one", "two", "three"], 0.3, name="train.jsonl")
    dev = tiny_manifest(["four", "five six seven"], [0.3, 1.2], name="dev.jsonl", prefix="dev")  # 121 > 100
    config = tiny_config(train__epochs=1, train__max_frames=100, train__max_duration=1.0)
    trainer = Trainer(config, train_manifest, dev, tmp_path / "exp", progress=False)
    scored: list[list[str]] = []
    real_score = train_module.score

    def spy(refs, hyps, *args):
        scored.append(list(refs))
        return real_score(refs, hyps, *args)

    monkeypatch.setattr(train_module, "score", spy)
    trainer.evaluate_dev()
    assert sorted(scored[0]) == ["five six seven", "four"]


def test_output_files(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=2, train__max_frames=150, train__average_best=2)
    result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    out = tmp_path / "exp"
    for name in ("last.pt", "best.pt", "model.pt", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert result.model_path == out / "model.pt" and result.out_dir == out
    assert load_file(out / "last.pt")["kind"] == "checkpoint"
    model_payload = load_file(out / "model.pt")
    assert model_payload["kind"] == "model" and "optimizer" not in model_payload
    bundle = load_bundle(out / "model.pt")
    assert bundle.config == config and bundle.vocab.decode(bundle.vocab.encode("three four")) == "three four"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["kind"] == "train"]
    dev_records = [r for r in records if r["kind"] == "dev"]
    assert [r["step"] for r in train_records] == list(range(1, result.steps + 1))  # log_every=1
    assert all(r["ce"] > 0 and r["lr"] > 0 and "grad_norm" in r for r in train_records)
    assert [r["epoch"] for r in dev_records] == [1, 2]
    assert all(0.0 <= r["dev_wer"] and r["dev_loss"] > 0 for r in dev_records)
    assert result.history == dev_records
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    epochs = sorted((out / "epochs").iterdir())
    assert [p.name for p in epochs] == ["epoch-001.pt", "epoch-002.pt"]
    # average_best=2: model.pt is the average of the two epochs if that scored no worse, else best.pt.
    (average,) = [r for r in records if r["kind"] == "average"]
    best = min(dev_records, key=lambda r: (r["dev_wer"], r["dev_loss"]))
    expected = (
        average_state_dicts(epochs)
        if (average["dev_wer"], average["dev_loss"]) <= (best["dev_wer"], best["dev_loss"])
        else load_file(out / "best.pt")["model"]
    )
    _assert_same_tensors(model_payload["model"], expected, "model.pt")
    assert result.best_wer == best["dev_wer"]
    assert not list(out.glob(".*.tmp")) and not list(out.glob("**/.*.tmp"))


def test_max_steps_stops_mid_epoch(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=5, train__max_steps=3, train__max_frames=120)
    result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert result.steps == 3
    assert len(result.history) == 1 and result.history[0]["step"] == 3
    assert load_file(tmp_path / "exp" / "last.pt")["step"] == 3


def test_ctc_only_training_leaves_the_decoder_untouched(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """train.ctc_weight=1.0: the loss is the CTC head's alone and the decoder is not run (no
    gradient reaches it), so it keeps its initial weights (no weight decay here) while the encoder
    learns; dev is scored with the CTC search (decode.ctc_weight=1.0) and its loss is the CTC loss."""
    train_manifest, dev = corpus
    config = tiny_config(
        train__max_steps=3, train__max_frames=120, train__ctc_weight=1.0, train__weight_decay=0.0
    )
    config.decode.ctc_weight = 1.0
    trainer = Trainer(config, train_manifest, dev, tmp_path / "exp", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    decoder = [k for k in before if k.startswith("decoder.")]
    encoder = [k for k in before if k.startswith("encoder.lstm.")]
    assert decoder and encoder
    assert all(torch.equal(before[k], after[k]) for k in decoder)
    assert all(p.grad is None for name, p in trainer.model.named_parameters() if name.startswith("decoder."))
    assert any(not torch.equal(before[k], after[k]) for k in encoder + ["ctc_head.weight"])
    assert 0.0 <= trainer.history[-1]["dev_cer"]
    assert trainer.history[-1]["dev_loss"] > 0
    records = [json.loads(line) for line in (tmp_path / "exp" / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "train"] and all("ce" not in r for r in records)
    assert plot_training(tmp_path / "exp" / "metrics.jsonl", tmp_path / "curves.png").stat().st_size > 0


def test_init_from_starts_from_the_pretrained_weights_and_vocabulary(
    corpus: tuple[Path, Path], tiny_manifest, tmp_path: Path
) -> None:
    """train.init_from: a new run starts from another model's weights, normalization statistics and
    vocabulary (here a superset of its own texts' characters); it then trains on, and a resumed run
    continues from its own last.pt, not from the pretrained weights again."""
    train_manifest, dev = corpus
    pretrained = train(
        tiny_config(train__max_steps=3, train__max_frames=120), train_manifest, dev, tmp_path / "pre"
    )
    source = load_file(tmp_path / "pre" / "model.pt")
    narrow = tiny_manifest(["one one", "two"], [0.3, 0.35], name="narrow.jsonl", prefix="n")
    config = tiny_config(
        train__max_steps=2, train__max_frames=120, train__init_from=str(tmp_path / "pre" / "model.pt")
    )
    trainer = Trainer(config, narrow, narrow, tmp_path / "ft", progress=False)
    assert trainer.vocab.tokens == tuple(source["vocab"]) and len(trainer.vocab.tokens) > 8
    _assert_same_tensors(trainer.model.state_dict(), source["model"])
    trainer.fit()
    tuned = load_file(tmp_path / "ft" / "last.pt")
    assert any(not torch.equal(tuned["model"][k], v) for k, v in source["model"].items())
    again = Trainer(config, narrow, narrow, tmp_path / "ft", resume=True, progress=False)
    _assert_same_tensors(again.model.state_dict(), tuned["model"])
    assert pretrained.steps == 3


def test_init_from_refuses_another_front_end_or_shape(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    train(tiny_config(train__max_steps=1, train__max_frames=120), train_manifest, dev, tmp_path / "pre")
    model = str(tmp_path / "pre" / "model.pt")
    other_mels = tiny_config(train__init_from=model, features__n_mels=24, model__normalization="utterance")
    with pytest.raises(
        CheckpointError,
        match=r"model\.pt: cannot initialize .*features\.n_mels is 24 here, 20 there; "
        r"model\.normalization is 'utterance' here, 'global' there",
    ):
        Trainer(other_mels, train_manifest, dev, tmp_path / "a", progress=False)
    wider = tiny_config(train__init_from=model, model__encoder_hidden=48)
    with pytest.raises(
        CheckpointError, match=r"model\.pt: its weights do not fit this config's model \(.*encoder"
    ):
        Trainer(wider, train_manifest, dev, tmp_path / "b", progress=False)
    with pytest.raises(CheckpointError, match="no such file"):
        Trainer(tiny_config(train__init_from=str(tmp_path / "none.pt")), train_manifest, dev, tmp_path / "c")


def test_vocabulary_follows_the_text_config(tiny_manifest, tmp_path: Path) -> None:
    manifest = tiny_manifest(["well-known", "co-op now"], [0.3, 0.3])
    config = tiny_config(train__max_steps=1)
    config.text.hyphens = "keep"
    trainer = Trainer(config, manifest, manifest, tmp_path / "exp", progress=False)
    assert "-" in trainer.vocab.tokens and trainer.vocab.text.hyphens == "keep"
    plain = Trainer(tiny_config(train__max_steps=1), manifest, manifest, tmp_path / "exp2", progress=False)
    assert "-" not in plain.vocab.tokens


def test_unreadable_audio_is_skipped_or_fatal_with_strict(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    (train_manifest.parent / "audio" / "utt005.wav").write_text("not audio")
    config = tiny_config(train__epochs=1, train__max_frames=150)
    result = train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert result.skipped_utterances == 1 and result.steps > 0
    with pytest.raises(TrainingError, match="utt005"):
        train(config, train_manifest, dev, tmp_path / "strict", strict=True, progress=False)


def test_unreadable_dev_audio_is_fatal_with_strict(tiny_manifest, tmp_path: Path) -> None:
    train_manifest = tiny_manifest(["one", "two", "three"], 0.3, name="train.jsonl")
    dev = tiny_manifest(["four", "five"], 0.3, name="dev.jsonl", prefix="dev")
    (dev.parent / "audio" / "dev001.wav").write_text("not audio")
    config = tiny_config(train__epochs=1, train__max_frames=150)
    with pytest.raises(TrainingError, match="dev001"):
        Trainer(config, train_manifest, dev, tmp_path / "strict", strict=True, progress=False)


def test_tensorboard_single_events_file(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=2, train__max_frames=150, train__average_best=2)
    train(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert len(list((tmp_path / "exp" / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_malformed_manifest_line_is_skipped_or_fatal_with_strict(
    corpus: tuple[Path, Path], tmp_path: Path
) -> None:
    train_manifest, dev = corpus
    with train_manifest.open("a") as handle:
        handle.write("{this line is broken\n")
    config = tiny_config(train__epochs=1, train__max_frames=150)
    trainer = Trainer(config, train_manifest, dev, tmp_path / "exp", progress=False)
    assert trainer.skipped_lines == 1 and len(trainer.train_set) == len(TEXTS)
    with pytest.raises(ManifestError, match=f"{train_manifest}:{len(TEXTS) + 1}: invalid JSON"):
        Trainer(config, train_manifest, dev, tmp_path / "strict", strict=True, progress=False)


@pytest.mark.slow
def test_overfits_real_fsdd_digits(tmp_path: Path) -> None:
    words = ["zero", "one", "two", "three"]
    files = [fsdd_files(f"{d}_george_0.wav")[0] for d in range(len(words))]
    lines = [
        {"audio_filepath": str(f), "duration": sf.info(str(f)).duration, "text": w}
        for f, w in zip(files, words)
    ]
    manifest = tmp_path / "fsdd.jsonl"  # points at the shared files in place; nothing is copied
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = tiny_config(
        train__epochs=60,
        train__max_frames=1000,
        train__lr=1e-2,
        train__schedule="constant",
        train__warmup_steps=1,
        train__weight_decay=0.0,
        train__spec_augment=False,
        train__label_smoothing=0.0,
        train__ctc_weight=0.0,
        train__log_every=1000,
        model__encoder_dropout=0.0,
        model__decoder_dropout=0.0,
    )
    result = train(config, manifest, manifest, tmp_path / "exp", progress=False)
    assert result.best_wer == 0.0
    # Check independently: decode the saved model on freshly computed features.
    bundle = load_bundle(result.model_path)
    extractor = LogMel(bundle.config.features)
    for f, word in zip(files, words):
        wave, _ = load_audio(f, bundle.config.features.sample_rate)
        feats = extractor(wave)[None]
        (ids,) = greedy_search(bundle.model, feats, torch.tensor([feats.shape[1]]))
        assert bundle.vocab.decode(ids) == word


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    from asr_s2s.config import load_config
    from asr_s2s.train import Interrupted, Trainer

    config_path, train_manifest, dev_manifest, out = sys.argv[1:5]
    config = load_config(config_path)
    resume = os.environ.get("RESUME") == "1"
    trainer = Trainer(config, train_manifest, dev_manifest, out, resume=resume, progress=False, device="cpu")
    assert trainer.dist.world == 2 and torch.distributed.is_initialized()
    seen = []
    step = trainer.train_step

    signal_at = int(os.environ.get("SIGTERM_AT_STEP", "0"))

    def recording(batch):
        seen.append(batch.ids)
        parts = step(batch)
        if len(seen) == signal_at:  # as torchrun forwards a SIGTERM (e.g. preemption) to every rank
            os.kill(os.getpid(), signal.SIGTERM)
        return parts

    trainer.train_step = recording
    rank = int(os.environ["RANK"])
    try:
        trainer.fit()
    except Interrupted:
        (Path(out) / f"interrupted{rank}").write_text(str(trainer.step))
    torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
    (Path(out) / f"batches{rank}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()
    """
)


def _torchrun(tmp_path: Path, config, train_manifest: Path, dev: Path, **env_extra: str):
    """Train with two CPU processes into ``tmp_path / "exp"``; env ``RESUME=1`` resumes from it."""
    from asr_s2s.config import save_config

    save_config(config, tmp_path / "config.yaml")
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path / "config.yaml"), str(train_manifest), str(dev), str(tmp_path / "exp")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.slow
def test_ddp_two_cpu_processes(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=2, train__max_frames=120, train__max_steps=4)
    out = tmp_path / "exp"
    proc = _torchrun(tmp_path, config, train_manifest, dev)
    assert proc.returncode == 0, proc.stderr[-4000:]
    w0, w1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key  # DDP keeps the replicas identical
    b0 = json.loads((out / "batches0.json").read_text())
    b1 = json.loads((out / "batches1.json").read_text())
    assert len(b0) == len(b1) == 4
    assert all(set(x).isdisjoint(y) for x, y in zip(b0, b1))  # different data on each rank per step
    # Over the first epoch the two ranks together see every utterance.
    single = BucketBatchSampler(
        [num_frames(u.duration, config.features.hop_ms) for u in read_manifest(train_manifest)],
        config.train.max_frames,
        seed=config.train.seed,
    )
    per_rank = -(-len(single.batches()) // 2)
    assert 2 <= per_rank < 4
    assert {i for batch in b0[:per_rank] + b1[:per_rank] for i in batch} == {f"utt{i:03d}" for i in range(8)}
    ckpt = load_file(out / "last.pt")
    assert ckpt["step"] == 4
    # Only rank 0 writes; its checkpoint holds the shared weights.
    for key, value in ckpt["model"].items():
        assert torch.equal(value, w0[key]), key
    assert (out / "model.pt").is_file()


@pytest.mark.slow
def test_ddp_sigterm_stops_every_rank_after_a_checkpoint(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    train_manifest, dev = corpus
    config = tiny_config(train__epochs=2, train__max_frames=120)
    proc = _torchrun(tmp_path, config, train_manifest, dev, SIGTERM_AT_STEP="2")
    out = tmp_path / "exp"
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "interrupted0").read_text() == (out / "interrupted1").read_text() == "2"
    ckpt = load_file(out / "last.pt")
    assert ckpt["step"] == 2
    w1 = torch.load(out / "rank1.pt")
    for key, value in ckpt["model"].items():
        assert torch.equal(value, w1[key]), key


@pytest.mark.slow
def test_ddp_resume_continues_every_rank_exactly(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    """Stopped after 2 steps and resumed to 4, two ranks end with the weights of 4 steps in one go.

    SpecAugment and token dropout draw on each rank's own random streams, and the gradients of both ranks
    reach the shared weights: resuming rank 1 with rank 0's streams would change them."""
    train_manifest, dev = corpus
    config = tiny_config(
        train__epochs=2, train__max_frames=120, train__max_steps=4, train__spec_augment=True,
        train__token_dropout=0.5,
    )  # fmt: skip
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    straight.mkdir(), stopped.mkdir()
    proc = _torchrun(straight, config, train_manifest, dev)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = _torchrun(stopped, config, train_manifest, dev, SIGTERM_AT_STEP="2")
    assert proc.returncode == 0 and (stopped / "exp" / "interrupted1").read_text() == "2", proc.stderr[-4000:]
    rngs = load_file(stopped / "exp" / "last.pt")["rng_per_rank"]
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    proc = _torchrun(stopped, config, train_manifest, dev, RESUME="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    for rank in (0, 1):
        expected = torch.load(straight / "exp" / f"rank{rank}.pt")
        got = torch.load(stopped / "exp" / f"rank{rank}.pt")
        for key in expected:
            assert torch.equal(got[key], expected[key]), (rank, key)


def _cli_args(train_manifest: Path, dev: Path, out: Path, *extra: str) -> list[str]:
    sets = [
        "model.encoder_hidden=16",
        "model.encoder_layers=1",
        "model.decoder_hidden=16",
        "model.decoder_layers=1",
        "model.embedding_dim=8",
        "features.n_mels=20",
        "train.epochs=1",
        "train.max_frames=200",
        "train.amp=false",
    ]
    args = ["train", "--train", str(train_manifest), "--dev", str(dev), "--out", str(out), "--quiet"]
    for item in sets:
        args += ["--set", item]
    return args + list(extra)


def test_cli_train(corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_manifest, dev = corpus
    out = tmp_path / "exp"
    assert main(_cli_args(train_manifest, dev, out, "--device", "cpu")) == 0
    assert (out / "model.pt").is_file() and (out / "last.pt").is_file()
    assert "model.pt" in capsys.readouterr().out
    assert load_bundle(out / "model.pt").config.model.encoder_hidden == 16


def test_cli_train_bad_option(
    corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_manifest, dev = corpus
    code = main(_cli_args(train_manifest, dev, tmp_path / "exp", "--set", "model.encoder_layerz=2"))
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.encoder_layerz" in err and err.startswith("asr-s2s: error:")
    assert not (tmp_path / "exp" / "model.pt").exists()


def test_cli_train_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jsonl"
    assert main(_cli_args(missing, missing, tmp_path / "exp")) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope.jsonl" in err


def test_cli_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--train", "x.jsonl"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--dev" in err
