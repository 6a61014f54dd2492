"""Scorers against independent references: CTC prefix scores against brute-force enumeration of all
alignments (and torch's CTC loss), CTC-only beam search against a frame-synchronous CTC prefix beam
search, joint decoder/CTC/LM beam search against exhaustive search on a tiny model."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from asr_s2s.config import DecodeConfig, LMConfig, ModelConfig
from asr_s2s.decoding import beam_search, search
from asr_s2s.lm import CharLM
from asr_s2s.model import Seq2Seq
from asr_s2s.scorers import CTCPrefixScorer, DecoderScorer
from asr_s2s.text import Vocabulary

BLANK, SOS, EOS = Vocabulary.pad_id, Vocabulary.sos_id, Vocabulary.eos_id
LABELS = (3, 4, 5)  # the tokens after <pad> (the blank), <sos> and <eos>: <unk>, a, b
VOCAB = 6


def collapse(path: tuple[int, ...]) -> tuple[int, ...]:
    """CTC's many-to-one map: merge repeats, then drop blanks."""
    return tuple(s for i, s in enumerate(path) if s != BLANK and (i == 0 or s != path[i - 1]))


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Probability of every label sequence, summed over all ``vocab ** time`` alignments (float64)."""
    probs = log_probs.double().exp()
    time, vocab = probs.shape
    paths = list(itertools.product(range(vocab), repeat=time))
    path_probs = probs[torch.arange(time), torch.tensor(paths)].prod(1).tolist()
    totals: dict[tuple[int, ...], float] = {}
    for path, p in zip(paths, path_probs):
        key = collapse(path)
        totals[key] = totals.get(key, 0.0) + p
    return totals


def random_log_probs(seed: int, batch: int, time: int, sharpness: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, time, VOCAB, generator=g, dtype=torch.float64) * sharpness).log_softmax(-1)


def run_prefixes(
    scorer: CTCPrefixScorer, prefixes: list[tuple[int, ...]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ``prefixes`` (all one length), one hypothesis row each per utterance, through the scorer:
    returns the summed increments ``(batch, len(prefixes))`` of the prefixes and of the prefixes + <eos>."""
    batch = scorer.x.shape[0]
    beam = len(prefixes)
    state = scorer.start(beam)
    total = torch.zeros(batch * beam, dtype=torch.float64)
    rows = torch.arange(batch * beam)
    tokens = torch.full((batch * beam,), SOS)
    for i in range(len(prefixes[0])):
        delta, pending = scorer.score(state, tokens)
        tokens = torch.tensor([p[i] for p in prefixes] * batch)
        total += delta.double()[rows, tokens]
        state = scorer.select(pending, rows, tokens)
    delta, _ = scorer.score(state, tokens)
    return total.view(batch, beam), (total + delta.double()[:, EOS]).view(batch, beam)


def test_ctc_prefix_scores_match_brute_force_enumeration() -> None:
    log_probs = random_log_probs(0, batch=2, time=5)
    lengths = torch.tensor([5, 3])  # the second utterance's last two frames are padding
    scorer = CTCPrefixScorer(log_probs.float(), lengths)
    truths = [brute_force(log_probs[b, : lengths[b]]) for b in range(2)]
    for n in range(0, 4):
        prefixes = [tuple(p) for p in itertools.product(LABELS, repeat=n)] if n else [()]
        if n == 0:
            prefixes = [(), ()]  # two rows, to exercise the grouping even here
        prefix_scores, full_scores = run_prefixes(scorer, prefixes)
        for b, truth in enumerate(truths):
            for j, prefix in enumerate(prefixes):
                starts = sum(p for seq, p in truth.items() if seq[: len(prefix)] == prefix)
                exact = truth.get(prefix, 0.0)
                # float32 posteriors in the scorer, float64 in the enumeration
                assert prefix_scores[b, j].exp().item() == pytest.approx(starts, rel=1e-5, abs=1e-12)
                assert full_scores[b, j].exp().item() == pytest.approx(exact, rel=1e-5, abs=1e-12)


def test_ctc_full_scores_match_torch_ctc_loss() -> None:
    log_probs = random_log_probs(1, batch=3, time=12, sharpness=2.0)
    lengths = torch.tensor([12, 9, 7])
    scorer = CTCPrefixScorer(log_probs.float(), lengths)
    prefixes = [(3, 4, 4, 5), (5, 5, 5, 5), (4, 3, 5, 3), (3, 3, 4, 4)]
    _, full = run_prefixes(scorer, prefixes)
    for b in range(3):
        for j, prefix in enumerate(prefixes):
            loss = F.ctc_loss(
                log_probs[b, : lengths[b], None],
                torch.tensor([prefix]),
                lengths[b : b + 1],
                torch.tensor([len(prefix)]),
                blank=BLANK,
                reduction="sum",
            )
            assert full[b, j].item() == pytest.approx(-loss.item(), abs=1e-4)


