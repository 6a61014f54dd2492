"""Greedy search over the decoder, beam search over weighted scorers (decoder, CTC, LM), and the CTC
head's greedy best path, batched over utterances."""

from __future__ import annotations

import math

import torch

from asr_s2s.config import DecodeConfig
from asr_s2s.errors import ConfigError
from asr_s2s.lm import CharLM
from asr_s2s.model import EncoderOutput, Seq2Seq
from asr_s2s.scorers import CTCPrefixScorer, DecoderScorer, LMScorer, Scorer, WordLMScorer
from asr_s2s.text import Vocabulary
from asr_s2s.word_lm import WordLM


def max_output_lengths(enc_lengths: torch.Tensor, cfg: DecodeConfig) -> torch.Tensor:
    """Longest hypothesis allowed per utterance: ``ratio * encoder_frames + offset`` characters."""
    return (enc_lengths.float() * cfg.max_len_ratio).long() + cfg.max_len_offset


def _mask_specials(logp: torch.Tensor) -> torch.Tensor:
    logp[..., Vocabulary.pad_id] = float("-inf")
    logp[..., Vocabulary.sos_id] = float("-inf")
    return logp


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, feats: torch.Tensor, lengths: torch.Tensor, cfg: DecodeConfig | None = None
) -> list[list[int]]:
    """Most likely token at each step, for ``(batch, time, n_mels)`` features; ids without <eos>."""
    cfg = cfg or DecodeConfig()
    enc = model.encode(feats, lengths)
    state = model.initial_state(enc)
    batch = feats.shape[0]
    limit = max_output_lengths(enc.lengths, cfg).to(feats.device)
    tokens = torch.full((batch,), Vocabulary.sos_id, dtype=torch.long, device=feats.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=feats.device)
    out = []
    for t in range(int(limit.max())):
        logits, state = model.decoder.step(tokens, state)
        tokens = _mask_specials(logits.float()).argmax(-1)
        finished |= t >= limit
        tokens = torch.where(finished, torch.full_like(tokens, Vocabulary.eos_id), tokens)
        out.append(tokens)
        finished |= tokens == Vocabulary.eos_id
        if bool(finished.all()):
            break
    steps = torch.stack(out, 1).tolist() if out else [[] for _ in range(batch)]
    return [_until_eos(seq) for seq in steps]


def ctc_collapse(path: list[int], blank: int = Vocabulary.pad_id) -> list[int]:
    """A CTC alignment -> its labels: runs of one id merged, then blanks dropped
    (``a a - a b b`` -> ``a a b``: a blank between two equal labels keeps both)."""
    labels, previous = [], None
    for token in path:
        if token != previous and token != blank:
            labels.append(token)
        previous = token
    return labels


@torch.inference_mode()
def ctc_greedy_search(model: Seq2Seq, feats: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """The CTC head's best path for ``(batch, time, n_mels)`` features, collapsed (:func:`ctc_collapse`).

    The most likely token per encoder frame, within each utterance's length, as the greedy decoders
    of CTC toolkits do: no decoder, no language model, no beam. ``<sos>`` and ``<eos>`` are never CTC
    targets, so they are excluded from the argmax; the blank is the pad id, as in training.
    """
    if model.ctc_head is None:
        raise ConfigError("decode.ctc_greedy needs a CTC head, and this model has none (train.ctc_weight=0)")
    enc = model.encode(feats, lengths)
    logits = model.ctc_head(enc.outputs).float()
    logits[..., Vocabulary.sos_id] = float("-inf")
    logits[..., Vocabulary.eos_id] = float("-inf")
    best = logits.argmax(-1).tolist()
    return [ctc_collapse(row[:n]) for row, n in zip(best, enc.lengths.tolist())]


def _until_eos(seq: list[int]) -> list[int]:
    return seq[: seq.index(Vocabulary.eos_id)] if Vocabulary.eos_id in seq else seq


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    feats: torch.Tensor,
    lengths: torch.Tensor,
    cfg: DecodeConfig | None = None,
    lm: CharLM | WordLM | None = None,
) -> list[list[int]]:
    """Beam search of width ``cfg.beam_size`` for a batch; returns the best hypothesis per utterance.

    Hypotheses are scored by ``(1 - ctc_weight) * decoder + ctc_weight * CTC prefix score +
    lm_weight * lm + length_bonus`` per token (see :func:`weighted_scorers`); ``lm`` is the
    character LM that ``cfg.lm_weight`` weighs. With the extra weights 0 this is the decoder's own
    search, with its results of before the scorers. The search itself is :func:`search`.
    """
    cfg = cfg or DecodeConfig()
    enc = model.encode(feats, lengths)
    scorers = weighted_scorers(model, enc, cfg, lm)
    return search(scorers, feats.shape[0], max_output_lengths(enc.lengths, cfg).tolist(), cfg)


