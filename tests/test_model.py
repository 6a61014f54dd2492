"""Tests for asr_s2s.model: shapes, the Bridge (final states are the decoder's only view of the audio),
incremental decoding, input reversal, frame stacking and module boundaries."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from conftest import random_feats, random_tokens

import asr_s2s.model as model_module
from asr_s2s.config import ModelConfig
from asr_s2s.loss import cross_entropy, teacher_forcing_io
from asr_s2s.model import (
    Bridge,
    DecoderState,
    Encoder,
    EncoderOutput,
    Seq2Seq,
    lengths_to_mask,
    reverse_padded,
)

N_MELS, VOCAB = 20, 11


def _cfg(**changes) -> ModelConfig:
    base = dict(
        encoder_hidden=16,
        encoder_layers=3,
        decoder_hidden=24,
        decoder_layers=2,
        embedding_dim=8,
        stack_frames=3,
        encoder_dropout=0.0,
        decoder_dropout=0.0,
    )
    base.update(changes)
    return ModelConfig(**base)


def _model(ctc: bool = False, seed: int = 0, **changes) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(_cfg(**changes), N_MELS, VOCAB, ctc=ctc).eval()
    model.set_normalization(torch.randn(N_MELS) * 0.5, torch.rand(N_MELS) + 0.5)
    return model


def _batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return random_feats(lengths, N_MELS, seed)


def _tokens(batch: int, steps: int, seed: int = 0) -> torch.Tensor:
    return random_tokens(batch, steps, VOCAB, seed)


def test_shapes() -> None:
    model = _model(ctc=True)
    feats, lens = _batch([30, 17, 9])
    tokens_in = _tokens(3, 6)
    out = model(feats, lens, tokens_in)
    assert out.logits.shape == (3, 6, VOCAB)
    assert out.enc_lengths.tolist() == [10, 6, 3]
    assert out.ctc_logits.shape == (3, 10, VOCAB)
    enc = model.encode(feats, lens)
    assert enc.outputs.shape == (3, 10, 32)
    assert enc.final[0].shape == enc.final[1].shape == (3, 3, 32)  # (layers, batch, 2 * hidden)
    state = model.initial_state(enc)
    assert state.h.shape == state.c.shape == (2, 3, 24)
    assert _model().ctc_head is None and _model().forward(feats, lens, tokens_in).ctc_logits is None
    encoder_only = model(feats, lens, tokens_in, run_decoder=False)
    assert encoder_only.logits is None and torch.equal(encoder_only.ctc_logits, out.ctc_logits)


def test_final_states_are_taken_at_each_sequence_end() -> None:
    # Packed sequences: the forward direction's final state is the output at the last real frame,
    # the backward direction's is the output at frame 0, for every utterance of a padded batch.
    model = _model(encoder_layers=1, stack_frames=1)
    feats, lens = _batch([12, 7, 3])
    enc = model.encode(feats, lens)
    h = enc.final[0][-1]  # top layer, (batch, 2H)
    for i, n in enumerate(lens.tolist()):
        torch.testing.assert_close(h[i, :16], enc.outputs[i, n - 1, :16])
        torch.testing.assert_close(h[i, 16:], enc.outputs[i, 0, 16:])


def _fake_encoder_output(final: tuple[torch.Tensor, torch.Tensor], time: int, seed: int) -> EncoderOutput:
    gen = torch.Generator().manual_seed(seed)
    batch = final[0].shape[1]
    return EncoderOutput(torch.randn(batch, time, 32, generator=gen), torch.full((batch,), time), final)


def _decode_with(model: Seq2Seq, enc: EncoderOutput, tokens_in: torch.Tensor) -> torch.Tensor:
    logits, _ = model.decoder(tokens_in, model.initial_state(enc))
    return logits


def test_bridge_decoder_depends_only_on_final_states() -> None:
    """The issue's proof: same final states -> same decoder outputs; other final states -> others."""
    model = _model()
    assert model.cfg.attention == "none"
    gen = torch.Generator().manual_seed(3)
    final = (torch.randn(3, 2, 32, generator=gen), torch.randn(3, 2, 32, generator=gen))
    tokens_in = _tokens(2, 7)
    a = _decode_with(model, _fake_encoder_output(final, time=5, seed=1), tokens_in)
    b = _decode_with(model, _fake_encoder_output(final, time=40, seed=2), tokens_in)  # other outputs
    assert torch.equal(a, b)
    changed = (final[0] + 0.5, final[1])
    c = _decode_with(model, _fake_encoder_output(changed, time=5, seed=1), tokens_in)
    assert not torch.allclose(a, c, atol=1e-3)
    changed_c = (final[0], final[1] - 0.5)
    d = _decode_with(model, _fake_encoder_output(changed_c, time=5, seed=1), tokens_in)
    assert not torch.allclose(a, d, atol=1e-3)