def test_impossible_prefixes_score_minus_infinity_not_nan() -> None:
    # Two frames cannot hold three labels, nor a repeat plus another label.
    scorer = CTCPrefixScorer(random_log_probs(2, 1, 2).float(), torch.tensor([2]))
    prefix, full = run_prefixes(scorer, [(3, 4, 5), (3, 3, 4)])
    assert torch.isneginf(prefix).all() and torch.isneginf(full).all()
    state = scorer.start(1)
    delta, pending = scorer.score(state, torch.tensor([SOS]))
    assert not torch.isnan(delta).any()


def reference_ctc_beam_search(log_probs: torch.Tensor, beam: int) -> tuple[int, ...]:
    """Frame-synchronous CTC prefix beam search (Hannun et al., 2014) over ``LABELS``, in log space."""
    lp = log_probs.double().tolist()
    neg = float("-inf")

    def add(a: float, b: float) -> float:
        return float(torch.logaddexp(torch.tensor(a), torch.tensor(b)))

    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg)}  # prefix -> (blank, non-blank)
    def put(table: dict, prefix: tuple[int, ...], blank: float, label: float) -> None:
        old = table.setdefault(prefix, [neg, neg])
        old[0], old[1] = add(old[0], blank), add(old[1], label)

    for frame in lp:
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (pb, pn) in beams.items():
            put(nxt, prefix, add(pb, pn) + frame[BLANK], neg)
            if prefix:
                put(nxt, prefix, neg, pn + frame[prefix[-1]])
            for c in LABELS:
                if prefix and c == prefix[-1]:
                    put(nxt, prefix + (c,), neg, pb + frame[c])
                else:
                    put(nxt, prefix + (c,), neg, add(pb, pn) + frame[c])
        ranked = sorted(nxt.items(), key=lambda kv: add(*kv[1]), reverse=True)[:beam]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return max(beams.items(), key=lambda kv: add(*kv[1]))[0]


def ctc_only_search(log_probs: torch.Tensor, lengths: torch.Tensor, beam: int) -> list[list[int]]:
    # Only the labels may be emitted: the CTC posteriors of <unk> etc. do not exist here.
    cfg = dataclasses.replace(DecodeConfig(), beam_size=beam, length_penalty=0.0, ctc_weight=1.0)
    limit = [int(n) + 1 for n in lengths]
    return search([(1.0, CTCPrefixScorer(log_probs.float(), lengths))], log_probs.shape[0], limit, cfg)


@pytest.mark.parametrize("seed", range(6))
def test_ctc_weight_one_matches_brute_force_and_reference_prefix_search(seed: int) -> None:
    log_probs = random_log_probs(10 + seed, batch=2, time=6, sharpness=2.5)
    lengths = torch.tensor([6, 5])
    found = ctc_only_search(log_probs, lengths, beam=12)
    for b in range(2):
        truth = brute_force(log_probs[b, : lengths[b]])
        best = max((seq for seq in truth if all(s in LABELS for s in seq)), key=truth.__getitem__)
        assert tuple(found[b]) == best
        assert reference_ctc_beam_search(log_probs[b, : lengths[b]], beam=12) == best