def check_search(model: Seq2Seq, cfg: DecodeConfig, lm: CharLM | WordLM | None = None) -> None:
    """Raise :class:`ConfigError` for search settings that cannot run: a CTC weight outside [0, 1] or
    without a CTC head, an LM weight without an LM, an LM over another vocabulary, or an LM given
    with ``lm_weight`` 0 (it would be ignored)."""
    if not 0.0 <= cfg.ctc_weight <= 1.0:
        raise ConfigError(f"decode.ctc_weight must be in [0, 1], got {cfg.ctc_weight}")
    if cfg.ctc_weight > 0.0 and model.ctc_head is None:
        raise ConfigError(
            "decode.ctc_weight > 0 needs a CTC head, and this model has none "
            "(trained with train.ctc_weight=0)"
        )
    if lm is None:
        if cfg.lm_weight != 0.0:
            raise ConfigError("decode.lm_weight is set but no language model was given (--lm FILE)")
        return
    if cfg.lm_weight == 0.0:
        raise ConfigError("a language model was given but decode.lm_weight is 0: set it (--lm-weight W)")
    if lm.vocab_size != model.vocab_size:
        raise ConfigError(
            f"the language model has {lm.vocab_size} tokens and the model {model.vocab_size}: "
            "train the LM with the model's vocabulary (asr-s2s train-lm --model MODEL)"
        )


def weighted_scorers(
    model: Seq2Seq, enc: EncoderOutput, cfg: DecodeConfig, lm: CharLM | WordLM | None = None
) -> list[tuple[float, Scorer]]:
    """The scorers with a nonzero weight: decoder ``1 - cfg.ctc_weight``, the CTC head's prefix
    scores ``cfg.ctc_weight``, ``lm`` with ``cfg.lm_weight`` (checked by :func:`check_search`)."""
    check_search(model, cfg, lm if cfg.lm_weight else None)
    scorers: list[tuple[float, Scorer]] = []
    if cfg.ctc_weight < 1.0:
        scorers.append((1.0 - cfg.ctc_weight, DecoderScorer(model, enc)))
    if cfg.ctc_weight > 0.0:
        scorers.append((cfg.ctc_weight, CTCPrefixScorer.from_model(model, enc)))
    if cfg.lm_weight != 0.0 and lm is not None:
        batch, device = enc.outputs.shape[0], enc.outputs.device
        if isinstance(lm, WordLM):
            scorers.append((cfg.lm_weight, WordLMScorer(lm, batch, device, cfg.oov_penalty)))
        else:
            scorers.append((cfg.lm_weight, LMScorer(lm, batch, device)))
    return scorers