def test_summary_input_still_sees_only_the_final_states() -> None:
    """``summary_input`` feeds the bridge's top-layer h to every step: the decoder's view of the audio
    is still the final states alone, and the summary matters at every step, not just the first."""
    model = _model(summary_input=True)
    gen = torch.Generator().manual_seed(5)
    final = (torch.randn(3, 2, 32, generator=gen), torch.randn(3, 2, 32, generator=gen))
    tokens_in = _tokens(2, 7)
    a = _decode_with(model, _fake_encoder_output(final, time=5, seed=1), tokens_in)
    b = _decode_with(model, _fake_encoder_output(final, time=30, seed=2), tokens_in)
    assert torch.equal(a, b)
    state = model.initial_state(_fake_encoder_output(final, time=5, seed=1))
    torch.testing.assert_close(state.summary, state.h[-1])
    # Same initial (h, c), another summary: every step's logits change.
    other = DecoderState(state.h, state.c, summary=state.summary + 1.0)
    c, _ = model.decoder(tokens_in, other)
    assert ((a - c).abs().amax(-1) > 1e-4).all()


def test_bridge_full_model_ignores_encoder_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Through Seq2Seq.forward: make the encoder return fixed final states with arbitrary outputs.
    model = _model()
    gen = torch.Generator().manual_seed(4)
    final = (torch.randn(3, 2, 32, generator=gen), torch.randn(3, 2, 32, generator=gen))
    tokens_in = _tokens(2, 5)
    calls = iter(range(100))

    def fake_forward(feats: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        return _fake_encoder_output(final, time=int(lengths.max()), seed=next(calls))

    monkeypatch.setattr(model.encoder, "forward", fake_forward)
    out1 = model(*_batch([30, 12], seed=1), tokens_in).logits
    out2 = model(*_batch([9, 45], seed=2), tokens_in).logits  # different audio, same final states
    assert torch.equal(out1, out2)


def test_real_audio_changes_reach_the_decoder() -> None:
    model = _model()
    tokens_in = _tokens(1, 5)
    feats, lens = _batch([30])
    base = model(feats, lens, tokens_in).logits
    feats2 = feats.clone()
    feats2[0, :3] += 1.0  # only the start: reaches the decoder via the backward final state
    assert not torch.allclose(base, model(feats2, lens, tokens_in).logits, atol=1e-4)


def test_bidirectional_both_directions_reach_the_decoder() -> None:
    model = _model(encoder_layers=3, decoder_layers=2)
    assert model.bridge.source == [1, 2]
    gen = torch.Generator().manual_seed(5)
    h, c = torch.randn(3, 2, 32, generator=gen), torch.randn(3, 2, 32, generator=gen)
    enc = EncoderOutput(torch.zeros(2, 4, 32), torch.tensor([4, 4]), (h, c))
    base = model.initial_state(enc)
    for layer in (1, 2):
        for half in (slice(0, 16), slice(16, 32)):  # forward half, backward half
            for which in (0, 1):  # h, c
                states = [h.clone(), c.clone()]
                states[which][layer, :, half] += 1.0
                changed = model.initial_state(EncoderOutput(enc.outputs, enc.lengths, tuple(states)))
                assert not torch.allclose(base.h, changed.h) or not torch.allclose(base.c, changed.c)
                # h feeds h, c feeds c
                same = changed.c if which == 0 else changed.h
                assert torch.equal(same, base.c if which == 0 else base.h)
    # The bottom layer is not one of the decoder's sources.
    h0 = h.clone()
    h0[0] += 1.0
    unchanged = model.initial_state(EncoderOutput(enc.outputs, enc.lengths, (h0, c)))
    assert torch.equal(unchanged.h, base.h)


def test_bridge_layer_mapping_and_pass_through() -> None:
    assert Bridge(4, 8, 2, 8).source == [2, 3]
    assert Bridge(1, 8, 3, 8).source == [0, 0, 0]
    assert Bridge(3, 8, 3, 8).source == [0, 1, 2]
    # Same size: states pass through unchanged (no parameters).
    bridge = Bridge(3, 8, 2, 8)
    assert list(bridge.parameters()) == []
    h, c = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    out_h, out_c = bridge((h, c))
    assert torch.equal(out_h, h[1:]) and torch.equal(out_c, c[1:])
    # Different size: a projection per decoder layer, output in tanh range.
    proj = Bridge(2, 8, 2, 6)
    out_h, out_c = proj((h[:2] * 100, c[:2] * 100))
    assert out_h.shape == (2, 5, 6) and out_h.abs().max() <= 1.0


def test_bidirectional_bridge_pass_through_concatenates_directions() -> None:
    model = _model(encoder_hidden=12, decoder_hidden=24, encoder_layers=2, decoder_layers=2)
    assert not model.bridge.project
    feats, lens = _batch([15, 8])
    enc = model.encode(feats, lens)
    state = model.initial_state(enc)
    assert torch.equal(state.h, enc.final[0]) and torch.equal(state.c, enc.final[1])
    # Compare with the LSTM's own (layers * dirs, B, H) layout.
    x, x_lens = model.encoder.stack(
        (feats - model.feat_mean) / model.feat_std * lengths_to_mask(lens)[:, :, None], lens
    )
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, x_lens, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = model.encoder.lstm(packed)
    for layer in range(2):
        torch.testing.assert_close(state.h[layer, :, :12], h_n[2 * layer])
        torch.testing.assert_close(state.h[layer, :, 12:], h_n[2 * layer + 1])


@pytest.mark.parametrize(
    "changes", [{}, {"bidirectional": False, "decoder_layers": 3}, {"summary_input": True}]
)
def test_step_by_step_equals_teacher_forcing(changes: dict) -> None:
    model = _model(**changes)
    feats, lens = _batch([21, 33])
    tokens_in = _tokens(2, 9)
    with torch.no_grad():
        full = model(feats, lens, tokens_in).logits
        state = model.initial_state(model.encode(feats, lens))
        steps = []
        for t in range(tokens_in.shape[1]):
            logits, state = model.decoder.step(tokens_in[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_decoder_state_select() -> None:
    state = DecoderState(torch.arange(6.0).view(1, 3, 2), -torch.arange(6.0).view(1, 3, 2))
    picked = state.select(torch.tensor([2, 2, 0]))
    assert picked.h[0, :, 0].tolist() == [4.0, 4.0, 0.0] and picked.c[0, :, 1].tolist() == [-5.0, -5.0, -1.0]


def test_full_model_padding_invariance() -> None:
    model = _model(ctc=True)
    lengths = [40, 13, 26]
    feats, lens = _batch(lengths)
    tokens_in = _tokens(3, 6)
    batched = model(feats, lens, tokens_in)
    for i, n in enumerate(lengths):
        alone = model(feats[i : i + 1, :n], lens[i : i + 1], tokens_in[i : i + 1])
        torch.testing.assert_close(batched.logits[i], alone.logits[0], atol=1e-5, rtol=0)
        m = int(alone.enc_lengths[0])
        torch.testing.assert_close(batched.ctc_logits[i, :m], alone.ctc_logits[0], atol=1e-5, rtol=0)


def test_reverse_padded_reverses_within_length() -> None:
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0, 4.0]  # padding stays put
    assert out[1, :, 0].tolist() == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert torch.equal(reverse_padded(out, torch.tensor([3, 5])), x)


def test_reverse_input_encoder_sees_reversed_frames() -> None:
    cfg = _cfg(reverse_input=True, bidirectional=False, stack_frames=1, encoder_layers=1)
    torch.manual_seed(0)
    reversed_encoder = Encoder(cfg, N_MELS).eval()
    plain = Encoder(_cfg(bidirectional=False, stack_frames=1, encoder_layers=1), N_MELS).eval()
    plain.load_state_dict(reversed_encoder.state_dict())
    feats, lens = _batch([10, 6])
    a = reversed_encoder(feats, lens)
    b = plain(reverse_padded(feats, lens), lens)
    torch.testing.assert_close(a.outputs, b.outputs)
    torch.testing.assert_close(a.final[0], b.final[0])
    # and differs from not reversing
    assert not torch.allclose(a.final[0], plain(feats, lens).final[0])


@pytest.mark.parametrize(("time", "k"), [(9, 3), (10, 3), (11, 3), (7, 1), (5, 4)])
def test_frame_stacking(time: int, k: int) -> None:
    encoder = Encoder(_cfg(stack_frames=k), N_MELS)
    feats = torch.arange(2 * time * 2, dtype=torch.float32).view(2, time, 2)
    lens = torch.tensor([time, max(1, time - 4)])
    stacked, new_lens = encoder.stack(feats, lens)
    out_time = -(-time // k)
    assert stacked.shape == (2, out_time, k * 2)
    assert new_lens.tolist() == [-(-int(n) // k) for n in lens]
    padded = torch.nn.functional.pad(feats, (0, 0, 0, out_time * k - time))
    for j in range(out_time):
        assert torch.equal(stacked[:, j], padded[:, j * k : (j + 1) * k].reshape(2, -1))


def test_scheduled_sampling_uses_the_models_predictions() -> None:
    model = _model()
    feats, lens = _batch([24, 18])
    tokens_in = torch.cat([torch.full((2, 1), 1), _tokens(2, 6)], dim=1)
    teacher = model(feats, lens, tokens_in).logits
    assert torch.equal(model(feats, lens, tokens_in, sampling_prob=0.0).logits, teacher)
    sampled = model(feats, lens, tokens_in, sampling_prob=1.0).logits
    # With probability 1 every input after <sos> is the previous step's greedy prediction.
    predicted = teacher.argmax(-1)[:, :-1]
    manual_in = torch.cat([tokens_in[:, :1], predicted], dim=1)
    expected, _ = model.decoder(manual_in, model.initial_state(model.encode(feats, lens)))
    torch.testing.assert_close(sampled, expected)
    torch.testing.assert_close(sampled[:, 0], teacher[:, 0])  # the <sos> step is untouched


def test_scheduled_sampling_trains() -> None:
    model = _model(ctc=True, encoder_dropout=0.2, decoder_dropout=0.2).train()
    feats, lens = _batch([24, 18])
    tokens = _tokens(2, 5)
    inputs, labels = teacher_forcing_io(tokens, torch.tensor([5, 3]))
    out = model(feats, lens, inputs, sampling_prob=0.5)
    loss = cross_entropy(out.logits, labels) + out.ctc_logits.mean()
    loss.backward()
    assert torch.isfinite(loss)
    # Every parameter gets a gradient (DDP requires no unused parameters).
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_lengths_to_mask() -> None:
    mask = lengths_to_mask(torch.tensor([2, 0, 3]), 4)
    assert mask.tolist() == [[True, True, False, False], [False] * 4, [True, True, True, False]]


def test_normalization_buffers_are_saved_and_used() -> None:
    model = _model()
    assert {"feat_mean", "feat_std"} <= set(model.state_dict())
    feats, lens = _batch([12])
    tokens_in = _tokens(1, 3)
    before = model(feats, lens, tokens_in).logits
    model.set_normalization(torch.zeros(N_MELS), torch.ones(N_MELS) * 3)
    assert not torch.allclose(before, model(feats, lens, tokens_in).logits)


def test_model_imports_no_data_or_search_code() -> None:
    tree = ast.parse(Path(model_module.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    project = {name for name in imported if name.startswith("asr_s2s")}
    assert project <= {"asr_s2s.config", "asr_s2s.attention", "asr_s2s.lstm"}, project
    forbidden = ("asr_s2s.data", "asr_s2s.decoding", "asr_s2s.audio", "asr_s2s.features", "asr_s2s.train")
    assert not any(name.startswith(forbidden) for name in imported)
    assert not any(name.startswith(("torchaudio", "soundfile", "librosa")) for name in imported)


def _real_frames(x: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    return [x[i, :n] for i, n in enumerate(lengths)]


def test_utterance_normalization_is_per_utterance_cmvn() -> None:
    model = _model(normalization="utterance")
    lengths = [40, 13, 26]
    feats, lens = _batch(lengths)
    feats = feats * 3.0 + torch.arange(N_MELS) * 0.5  # far from zero mean / unit variance
    out = model.normalize(feats, lens)
    for i, (frames, n) in enumerate(zip(_real_frames(out, lengths), lengths)):
        reference = feats[i, :n].double().numpy()
        expected = (reference - reference.mean(0)) / reference.std(0)  # numpy's population std
        torch.testing.assert_close(frames.double(), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
        assert bool((out[i, n:] == 0).all())


def test_utterance_normalizations_ignore_padding_and_a_channel_offset() -> None:
    for mode in ("utterance", "utterance_mean"):
        model = _model(normalization=mode)
        lengths = [40, 13, 26]
        feats, lens = _batch(lengths)
        garbage = feats.clone()
        for i, n in enumerate(lengths):
            garbage[i, n:] = 1e4  # whatever the padding holds never reaches the statistics
        batched = model.normalize(garbage, lens)
        # A fixed per-bin offset (a microphone's frequency response, in log-mel) cancels out.
        shifted = model.normalize(garbage + torch.linspace(-3, 3, N_MELS), lens)
        for i, n in enumerate(lengths):
            alone = model.normalize(feats[i : i + 1, :n], lens[i : i + 1])[0]
            torch.testing.assert_close(batched[i, :n], alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(shifted[i, :n], alone, atol=1e-4, rtol=1e-4)
        tokens_in = _tokens(3, 6)
        out = model(garbage, lens, tokens_in)
        for i, n in enumerate(lengths):
            alone = model(feats[i : i + 1, :n], lens[i : i + 1], tokens_in[i : i + 1])
            torch.testing.assert_close(out.logits[i], alone.logits[0], atol=1e-5, rtol=0)


def test_utterance_mean_keeps_the_global_std_and_global_is_unchanged() -> None:
    lengths = [30, 12]
    feats, lens = _batch(lengths)
    mean_model = _model(normalization="utterance_mean")
    out = mean_model.normalize(feats, lens)
    for i, n in enumerate(lengths):
        expected = (feats[i, :n] - feats[i, :n].mean(0)) / mean_model.feat_std
        torch.testing.assert_close(out[i, :n], expected, atol=1e-5, rtol=1e-5)
    global_model = _model()
    assert global_model.cfg.normalization == "global"
    expected = (feats - global_model.feat_mean) / global_model.feat_std * lengths_to_mask(lens)[:, :, None]
    torch.testing.assert_close(global_model.normalize(feats, lens), expected)


def test_stored_configs_without_normalization_load_as_global() -> None:
    from asr_s2s.config import Config

    data = Config().to_dict()
    del data["model"]["normalization"]
    del data["augment"]
    config = Config.from_dict(data, strict=False)
    assert config.model.normalization == "global" and not config.augment.waveform


def _packed(lstm: torch.nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """nn.LSTM itself on the PackedSequence of ``x``: the reference for the encoder's fast path."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = lstm(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


def test_no_pyramid_keeps_the_parameter_names() -> None:
    # Models trained before model.pyramid existed must load: one nn.LSTM named encoder.lstm.
    names = [n for n in _model().state_dict() if n.startswith("encoder.")]
    assert names and all(n.startswith("encoder.lstm.") for n in names)
    assert _model(pyramid=[1, 1]).state_dict().keys() == _model().state_dict().keys()
    assert _model().encoder.subsampling == 3


@pytest.mark.parametrize("pyramid", [[2, 1], [1, 3], [2, 2]])
def test_pyramid_equals_lstms_with_joined_frames(pyramid: list[int]) -> None:
    # Independent reference: nn.LSTM layers run one by one on PackedSequences, with k consecutive
    # outputs concatenated (zero-padded at the end) between them.
    model = _model(pyramid=pyramid)
    feats, lens = _batch([31, 17, 8])
    enc = model.encode(feats, lens)
    x = model.normalize(feats, lens)
    x, x_lens = model.encoder.stack(x, lens)
    blocks = [model.encoder.lstm, *model.encoder.upper]
    hs = []
    pools = [1, *(k for k in pyramid if k > 1)]
    for k, lstm in zip(pools, blocks):
        if k > 1:
            pad = (-x.shape[1]) % k
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
            x = x.reshape(x.shape[0], x.shape[1] // k, -1)
            x_lens = torch.div(x_lens + k - 1, k, rounding_mode="floor")
        x, (h, _) = _packed(lstm, x, x_lens)
        hs.append(h)
    total = 3 * pyramid[0] * pyramid[1]
    assert model.encoder.subsampling == total
    assert enc.lengths.tolist() == [-(-n // total) for n in lens.tolist()] == x_lens.tolist()
    torch.testing.assert_close(enc.outputs, x)
    h = torch.cat(hs).view(3, 2, 3, 16)
    torch.testing.assert_close(enc.final[0], torch.cat([h[:, 0], h[:, 1]], dim=-1))


def test_pyramid_utterances_do_not_see_their_batch() -> None:
    # Odd lengths leave a half-filled last group: it must be completed with zeros, not the padding
    # of a longer neighbour's frames, so each utterance encodes as it would alone.
    model = _model(ctc=True, pyramid=[2, 1], stack_frames=1)
    feats, lens = _batch([23, 9, 14])
    enc = model.encode(feats, lens)
    for i, n in enumerate(lens.tolist()):
        alone = model.encode(feats[i : i + 1, :n], lens[i : i + 1])
        frames = int(enc.lengths[i])
        torch.testing.assert_close(enc.outputs[i, :frames], alone.outputs[0])
        assert not enc.outputs[i, frames:].any()
        torch.testing.assert_close(enc.final[1][:, i], alone.final[1][:, 0])


def test_pyramid_trains() -> None:
    model = _model(ctc=True, pyramid=[2, 1], attention="dot").train()
    feats, lens = _batch([40, 25])
    tokens_in = _tokens(2, 5)
    out = model(feats, lens, tokens_in)
    assert out.ctc_logits.shape[1] == 7 and out.enc_lengths.tolist() == [7, 5]
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.encoder.upper.parameters())