def peaky_log_probs(seed: int, batch: int, time: int) -> torch.Tensor:
    """Posteriors shaped like a trained CTC head's: blank on most frames, a confident label on ~20 %."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, time, VOCAB, generator=g, dtype=torch.float64) * 1.5
    spike = torch.rand(batch, time, generator=g) < 0.2
    label = torch.tensor(LABELS)[torch.randint(0, len(LABELS), (batch, time), generator=g)]
    chosen = torch.where(spike, label, torch.full_like(label, BLANK))
    logits.scatter_add_(2, chosen[..., None], torch.full((batch, time, 1), 6.0, dtype=torch.float64))
    return logits.log_softmax(-1)


@pytest.mark.parametrize("seed", range(8))
def test_ctc_search_matches_reference_prefix_search_on_long_peaky_input(seed: int) -> None:
    # 40 frames, beam 10. (On flat posteriors the two differ more often: the label-synchronous search
    # prunes prefixes by their total prefix probability, the frame-synchronous one frame by frame.)
    log_probs = peaky_log_probs(seed, batch=3, time=40)
    lengths = torch.tensor([40, 33, 21])
    found = ctc_only_search(log_probs, lengths, beam=10)
    for b in range(3):
        assert tuple(found[b]) == reference_ctc_beam_search(log_probs[b, : lengths[b]], beam=10)


# ---- joint search against exhaustive search --------------------------------------------------


def tiny_joint_model(seed: int) -> tuple[Seq2Seq, CharLM]:
    """A random model and LM over <pad> <sos> <eos> <unk> a b (vocabulary 6), with a CTC head."""
    torch.manual_seed(seed)
    cfg = ModelConfig(
        stack_frames=3, encoder_hidden=8, encoder_layers=1, embedding_dim=4, decoder_hidden=8,
        decoder_layers=1, attention="location", attention_dim=4,
    )
    model = Seq2Seq(cfg, n_mels=5, vocab_size=VOCAB, ctc=True).eval()
    with torch.no_grad():  # sharper outputs than a random init gives, so that the weights matter
        model.decoder.output.weight.mul_(6.0)
        model.ctc_head.weight.mul_(6.0)
    lm = CharLM(LMConfig(embedding_dim=4, hidden=8, dropout=0.0), VOCAB).eval()
    with torch.no_grad():
        lm.output.weight.mul_(6.0)
    return model, lm


def joint_scores(
    model: Seq2Seq, lm: CharLM, feats: torch.Tensor, length: torch.Tensor, cfg: DecodeConfig, max_len: int
) -> dict[tuple[int, ...], float]:
    """The search's objective for every ended sequence over the non-special tokens: decoder and LM by
    teacher forcing, CTC by torch's CTC loss."""
    seqs = [seq for n in range(max_len) for seq in itertools.product(LABELS, repeat=n)]
    count, width = len(seqs), max_len + 1
    inputs = torch.full((count, width), BLANK)
    targets = torch.full((count, width), BLANK)
    for i, seq in enumerate(seqs):
        inputs[i, : len(seq) + 1] = torch.tensor([SOS, *seq])
        targets[i, : len(seq) + 1] = torch.tensor([*seq, EOS])
    real = targets != BLANK
    with torch.no_grad():
        enc = model.encode(feats[None], length[None])
        state = model.initial_state(enc).select(torch.zeros(count, dtype=torch.long))
        dec = model.decoder(inputs, state)[0].float().log_softmax(-1).gather(2, targets[..., None])[..., 0]
        lm_lp = lm(inputs).float().log_softmax(-1).gather(2, targets[..., None])[..., 0]
        ctc = model.ctc_head(enc.outputs).float().log_softmax(-1)[0, : enc.lengths[0]]
        ctc_lp = -F.ctc_loss(
            ctc[:, None].expand(-1, count, -1),
            targets.masked_fill(targets == EOS, BLANK),
            enc.lengths.expand(count),
            real.sum(1) - 1,
            blank=BLANK,
            reduction="none",
        )
    dec_total = (dec * real).sum(1)
    lm_total = (lm_lp * real).sum(1)
    results = {}
    for i, seq in enumerate(seqs):
        total = (1 - cfg.ctc_weight) * float(dec_total[i]) + cfg.length_bonus * (len(seq) + 1)
        if cfg.ctc_weight:
            total += cfg.ctc_weight * float(ctc_lp[i])
        if cfg.lm_weight:
            total += cfg.lm_weight * float(lm_total[i])
        results[seq] = total
    return results


@pytest.mark.parametrize(
    ("ctc_weight", "lm_weight", "bonus"),
    [(0.3, 0.0, 0.0), (0.5, 0.5, 0.0), (1.0, 0.0, 0.0), (0.2, 1.0, -0.5), (0.7, 0.3, -0.1)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_beam_search_matches_exhaustive_search(
    seed: int, ctc_weight: float, lm_weight: float, bonus: float
) -> None:
    model, lm = tiny_joint_model(seed)
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 12, 5, generator=g) * 2
    lengths = torch.tensor([12, 9])  # 4 and 3 encoder frames: CTC allows at most 4 and 3 labels
    cfg = dataclasses.replace(
        DecodeConfig(), beam_size=256, length_penalty=0.0, max_len_ratio=0.0, max_len_offset=6,
        ctc_weight=ctc_weight, lm_weight=lm_weight, length_bonus=bonus,
    )
    found = beam_search(model, feats, lengths, cfg, lm=lm)
    for b in range(2):
        scores = joint_scores(model, lm, feats[b, : lengths[b]], lengths[b], cfg, max_len=5)
        best = max(scores, key=scores.__getitem__)
        assert tuple(found[b]) == best, (scores[tuple(found[b])], scores[best])


def test_encoder_memory_is_shared_by_the_hypotheses_not_copied() -> None:
    model, _ = tiny_joint_model(0)
    feats, lengths = torch.randn(3, 12, 5), torch.tensor([12, 9, 6])
    enc = model.encode(feats, lengths)
    scorer = DecoderScorer(model, enc)
    state = scorer.start(4)
    assert state.h.shape[1] == 12 and state.memory.shape[0] == 3
    tokens = torch.full((12,), SOS)
    for _ in range(3):
        _, pending = scorer.score(state, tokens)
        index = torch.arange(12).view(3, 4).flip(1).reshape(-1)  # reorder within each utterance
        state = scorer.select(pending, index, tokens)
        assert state.memory.data_ptr() == enc.outputs.data_ptr()
        assert state.keys.shape[0] == 3 and state.memory_mask.shape[0] == 3