def search(
    scorers: list[tuple[float, Scorer]], batch: int, limit: list[int], cfg: DecodeConfig
) -> list[list[int]]:
    """Label-synchronous beam search over weighted scorers, batched over ``batch`` utterances.

    Each step, every scorer scores the next token of all ``batch * beam_size`` live hypotheses at
    once; a candidate's score is its prefix's plus the weighted sum of the scorers' increments plus
    ``cfg.length_bonus``. The ``beam_size`` best live extensions per utterance survive (each
    scorer's state follows them by index); one whose <eos> is among the step's ``beam_size`` best
    extensions ends. Ended hypotheses are ranked by ``score / length ** cfg.length_penalty``
    (``length`` counting the <eos>). An utterance stops once its best ended hypothesis scores at least
    as well as the best live one would, ending at this length, or at its length limit ``limit[b]``
    (:func:`max_output_lengths`), where the live hypotheses join the ended ones unterminated, as greedy
    search's would. The first rule is exact when no increment can be positive (``length_penalty``
    and ``length_bonus`` 0); a CTC weight stops looping hypotheses long before the limit, since
    their prefix score collapses once they outrun the audio. With ``beam_size == 1`` and only the
    decoder, the result equals :func:`greedy_search`'s.
    """
    k = cfg.beam_size
    device = _device(scorers)
    # A CTC prefix score bounds every completion of the prefix from above, so the live extensions
    # would crowd the exact score of ending now (<eos>) out of the top k: with CTC, every live
    # hypothesis's <eos> is recorded. Without it, only the top k's, as the search always did.
    every_eos = any(isinstance(scorer, CTCPrefixScorer) for _, scorer in scorers)
    states = [scorer.start(k) for _, scorer in scorers]
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    seqs = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    tokens = torch.full((batch * k,), Vocabulary.sos_id, dtype=torch.long, device=device)
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max(limit)):
        step: torch.Tensor | None = None
        pending = []
        for (weight, scorer), state in zip(scorers, states):
            logp, after = scorer.score(state, tokens)
            pending.append(after)
            # Weights of exactly 1 and a zero bonus leave the decoder's scores bit for bit as before.
            weighted = logp if weight == 1.0 else weight * logp
            step = weighted if step is None else step + weighted
        assert step is not None, "search needs at least one scorer"
        if cfg.length_bonus:
            step = step + cfg.length_bonus
        vocab = step.shape[-1]
        logp = _mask_specials(step).view(batch, k, vocab)
        cand = (scores[:, :, None] + logp).view(batch, k * vocab)
        top_scores, top_index = cand.topk(min(2 * k, k * vocab), dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == Vocabulary.eos_id
        if every_eos:
            eos_scores = scores + logp[:, :, Vocabulary.eos_id]
            hits = torch.isfinite(eos_scores).nonzero().tolist()
            eos_rows = eos_scores.tolist()
        else:
            hits = (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero().tolist()
        for b, j in hits:
            if not done[b]:
                if every_eos:
                    score, prefix = eos_rows[b][j], seqs[b, j]
                else:
                    score, prefix = float(top_scores[b, j]), seqs[b, int(top_beam[b, j])]
                ended[b].append((score / (t + 1) ** cfg.length_penalty, prefix.tolist()))
        keep_scores = top_scores.masked_fill(is_eos, float("-inf"))
        keep_scores, order = keep_scores.topk(k, dim=1)
        beam = top_beam.gather(1, order)
        token = top_token.gather(1, order)
        seqs = torch.cat(
            [seqs.gather(1, beam[:, :, None].expand(-1, -1, seqs.shape[2])), token[:, :, None]], 2
        )
        scores = keep_scores
        norm = (t + 1) ** cfg.length_penalty
        rows = scores.tolist()  # one device sync per step, not one per hypothesis
        for b in range(batch):
            if done[b]:
                continue
            if t + 1 >= limit[b]:
                # Cut off at the length limit: the live hypotheses compete with the ended ones.
                done[b] = True
                ended[b] += [
                    (s / norm, seqs[b, j].tolist()) for j, s in enumerate(rows[b]) if math.isfinite(s)
                ]
            elif ended[b] and max(h[0] for h in ended[b]) >= rows[b][0] / norm:
                # No live hypothesis, scored at its current length, beats the best ended one. Exact
                # when scores only fall; with normalization or a bonus a longer hypothesis could
                # still catch up, a chance given up as in common practice.
                done[b] = True
            elif not math.isfinite(rows[b][0]):
                done[b] = True  # every extension is impossible (e.g. longer than CTC allows)
        if all(done):
            break
        scores = scores.masked_fill(torch.tensor(done, device=device)[:, None], float("-inf"))
        flat = (beam + torch.arange(batch, device=device)[:, None] * k).view(-1)
        tokens = token.view(-1)
        states = [scorer.select(after, flat, tokens) for (_, scorer), after in zip(scorers, pending)]
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in ended]


def _device(scorers: list[tuple[float, Scorer]]) -> torch.device:
    for _, scorer in scorers:
        if isinstance(scorer, DecoderScorer):
            return scorer.enc.outputs.device
        if isinstance(scorer, CTCPrefixScorer):
            return scorer.x.device
        if hasattr(scorer, "device"):  # the LM scorers
            return scorer.device
    raise ValueError("search needs at least one scorer")


def uses_scorers(cfg: DecodeConfig) -> bool:
    """Whether ``cfg`` weighs anything besides the decoder (CTC, an LM, a length bonus)."""
    return bool(cfg.ctc_weight or cfg.lm_weight or cfg.length_bonus)


def decode(
    model: Seq2Seq,
    feats: torch.Tensor,
    lengths: torch.Tensor,
    cfg: DecodeConfig | None = None,
    lm: CharLM | WordLM | None = None,
) -> list[list[int]]:
    """The CTC head's best path with ``ctc_greedy``; greedy search for ``beam_size == 1`` with the
    decoder alone; beam search otherwise."""
    cfg = cfg or DecodeConfig()
    if cfg.ctc_greedy:
        return ctc_greedy_search(model, feats, lengths)
    if cfg.beam_size <= 1 and not uses_scorers(cfg):
        return greedy_search(model, feats, lengths, cfg)
    return beam_search(model, feats, lengths, cfg, lm)
