"""Greedy and beam search over the decoder, batched over utterances."""

from __future__ import annotations

import math

import torch

from asr_s2s.config import DecodeConfig
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary


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


def _until_eos(seq: list[int]) -> list[int]:
    return seq[: seq.index(Vocabulary.eos_id)] if Vocabulary.eos_id in seq else seq


@torch.inference_mode()
def beam_search(
    model: Seq2Seq, feats: torch.Tensor, lengths: torch.Tensor, cfg: DecodeConfig | None = None
) -> list[list[int]]:
    """Beam search of width ``cfg.beam_size`` for a batch; returns the best hypothesis per utterance.

    Each step keeps the ``beam_size`` best live prefixes (by summed log-probability); one whose
    <eos> is among the step's ``beam_size`` best extensions ends. Ended hypotheses are ranked by
    ``log p / length ** cfg.length_penalty`` (``log p`` summed over the characters and the <eos>,
    ``length`` counting the <eos>). An utterance stops once its best ended hypothesis scores at
    least as well as the best live one would, ending at this length, or at its length limit
    (:func:`max_output_lengths`), where the live hypotheses join the ended ones unterminated, as
    greedy search's would. With ``beam_size == 1`` the result equals :func:`greedy_search`'s.
    """
    cfg = cfg or DecodeConfig()
    k = cfg.beam_size
    device = feats.device
    enc = model.encode(feats, lengths)
    batch = feats.shape[0]
    state = model.initial_state(enc).select(torch.arange(batch, device=device).repeat_interleave(k))
    limit = max_output_lengths(enc.lengths, cfg).tolist()
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    seqs = torch.zeros(batch, k, 0, dtype=torch.long, device=device)
    tokens = torch.full((batch * k,), Vocabulary.sos_id, dtype=torch.long, device=device)
    ended: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    for t in range(max(limit)):
        logits, state = model.decoder.step(tokens, state)
        vocab = logits.shape[-1]
        logp = _mask_specials(logits.float().log_softmax(-1)).view(batch, k, vocab)
        cand = (scores[:, :, None] + logp).view(batch, k * vocab)
        top_scores, top_index = cand.topk(min(2 * k, k * vocab), dim=1)
        top_beam, top_token = top_index // vocab, top_index % vocab
        is_eos = top_token == Vocabulary.eos_id
        for b, j in (is_eos[:, :k] & torch.isfinite(top_scores[:, :k])).nonzero().tolist():
            if not done[b]:
                ended[b].append(
                    (
                        float(top_scores[b, j]) / (t + 1) ** cfg.length_penalty,
                        seqs[b, int(top_beam[b, j])].tolist(),
                    )
                )
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
                # for length_penalty 0 (scores only fall); with normalization a longer hypothesis
                # could still catch up, a chance given up as in common practice.
                done[b] = True
        if all(done):
            break
        scores = scores.masked_fill(torch.tensor(done, device=device)[:, None], float("-inf"))
        flat = (beam + torch.arange(batch, device=device)[:, None] * k).view(-1)
        state = state.select(flat)
        tokens = token.view(-1)
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in ended]


def decode(
    model: Seq2Seq, feats: torch.Tensor, lengths: torch.Tensor, cfg: DecodeConfig | None = None
) -> list[list[int]]:
    """Greedy search for ``beam_size == 1``, beam search otherwise."""
    cfg = cfg or DecodeConfig()
    if cfg.beam_size <= 1:
        return greedy_search(model, feats, lengths, cfg)
    return beam_search(model, feats, lengths, cfg)
