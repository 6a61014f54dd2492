"""Character LM: step == teacher forcing, held-out perplexity falls in training, exact resume, every line
once per epoch across blocks, vocabulary checks and clear errors, the train-lm command."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

import asr_s2s.lm as lm_module
from asr_s2s.checkpoint import save_model
from asr_s2s.cli import main
from asr_s2s.config import Config, LMConfig
from asr_s2s.errors import CheckpointError
from asr_s2s.lm import CharLM, TextBatches, checkpoint_path, load_lm, perplexity, text_blocks, train_lm
from asr_s2s.text import Vocabulary

WORDS = "zero one two three four five six seven eight nine".split()


def digit_text(path: Path, lines: int, seed: int) -> Path:
    """Lines of 1 to 6 random digit words: easy to model, so perplexity falls fast."""
    rng = random.Random(seed)
    path.write_text(
        "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))) for _ in range(lines)) + "\n",
        encoding="utf-8",
    )
    return path


def small_config(**lm: object) -> Config:
    config = Config()
    config.lm = LMConfig(embedding_dim=8, hidden=24, dropout=0.1, batch_chars=400, warmup_steps=5, lr=1e-2)
    for key, value in lm.items():
        setattr(config.lm, key, value)
    return config


def test_step_by_step_equals_teacher_forcing() -> None:
    torch.manual_seed(0)
    lm = CharLM(LMConfig(embedding_dim=8, hidden=16, layers=2), 12).eval()
    tokens = torch.randint(1, 12, (3, 7))
    full = lm(tokens)
    state = lm.initial_state(3, "cpu")
    for t in range(7):
        logits, state = lm.step(tokens[:, t], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


def test_held_out_perplexity_falls_during_training(tmp_path: Path) -> None:
    train = digit_text(tmp_path / "train.txt", 600, seed=0)
    dev = digit_text(tmp_path / "dev.txt", 100, seed=1)
    config = small_config(epochs=4, eval_every=20, log_every=10)
    result = train_lm(config, [train], tmp_path / "lm.pt", dev=[dev], device="cpu", progress=False)
    ppls = [h["dev_perplexity"] for h in result.history if "dev_perplexity" in h]
    assert len(ppls) >= 5
    assert ppls[-1] < ppls[0] * 0.6
    assert all(b <= a * 1.05 for a, b in zip(ppls, ppls[1:])), ppls  # falling, allowing noise
    bundle = load_lm(tmp_path / "lm.pt")
    vocab = bundle.vocab
    lines = [torch.tensor(vocab.encode(x)).numpy() for x in dev.read_text().splitlines()]
    assert perplexity(bundle.lm, lines, 400, torch.device("cpu")) == pytest.approx(result.dev_perplexity)
    # The uniform model over the 17 tokens it can predict would score 17; digit words are far easier.
    assert result.dev_perplexity < 6.0


def test_every_line_once_per_epoch_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_module, "BLOCK_BYTES", 200)
    monkeypatch.setattr(lm_module, "GROUP_BLOCKS", 3)
    files = [digit_text(tmp_path / "a.txt", 150, 0), digit_text(tmp_path / "b.txt", 70, 1)]
    vocab = Vocabulary.build(WORDS)
    blocks = text_blocks(files)
    assert len(blocks) > 6
    data = TextBatches(blocks, vocab, LMConfig(batch_chars=120))
    expected = Counter(
        tuple(vocab.encode(line)) for f in files for line in f.read_text().splitlines()
    )
    orders = []
    for epoch in range(2):
        seen = Counter(tuple(x.tolist()) for _, _, batch in data.epoch(epoch) for x in batch)
        assert seen == expected
        orders.append([tuple(x.tolist()) for _, _, batch in data.epoch(epoch) for x in batch])
    assert orders[0] != orders[1]  # reshuffled each epoch
    # Restarting at a position gives the rest of the same order.
    positions = [(g, i) for g, i, _ in data.epoch(1)]
    g, i = positions[len(positions) // 2]
    rest = [tuple(x.tolist()) for _, _, batch in data.epoch(1, g, i) for x in batch]
    assert rest == orders[1][len(orders[1]) - len(rest) :] and len(rest) < len(orders[1])


def test_resume_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lm_module, "BLOCK_BYTES", 500)
    monkeypatch.setattr(lm_module, "GROUP_BLOCKS", 2)
    text = digit_text(tmp_path / "train.txt", 300, seed=0)
    config = small_config(epochs=2, checkpoint_every=1000)
    straight = train_lm(config, [text], tmp_path / "a" / "lm.pt", device="cpu", progress=False)
    assert straight.steps > 12
    out = tmp_path / "b" / "lm.pt"
    first = train_lm(config, [text], out, device="cpu", progress=False, stop_after=7)
    assert first.steps == 7 and first.path == checkpoint_path(out) and not out.exists()
    second = train_lm(config, [text], out, resume=True, device="cpu", progress=False, stop_after=10)
    assert second.steps == 17
    resumed = train_lm(config, [text], out, resume=True, device="cpu", progress=False)
    assert resumed.steps == straight.steps
    a = torch.load(tmp_path / "a" / "lm.pt", weights_only=True)["model"]
    b = torch.load(out, weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_vocabulary_mismatch_and_wrong_files_are_clear_errors(tmp_path: Path, tiny_model_path: Path) -> None:
    text = digit_text(tmp_path / "train.txt", 50, seed=0)
    train_lm(small_config(max_steps=2), [text], tmp_path / "lm.pt", device="cpu", progress=False)
    other = Vocabulary.build(["abc xyz"])
    with pytest.raises(CheckpointError, match="vocabulary is not the model's.*train-lm --model"):
        load_lm(tmp_path / "lm.pt", vocab=other)
    with pytest.raises(CheckpointError, match="speech model, not a language model"):
        load_lm(tiny_model_path)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable asr-s2s language model"):
        load_lm(tmp_path / "junk.pt")


def test_train_lm_command_uses_the_models_vocabulary(tmp_path: Path, tiny_model_path: Path) -> None:
    from asr_s2s.checkpoint import load_bundle

    bundle = load_bundle(tiny_model_path)
    text = tmp_path / "text.txt"
    text.write_text("one two\nthree four five\nnine\n", encoding="utf-8")
    out = tmp_path / "lm.pt"
    args = ["train-lm", "--text", str(text), "--out", str(out), "--model", str(tiny_model_path)]
    args += ["--set", "lm.max_steps=2", "--set", "lm.hidden=8", "--quiet", "--device", "cpu"]
    assert main(args) == 0
    lm = load_lm(out, vocab=bundle.vocab)  # the same tokens in the same order
    assert lm.vocab == bundle.vocab and lm.config.hidden == 8
    assert main(["train-lm", "--text", str(tmp_path / "missing.txt"), "--out", str(out), "--quiet"]) == 1


def test_model_file_with_another_vocabulary_is_refused_by_the_search(tmp_path: Path) -> None:
    from conftest import tiny_model

    from asr_s2s.config import DecodeConfig
    from asr_s2s.decoding import beam_search
    from asr_s2s.errors import ConfigError

    model, config, vocab = tiny_model()
    save_model(tmp_path / "m.pt", model, config, vocab)
    lm = CharLM(LMConfig(hidden=8), len(vocab) + 1)
    feats, lengths = torch.randn(1, 9, 20), torch.tensor([9])
    with pytest.raises(ConfigError, match="language model has"):
        beam_search(model, feats, lengths, DecodeConfig(beam_size=2, lm_weight=0.5), lm=lm)
    with pytest.raises(ConfigError, match="no language model"):
        beam_search(model, feats, lengths, DecodeConfig(beam_size=2, lm_weight=0.5))
    with pytest.raises(ConfigError, match="CTC head"):
        beam_search(model, feats, lengths, DecodeConfig(beam_size=2, ctc_weight=0.5))


def test_evaluate_and_load_model_take_the_search_options(tmp_path: Path, tiny_model_path: Path) -> None:
    import json

    from conftest import build_manifest, tiny_config

    from asr_s2s.decoding import decode
    from asr_s2s.errors import ConfigError
    from asr_s2s.model import Seq2Seq
    from asr_s2s.transcribe import load_model

    config = tiny_config()
    vocab = model_vocabulary(tiny_model_path)
    torch.manual_seed(0)
    model = Seq2Seq(config.model, config.features.n_mels, len(vocab), ctc=True).eval()
    model_path = tmp_path / "ctc.pt"
    save_model(model_path, model, config, vocab)
    text = tmp_path / "text.txt"
    text.write_text("one two\nthree\n", encoding="utf-8")
    lm_path = tmp_path / "lm.pt"
    train_lm(small_config(max_steps=2), [text], lm_path, vocab=vocab, device="cpu", progress=False)
    manifest = build_manifest(tmp_path / "data", ["one two", "three", "nine"])

    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(model_path), "--manifest", str(manifest), "--out", str(out)]
    args += ["--beam-size", "3", "--ctc-weight", "0.4", "--lm", str(lm_path), "--lm-weight", "0.5"]
    assert main([*args, "--length-bonus", "0.2", "--quiet", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ctc_weight"], summary["lm_weight"], summary["length_bonus"]) == (0.4, 0.5, 0.2)
    assert summary["lm"] == str(lm_path)

    transcriber = load_model(model_path, "cpu", lm=lm_path, ctc_weight=0.4, lm_weight=0.5)
    settings = transcriber.decode_config(3)
    assert (settings.ctc_weight, settings.lm_weight, settings.beam_size) == (0.4, 0.5, 3)
    feats, lengths = torch.randn(2, 30, config.features.n_mels), torch.tensor([30, 21])
    direct = decode(model, feats, lengths, settings, lm=transcriber.lm)
    assert transcriber.decode_features(feats, lengths, 3) == [vocab.decode(ids) for ids in direct]
    with pytest.raises(ConfigError, match="lm_weight is 0"):
        load_model(model_path, "cpu", lm=lm_path)
    with pytest.raises(ConfigError, match="CTC head"):
        load_model(tiny_model_path, "cpu", ctc_weight=0.3)
    assert main([*args[:-4], "--ctc-weight", "1.5", "--quiet", "--device", "cpu"]) == 1


def model_vocabulary(path: Path) -> Vocabulary:
    from asr_s2s.checkpoint import load_bundle

    return load_bundle(path).vocab
