"""Tests for the decoder's attention modes (``model.attention``: none, additive, location, dot).

``none`` must stay exactly the final-state-only design (same parameters, same files); the attention
modes must train, step like they teacher-force, ignore padding and survive beam search's reordering.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch
from conftest import build_manifest, random_feats, random_tokens, tiny_model

import asr_s2s.attention as attention_module
from asr_s2s.checkpoint import load_bundle, save_model
from asr_s2s.config import Config, DecodeConfig, ModelConfig, apply_overrides
from asr_s2s.decoding import beam_search, decode, greedy_search
from asr_s2s.errors import ConfigError
from asr_s2s.evaluate import evaluate_manifest
from asr_s2s.loss import cross_entropy, teacher_forcing_io
from asr_s2s.manifest import read_manifest
from asr_s2s.model import DecoderState, EncoderOutput, Seq2Seq
from asr_s2s.text import Vocabulary, normalize
from asr_s2s.transcribe import load_model

N_MELS, VOCAB = 20, 11
MODES = ["none", "additive", "location", "dot"]
ATTENTION_MODES = ["additive", "location", "dot"]

# The state_dict of _cfg()'s model as written before attention existed (keys and shapes): model files
# saved then must keep loading into a "none" model.
NONE_STATE_DICT = {
    "feat_mean": (20,),
    "feat_std": (20,),
    **{
        f"encoder.lstm.{kind}_l{layer}{direction}": shape
        for layer, input_dim in ((0, 60), (1, 32))
        for direction in ("", "_reverse")
        for kind, shape in (
            ("weight_ih", (64, input_dim)),
            ("weight_hh", (64, 16)),
            ("bias_ih", (64,)),
            ("bias_hh", (64,)),
        )
    },
    **{
        f"bridge.{which}_proj.{layer}.{kind}": shape
        for which in ("h", "c")
        for layer in (0, 1)
        for kind, shape in (("weight", (24, 32)), ("bias", (24,)))
    },
    "decoder.embedding.weight": (11, 8),
    "decoder.lstm.weight_ih_l0": (96, 8),
    "decoder.lstm.weight_hh_l0": (96, 24),
    "decoder.lstm.bias_ih_l0": (96,),
    "decoder.lstm.bias_hh_l0": (96,),
    "decoder.lstm.weight_ih_l1": (96, 24),
    "decoder.lstm.weight_hh_l1": (96, 24),
    "decoder.lstm.bias_ih_l1": (96,),
    "decoder.lstm.bias_hh_l1": (96,),
    "decoder.output.weight": (11, 24),
    "decoder.output.bias": (11,),
}


def _cfg(attention: str = "none", **changes) -> ModelConfig:
    base = dict(
        encoder_hidden=16,
        encoder_layers=2,
        decoder_hidden=24,
        decoder_layers=2,
        embedding_dim=8,
        stack_frames=3,
        encoder_dropout=0.0,
        decoder_dropout=0.0,
        attention=attention,
        attention_dim=12,
    )
    base.update(changes)
    return ModelConfig(**base)


def _model(attention: str = "none", seed: int = 0, **changes) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(_cfg(attention, **changes), N_MELS, VOCAB).eval()
    model.set_normalization(torch.randn(N_MELS) * 0.5, torch.rand(N_MELS) + 0.5)
    return model


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_feats(lengths, N_MELS, seed)


def _tokens(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    return random_tokens(batch, steps, VOCAB, seed)


def test_config_accepts_the_four_modes_only() -> None:
    for mode in MODES:
        assert apply_overrides(Config(), [f"model.attention={mode}"]).model.attention == mode
    for bad in ("model.attention=bahdanau", "model.attention=Location", "model.attention_dim=0"):
        with pytest.raises(ConfigError, match="model.attention"):
            apply_overrides(Config(), [bad])


def test_none_mode_has_exactly_the_old_parameters() -> None:
    model = _model("none")
    assert model.decoder.attention is None
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == NONE_STATE_DICT
    # The default config is "none", with no attention parameters.
    default = Seq2Seq(ModelConfig(), N_MELS, VOCAB)
    assert default.cfg.attention == "none" and default.decoder.attention is None
    assert not any("attention" in name for name in default.state_dict())


def test_attention_modes_add_only_attention_parameters() -> None:
    keys = {mode: set(_model(mode).state_dict()) for mode in ("none", "additive", "location")}
    assert keys["none"] < keys["additive"] < keys["location"]
    assert all(k.startswith("decoder.attention.") for k in keys["additive"] - keys["none"])
    assert {k.split(".")[2] for k in keys["location"] - keys["additive"]} == {
        "location_conv",
        "location_proj",
    }
    # Input feeding and the output layer on [s; context] widen the decoder's first layer and output.
    state = _model("location").state_dict()
    assert state["decoder.lstm.weight_ih_l0"].shape == (96, 8 + 32)
    assert state["decoder.output.weight"].shape == (VOCAB, 24 + 32)
    # Dot attention has no input feeding: only the output layer widens.
    keys["dot"] = set(_model("dot").state_dict())
    assert all(k.startswith("decoder.attention.") for k in keys["dot"] - keys["none"])
    state = _model("dot").state_dict()
    assert state["decoder.lstm.weight_ih_l0"].shape == (96, 8)
    assert state["decoder.output.weight"].shape == (VOCAB, 24 + 32)


def test_none_bundle_loads_with_identical_outputs(tmp_path: Path) -> None:
    config = Config()
    config.model, config.features.n_mels = _cfg("none"), N_MELS
    model = _model("none")
    vocab = Vocabulary.build(["abcdefg"])
    assert len(vocab) == VOCAB
    save_model(tmp_path / "model.pt", model, config, vocab)
    loaded = load_bundle(tmp_path / "model.pt").model
    assert loaded.decoder.attention is None
    feats, lens = _batch([27, 14])
    tokens = _tokens(2, 6)
    with torch.no_grad():
        assert torch.equal(model(feats, lens, tokens).logits, loaded(feats, lens, tokens).logits)
    settings = DecodeConfig(beam_size=3)
    assert decode(model, feats, lens, settings) == decode(loaded, feats, lens, settings)


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_attention_bundle_round_trip(mode: str, tmp_path: Path) -> None:
    config = Config()
    config.model, config.features.n_mels = _cfg(mode), N_MELS
    model = _model(mode)
    save_model(tmp_path / "model.pt", model, config, Vocabulary.build(["abcdefg"]))
    loaded = load_bundle(tmp_path / "model.pt").model
    feats, lens = _batch([27, 14])
    tokens = _tokens(2, 6)
    with torch.no_grad():
        assert torch.equal(model(feats, lens, tokens).logits, loaded(feats, lens, tokens).logits)


@pytest.mark.parametrize("mode", MODES)
def test_training_lowers_the_loss_and_reaches_every_parameter(mode: str) -> None:
    model = _model(mode, encoder_dropout=0.1, decoder_dropout=0.1).train()
    feats, lens = _batch([30, 21, 12])
    tokens = _tokens(3, 5, seed=1)
    inputs, labels = teacher_forcing_io(tokens, torch.tensor([5, 4, 2]))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for step in range(12):
        loss = cross_entropy(model(feats, lens, inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            # DDP needs every parameter to take part in the loss.
            assert [n for n, p in model.named_parameters() if p.grad is None] == []
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize("mode", MODES)
def test_stepping_equals_teacher_forcing(mode: str) -> None:
    model = _model(mode)
    feats, lens = _batch([21, 33, 9])
    tokens_in = _tokens(3, 8)
    with torch.no_grad():
        full = model(feats, lens, tokens_in).logits
        state = model.initial_state(model.encode(feats, lens))
        steps = []
        for t in range(tokens_in.shape[1]):
            logits, state = model.decoder.step(tokens_in[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_teacher_forcing_ignores_padding(mode: str) -> None:
    model = _model(mode)
    lengths = [40, 13, 26]
    feats, lens = _batch(lengths)
    feats[1, 13:] = 100.0  # garbage in the padding must not reach anything
    tokens_in = _tokens(3, 6)
    with torch.no_grad():
        batched = model(feats, lens, tokens_in).logits
        for i, n in enumerate(lengths):
            alone = model(feats[i : i + 1, :n], lens[i : i + 1], tokens_in[i : i + 1]).logits
            torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_greedy_equals_beam_one(mode: str) -> None:
    model = _model(mode)
    feats, lens = _batch([45, 30, 12, 7])
    greedy = greedy_search(model, feats, lens, DecodeConfig())
    assert greedy == beam_search(model, feats, lens, DecodeConfig(beam_size=1))
    assert any(greedy)


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("mode", MODES)
def test_batched_decoding_equals_one_at_a_time(mode: str, beam_size: int) -> None:
    model = _model(mode)
    lengths = [45, 30, 12, 7]
    feats, lens = _batch(lengths, seed=2)
    settings = DecodeConfig(beam_size=beam_size)
    batched = decode(model, feats, lens, settings)
    alone = [decode(model, feats[i : i + 1, :n], lens[i : i + 1], settings)[0] for i, n in enumerate(lengths)]
    assert batched == alone


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_weights_sum_to_one_and_are_zero_on_padding(mode: str) -> None:
    model = _model(mode)
    feats, lens = _batch([30, 12, 20])
    tokens_in = _tokens(3, 5)
    with torch.no_grad():
        state = model.initial_state(model.encode(feats, lens))
        mask = state.memory_mask
        assert mask.sum(1).tolist() == [10, 4, 7]
        for t in range(tokens_in.shape[1] + 1):
            torch.testing.assert_close(state.weights.sum(1), torch.ones(3))
            assert torch.all(state.weights[~mask] == 0) and torch.all(state.weights >= 0)
            # The context is the weighted mean of the encoder outputs.
            expected = (state.weights[:, :, None] * state.memory).sum(1) if t else torch.zeros(3, 32)
            torch.testing.assert_close(state.context, expected)
            if t < tokens_in.shape[1]:
                _, state = model.decoder.step(tokens_in[:, t], state)


def test_location_term_uses_the_previous_weights() -> None:
    model = _model("location")
    feats, lens = _batch([30, 30])
    with torch.no_grad():
        state = model.initial_state(model.encode(feats, lens))
        peaked = torch.zeros_like(state.weights)
        peaked[:, 3] = 1.0
        a, _ = model.decoder.step(torch.full((2,), Vocabulary.sos_id), state)
        b, _ = model.decoder.step(torch.full((2,), Vocabulary.sos_id), replace(state, weights=peaked))
    assert not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_attention_reads_the_encoder_outputs(mode: str) -> None:
    # The converse of test_model's proof for "none": same final states, other outputs -> other logits.
    model = _model(mode)
    gen = torch.Generator().manual_seed(3)
    final = (torch.randn(2, 2, 32, generator=gen), torch.randn(2, 2, 32, generator=gen))
    tokens_in = _tokens(2, 4)
    logits = []
    for seed in (1, 2):
        outputs = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(seed))
        state = model.initial_state(EncoderOutput(outputs, torch.tensor([6, 4]), final))
        with torch.no_grad():
            logits.append(model.decoder(tokens_in, state)[0])
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_select_reorders_attention_state() -> None:
    model = _model("location")
    feats, lens = _batch([30, 12, 21])
    with torch.no_grad():
        state = model.initial_state(model.encode(feats, lens))
        _, state = model.decoder.step(torch.full((3,), Vocabulary.sos_id), state)
    index = torch.tensor([2, 2, 0, 1])
    picked = state.select(index)
    for name in ("memory", "keys", "memory_mask", "context", "weights"):
        assert torch.equal(getattr(picked, name), getattr(state, name)[index]), name
    assert torch.equal(picked.h, state.h[:, index]) and torch.equal(picked.c, state.c[:, index])
    # Decoding from the picked state equals decoding each source row.
    tokens = torch.tensor([5, 6, 7])
    with torch.no_grad():
        from_picked, _ = model.decoder.step(tokens[index], picked)
        from_state, _ = model.decoder.step(tokens, state)
    torch.testing.assert_close(from_picked, from_state[index])


def test_attention_decoder_without_memory_says_so() -> None:
    model = _model("additive")
    state = DecoderState(torch.zeros(2, 1, 24), torch.zeros(2, 1, 24))
    with pytest.raises(ValueError, match="initial_state"):
        model.decoder.step(torch.tensor([Vocabulary.sos_id]), state)


def test_attention_module_imports_no_data_or_search_code() -> None:
    tree = ast.parse(Path(attention_module.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name.startswith("asr_s2s") for name in imported), imported


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_transcribe_and_evaluate_in_attention_modes(mode: str, tmp_path: Path) -> None:
    """The user-facing paths (files -> text, manifest -> scores) run the attention decoder and give
    what decoding the features directly gives, greedy and beam."""
    model, config, vocab = tiny_model(model__attention=mode)
    save_model(tmp_path / "model.pt", model, config, vocab)
    manifest = build_manifest(tmp_path / "data", ["one two", "three", "four five six"], [0.5, 0.8, 1.1])
    transcriber = load_model(tmp_path / "model.pt", device="cpu")
    assert transcriber.model.decoder.attention is not None
    waves = [sf.read(u.audio_filepath, dtype="float32")[0] for u in read_manifest(manifest)]
    for beam in (1, 3):
        settings = replace(config.decode, beam_size=beam)
        direct = []
        for wave in waves:
            feats = transcriber.extractor(torch.from_numpy(wave))[None]
            (ids,) = decode(model, feats, torch.tensor([feats.shape[1]]), settings)
            direct.append(vocab.decode(ids))
        assert transcriber.decode(waves, beam_size=beam) == direct
        report = evaluate_manifest(
            transcriber, manifest, tmp_path / f"eval{beam}", beam_size=beam, progress=False
        )
        rows = [json.loads(line) for line in (tmp_path / f"eval{beam}" / "per_utterance.jsonl").open()]
        assert [r["hypothesis"] for r in rows] == [normalize(text) for text in direct]
        assert (report.score.utterances, report.beam_size, report.failed_utterances) == (3, beam, 0)


def test_dot_context_matches_torch_scaled_dot_product_attention() -> None:
    # An independent reference for the dot score: torch's own attention over the same projections.
    model = _model("dot")
    feats, lens = _batch([30, 12, 21])
    tokens_in = _tokens(3, 5)
    with torch.no_grad():
        state = model.initial_state(model.encode(feats, lens))
        out, _ = model.decoder.lstm(model.decoder.embedding(tokens_in), (state.h, state.c))
        attention = model.decoder.attention
        expected = torch.nn.functional.scaled_dot_product_attention(
            attention.query(out), state.keys, state.memory, attn_mask=state.memory_mask[:, None, :]
        )
        _, last = model.decoder(tokens_in, state)
    torch.testing.assert_close(last.context, expected[:, -1])
