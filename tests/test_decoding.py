"""Greedy and beam search: beam 1 == greedy, batching changes nothing, length limits, search quality."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from asr_s2s.checkpoint import load_bundle
from asr_s2s.config import DecodeConfig
from asr_s2s.decoding import (
    beam_search,
    ctc_collapse,
    ctc_greedy_search,
    decode,
    greedy_search,
    max_output_lengths,
)
from asr_s2s.errors import ConfigError
from asr_s2s.loss import cross_entropy, teacher_forcing_io
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

WORDS = ["one", "two", "three", "seven"]
N_MELS = 20  # tiny_config's


def random_batch(seed: int, batch: int = 6, max_frames: int = 45) -> tuple[torch.Tensor, torch.Tensor]:
    """Random log-mel-like features ``(batch, time, n_mels)`` with lengths from 4 to ``max_frames``."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, max_frames + 1, (batch,), generator=g)
    lengths[0] = max_frames
    feats = torch.randn(batch, max_frames, N_MELS, generator=g)
    feats *= (torch.arange(max_frames)[None, :] < lengths[:, None])[:, :, None]
    return feats, lengths


def word_features(mix: torch.Tensor, lengths: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Features whose bins ``4c..4c+3`` light up in proportion to ``mix[:, c]`` (word ``c``)."""
    batch, time = len(lengths), int(lengths.max())
    feats = torch.randn(batch, time, N_MELS, generator=g) * 0.5
    for c in range(len(WORDS)):
        feats[:, :, 4 * c : 4 * c + 4] += 3.0 * mix[:, c, None, None]
    return feats * (torch.arange(time)[None, :] < lengths[:, None])[:, :, None]


@pytest.fixture(scope="module")
def trained() -> tuple[Seq2Seq, Vocabulary]:
    """A tiny model trained for a few dozen steps to spell one of four words from synthetic features."""
    model, _, vocab = tiny_model(seed=1)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        cls = torch.randint(0, len(WORDS), (16,), generator=g)
        lengths = torch.randint(20, 41, (16,), generator=g)
        feats = word_features(torch.nn.functional.one_hot(cls, len(WORDS)).float(), lengths, g)
        ids = [vocab.encode(WORDS[c]) for c in cls.tolist()]
        token_lens = torch.tensor([len(x) for x in ids])
        tokens = torch.zeros(16, int(token_lens.max()), dtype=torch.long)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = torch.tensor(x)
        inputs, labels = teacher_forcing_io(tokens, token_lens)
        loss = cross_entropy(model(feats, lengths, inputs).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vocab


def ambiguous_batch(seed: int, batch: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs mixing two words, where the decoder is unsure and search matters."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.rand(batch, len(WORDS), generator=g) ** 3
    lengths = torch.randint(20, 41, (batch,), generator=g)
    return word_features(mix / mix.sum(1, keepdim=True), lengths, g), lengths


def sequence_logprob(model: Seq2Seq, feats: torch.Tensor, length: torch.Tensor, ids: list[int]) -> float:
    """Sum of the decoder's log-probabilities of ``ids`` followed by <eos>, for one utterance."""
    with torch.no_grad():
        state = model.initial_state(model.encode(feats[None], length[None]))
        inputs = torch.tensor([[Vocabulary.sos_id, *ids]])
        logits, _ = model.decoder(inputs, state)
        logp = logits[0].float().log_softmax(-1)
        targets = torch.tensor([*ids, Vocabulary.eos_id])
        return float(logp[torch.arange(len(targets)), targets].sum())


def cfg(**kwargs: object) -> DecodeConfig:
    return dataclasses.replace(DecodeConfig(), **kwargs)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_width_one_is_greedy_on_random_model(length_penalty: float) -> None:
    model, _, _ = tiny_model()
    feats, lengths = random_batch(0)
    greedy = greedy_search(model, feats, lengths, cfg())
    assert greedy == beam_search(model, feats, lengths, cfg(beam_size=1, length_penalty=length_penalty))
    assert greedy == decode(model, feats, lengths, cfg(beam_size=1))


def test_beam_width_one_is_greedy_on_trained_model(trained: tuple[Seq2Seq, Vocabulary]) -> None:
    model, vocab = trained
    feats, lengths = ambiguous_batch(1)
    greedy = greedy_search(model, feats, lengths, cfg())
    assert greedy == beam_search(model, feats, lengths, cfg(beam_size=1))
    assert all(vocab.decode(ids) for ids in greedy)


def test_trained_model_spells_the_words(trained: tuple[Seq2Seq, Vocabulary]) -> None:
    model, vocab = trained
    g = torch.Generator().manual_seed(5)
    lengths = torch.full((len(WORDS),), 30)
    feats = word_features(torch.eye(len(WORDS)), lengths, g)
    for beam in (1, 3):
        hyps = [vocab.decode(ids) for ids in decode(model, feats, lengths, cfg(beam_size=beam))]
        assert hyps == WORDS


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_equals_one_at_a_time(beam_size: int, trained: tuple[Seq2Seq, Vocabulary]) -> None:
    random_model, _, _ = tiny_model()
    for model, (feats, lengths) in [(random_model, random_batch(2)), (trained[0], ambiguous_batch(2, 6))]:
        settings = cfg(beam_size=beam_size)
        batched = decode(model, feats, lengths, settings)
        alone = [
            decode(model, feats[i : i + 1, : lengths[i]], lengths[i : i + 1], settings)[0] for i in range(6)
        ]
        assert batched == alone


@pytest.mark.parametrize("beam_size", [1, 4])
@pytest.mark.parametrize(("ratio", "offset"), [(0.0, 3), (0.5, 0), (1.0, 2)])
def test_max_length_is_respected(beam_size: int, ratio: float, offset: int) -> None:
    model, _, _ = tiny_model()
    feats, lengths = random_batch(3)
    settings = cfg(beam_size=beam_size, max_len_ratio=ratio, max_len_offset=offset)
    limits = max_output_lengths(model.encode(feats, lengths).lengths, settings).tolist()
    assert limits == [int(ratio * ((n + 2) // 3)) + offset for n in lengths.tolist()]
    assert all(len(h) <= lim for h, lim in zip(decode(model, feats, lengths, settings), limits))
    # A decoder that never ends a hypothesis runs exactly to each utterance's own limit.
    with torch.no_grad():
        model.decoder.output.bias[Vocabulary.eos_id] = -1e4
    hyps = decode(model, feats, lengths, settings)
    assert [len(h) for h in hyps] == limits
    assert all(Vocabulary.eos_id not in h and Vocabulary.sos_id not in h for h in hyps)


@pytest.mark.parametrize("beam_size", [2, 4, 8])
def test_beam_finds_at_least_greedys_log_prob(beam_size: int, trained: tuple[Seq2Seq, Vocabulary]) -> None:
    model, _ = trained
    feats, lengths = ambiguous_batch(3)
    greedy = greedy_search(model, feats, lengths, cfg())
    beam = beam_search(model, feats, lengths, cfg(beam_size=beam_size, length_penalty=0.0))
    limits = max_output_lengths(model.encode(feats, lengths).lengths, cfg()).tolist()
    assert all(len(g) < lim for g, lim in zip(greedy, limits)), "greedy should end with <eos> here"
    for i in range(len(lengths)):
        g = sequence_logprob(model, feats[i], lengths[i], greedy[i])
        b = sequence_logprob(model, feats[i], lengths[i], beam[i])
        assert b >= g - 1e-4, (i, greedy[i], beam[i])


def test_length_penalty_prefers_longer_hypotheses(trained: tuple[Seq2Seq, Vocabulary]) -> None:
    model, _ = trained
    feats, lengths = ambiguous_batch(4, 24)
    plain = beam_search(model, feats, lengths, cfg(beam_size=6, length_penalty=0.0))
    normalized = beam_search(model, feats, lengths, cfg(beam_size=6, length_penalty=2.0))
    # Dividing by length ** penalty can only move the choice towards longer hypotheses.
    assert all(len(n) >= len(p) for n, p in zip(normalized, plain))


def test_single_frame_and_padding_only_batch() -> None:
    model, _, _ = tiny_model()
    feats = torch.randn(2, 7, N_MELS)
    lengths = torch.tensor([1, 7])
    for beam in (1, 3):
        hyps = decode(model, feats, lengths, cfg(beam_size=beam))
        assert len(hyps) == 2 and all(isinstance(t, int) for h in hyps for t in h)


DATA = Path(__file__).parent / "fixtures" / "decoding"


@pytest.mark.parametrize("attention", ["none", "location", "dot"])
def test_outputs_match_the_search_before_scorers(attention: str) -> None:
    """Outputs recorded by ``fixtures/decoding/capture.py`` from the search at commit 07a73aa."""
    model = load_bundle(DATA / f"{attention}.pt").model
    recorded = json.loads((DATA / "legacy_outputs.json").read_text(encoding="utf-8"))
    checked = 0
    for key, hyps in recorded.items():
        name, seed, beam, penalty = key.split("/")
        if name != attention:
            continue
        feats, lengths = ambiguous_batch(int(seed.removeprefix("seed")))
        settings = cfg(
            beam_size=int(beam.removeprefix("beam")), length_penalty=float(penalty.removeprefix("lp"))
        )
        assert decode(model, feats, lengths, settings) == hyps, key
        checked += 1
    assert checked == 16


def test_ctc_collapse_against_groupby_on_every_short_path() -> None:
    # Independent definition: one label per run of equal ids, blank runs dropped.
    assert ctc_collapse([5, 5, 0, 5, 6, 6]) == [5, 5, 6]
    assert ctc_collapse([0, 0]) == [] and ctc_collapse([]) == []
    for n in range(7):
        for path in itertools.product([0, 4, 5], repeat=n):
            assert ctc_collapse(list(path)) == [k for k, _ in itertools.groupby(path) if k != 0]


def ctc_model(seed: int = 0) -> Seq2Seq:
    model, config, vocab = tiny_model(seed=seed)
    torch.manual_seed(seed)
    return Seq2Seq(config.model, config.features.n_mels, len(vocab), ctc=True).eval()


def test_ctc_greedy_is_the_collapsed_most_likely_path_by_brute_force() -> None:
    # Every path over the CTC labels (blank and characters, not <sos>/<eos>) within each utterance's
    # encoder length, scored by summed log-probabilities: the best one, collapsed, is the output.
    model = ctc_model()
    feats, lengths = random_batch(seed=3, batch=4, max_frames=12)  # <= 4 encoder frames
    with torch.no_grad():
        enc = model.encode(feats, lengths)
        logp = model.ctc_head(enc.outputs).log_softmax(-1)
    labels = [i for i in range(model.vocab_size) if i not in (Vocabulary.sos_id, Vocabulary.eos_id)]
    got = ctc_greedy_search(model, feats, lengths)
    for b, frames in enumerate(enc.lengths.tolist()):
        best = max(
            itertools.product(labels, repeat=frames),
            key=lambda path: sum(float(logp[b, t, k]) for t, k in enumerate(path)),
        )
        assert got[b] == ctc_collapse(list(best))


def test_ctc_greedy_ignores_padding_and_is_what_decode_runs() -> None:
    model = ctc_model(seed=2)
    feats, lengths = random_batch(seed=5, batch=5, max_frames=40)
    batched = decode(model, feats, lengths, cfg(ctc_greedy=True, beam_size=4, ctc_weight=0.3))
    for b in range(5):
        n = int(lengths[b])
        assert batched[b] == ctc_greedy_search(model, feats[b : b + 1, :n], lengths[b : b + 1])[0]
    assert any(batched), "a random model should emit something"
    assert all(Vocabulary.eos_id not in ids and Vocabulary.sos_id not in ids for ids in batched)


def test_ctc_greedy_needs_a_ctc_head() -> None:
    model, _, _ = tiny_model()
    feats, lengths = random_batch(seed=0, batch=2)
    with pytest.raises(ConfigError, match="ctc_greedy"):
        decode(model, feats, lengths, cfg(ctc_greedy=True))
