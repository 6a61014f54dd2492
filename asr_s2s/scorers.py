"""Scorers for beam search: the attention decoder, CTC prefix scores, a character LM and a word LM.

Every scorer scores the next token of all live hypotheses at once. Hypotheses are rows of a batch
``(batch * beam,)`` grouped by utterance: rows ``b*beam .. b*beam+beam-1`` belong to utterance ``b``
and never leave its group, so a scorer can keep per-utterance tensors (the encoder outputs, the CTC
posteriors) once and read them through views. The protocol (see :class:`Scorer`):

- ``start(beam)`` -> the state of ``batch * beam`` empty hypotheses (after ``<sos>``);
- ``score(state, tokens)`` -> ``(rows, vocab)`` log-scores of every next token, and a pending state;
- ``select(pending, index, tokens)`` -> the state of the hypotheses ``index`` extended by ``tokens``.

The scores are increments: summed over a hypothesis's tokens (and its ``<eos>``) they give its total
log-score under that scorer. Beam search (:mod:`asr_s2s.decoding`) takes their weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from asr_s2s.model import DecoderState, EncoderOutput, Seq2Seq
from asr_s2s.text import Vocabulary
from asr_s2s.word_lm import WordLM


class Scorer(Protocol):
    """What beam search needs of a scorer (see the module docstring)."""

    def start(self, beam: int) -> Any: ...

    def score(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]: ...

    def select(self, pending: Any, index: torch.Tensor, tokens: torch.Tensor) -> Any: ...


class DecoderScorer:
    """The seq2seq decoder's ``log p(y_i | y_<i, x)``; its state is a :class:`DecoderState` whose
    encoder side stays one row per utterance (:meth:`DecoderState.expand`)."""

    def __init__(self, model: Seq2Seq, enc: EncoderOutput) -> None:
        self.model = model
        self.enc = enc

    def start(self, beam: int) -> DecoderState:
        return self.model.initial_state(self.enc).expand(beam)

    def score(self, state: DecoderState, tokens: torch.Tensor) -> tuple[torch.Tensor, DecoderState]:
        logits, state = self.model.decoder.step(tokens, state)
        return logits.float().log_softmax(-1), state

    def select(self, pending: DecoderState, index: torch.Tensor, tokens: torch.Tensor) -> DecoderState:
        return pending.reorder(index)


@dataclass
class CTCState:
    """CTC prefix state of ``rows`` hypotheses: forward log-probabilities ``r_n``, ``r_b``
    ``(rows, time)`` of the prefix ending at frame ``t`` in a label / in blank, the prefix score
    ``psi`` ``(rows,)`` (log-probability that the label sequence starts with the prefix) and the
    last token ``(rows,)`` (``<sos>`` for the empty prefix)."""

    r_n: torch.Tensor
    r_b: torch.Tensor
    psi: torch.Tensor
    last: torch.Tensor


@dataclass
class _CTCPending:
    state: CTCState
    phi: torch.Tensor  # (rows, time): log of the prefix's mass that may precede a new label at t
    phi_same: torch.Tensor  # (rows, time): the same when the new label repeats the last one
    psi: torch.Tensor  # (rows, vocab): the prefix score of every extension


class CTCPrefixScorer:
    """CTC prefix scores (Watanabe et al., 2017; ESPnet's ``CTCPrefixScoreTH``), in log space,
    for all hypotheses and the whole vocabulary at once.

    For prefix ``g`` and label ``c``, ``psi(g + c) = log sum_t phi_{t-1}(g, c) p_t(c)`` where
    ``phi_{t-1}`` is the probability of having emitted ``g`` by frame ``t - 1`` and being allowed to
    start ``c`` at ``t`` (blank-ended only when ``c`` repeats the last label); ``psi(g + <eos>)`` is
    the probability of exactly ``g``. The score is the increment ``psi(g + c) - psi(g)``.

    ``log_probs`` ``(batch, time, vocab)`` CTC log-posteriors, ``lengths`` ``(batch,)`` frames per
    utterance, ``blank`` the blank id (the pad id in this project). The forward variables of a new
    prefix come from linear recurrences in ``t``, solved with cumulative sums and ``logcumsumexp``
    in float64 instead of a loop over the frames.
    """

    def __init__(
        self, log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = Vocabulary.pad_id
    ) -> None:
        batch, time, _ = log_probs.shape
        self.blank = blank
        self.lengths = lengths.to(log_probs.device)
        real = torch.arange(time, device=log_probs.device)[None, :] < self.lengths[:, None]
        # Frames past an utterance's end hold log 1: never read, and they keep the sums finite.
        self.x = log_probs.double().masked_fill(~real[:, :, None], 0.0)  # (batch, time, vocab)
        self.cum = self.x.cumsum(1)
        self.frame_mask = torch.zeros(batch, time, dtype=torch.float64, device=log_probs.device)
        self.frame_mask.masked_fill_(~real, float("-inf"))

    @classmethod
    def from_model(cls, model: Seq2Seq, enc: EncoderOutput) -> CTCPrefixScorer:
        """The scorer of ``model``'s CTC head on encoder output ``enc``."""
        if model.ctc_head is None:
            raise ValueError("this model has no CTC head (trained with train.ctc_weight=0)")
        return cls(model.ctc_head(enc.outputs).float().log_softmax(-1), enc.lengths)

    def start(self, beam: int) -> CTCState:
        batch, time, _ = self.x.shape
        rows = batch * beam
        r_b = self.cum[:, :, self.blank].repeat_interleave(beam, 0)
        r_n = torch.full_like(r_b, float("-inf"))
        psi = torch.zeros(rows, dtype=torch.float64, device=self.x.device)
        last = torch.full((rows,), Vocabulary.sos_id, dtype=torch.long, device=self.x.device)
        return CTCState(r_n, r_b, psi, last)

    def score(self, state: CTCState, tokens: torch.Tensor) -> tuple[torch.Tensor, _CTCPending]:
        batch, time, vocab = self.x.shape
        rows = state.psi.shape[0]
        beam = rows // batch
        empty = state.last == Vocabulary.sos_id
        first = torch.where(empty, 0.0, float("-inf")).to(torch.float64)[:, None]
        phi = torch.cat([first, torch.logaddexp(state.r_n, state.r_b)[:, :-1]], 1)
        phi_same = torch.cat([first, state.r_b[:, :-1]], 1)
        mask = self.frame_mask[:, None, :]  # (batch, 1, time): -inf past each utterance's end
        # psi(g + c) for every c: (batch, beam, time, 1) + (batch, 1, time, vocab), no copy of x per beam.
        terms = (phi.view(batch, beam, time) + mask)[..., None] + self.x[:, None]
        psi = torch.logsumexp(terms, 2).view(rows, vocab)
        utt = torch.arange(rows, device=self.x.device) // beam
        same = (phi_same.view(batch, beam, time) + mask).view(rows, time) + self.x[utt, :, state.last]
        psi_same = torch.logsumexp(same, 1)
        psi = psi.scatter(1, state.last[:, None], psi_same[:, None])
        end = (self.lengths - 1).clamp_min(0).repeat_interleave(beam)[:, None]
        psi[:, Vocabulary.eos_id] = torch.logaddexp(state.r_n, state.r_b).gather(1, end)[:, 0]
        psi[:, self.blank] = float("-inf")
        # A prefix already impossible stays impossible (and -inf - -inf would be NaN).
        alive = torch.isfinite(state.psi)[:, None]
        delta = torch.where(alive, psi - state.psi[:, None], float("-inf"))
        return delta.float(), _CTCPending(state, phi, phi_same, psi)

    def select(self, pending: _CTCPending, index: torch.Tensor, tokens: torch.Tensor) -> CTCState:
        batch, time, _ = self.x.shape
        beam = pending.psi.shape[0] // batch
        utt = index // beam
        repeat = (tokens == pending.state.last.index_select(0, index))[:, None]
        phi = torch.where(repeat, pending.phi_same.index_select(0, index), pending.phi.index_select(0, index))
        x_c = self.x[utt, :, tokens]  # (rows, time)
        cum_c = self.cum[utt, :, tokens]
        # r_n(t) = (r_n(t-1) + phi(t)) p_t(c)  =>  r_n(t) = C(t) + logcumsumexp_s<=t (phi(s) - C(s-1)).
        r_n = cum_c + torch.logcumsumexp(phi - (cum_c - x_c), 1)
        # r_b(t) = (r_n(t-1) + r_b(t-1)) p_t(blank), r_b(0) = 0: the same with r_n shifted by a frame.
        x_b = self.x[utt, :, self.blank]
        cum_b = self.cum[utt, :, self.blank]
        shifted = torch.cat([torch.full_like(r_n[:, :1], float("-inf")), r_n[:, :-1]], 1)
        r_b = cum_b + torch.logcumsumexp(shifted - (cum_b - x_b), 1)
        psi = pending.psi[index, tokens]
        return CTCState(r_n, r_b, psi, tokens)


class LMScorer:
    """A character LM's ``log p(y_i | y_<i)`` (shallow fusion); ``lm`` is a
    :class:`asr_s2s.lm.CharLM` (any module with ``initial_state(rows, device)`` and ``step``)."""

    def __init__(self, lm: Any, batch: int, device: torch.device) -> None:
        self.lm = lm
        self.batch = batch
        self.device = device

    def start(self, beam: int) -> Any:
        return self.lm.initial_state(self.batch * beam, self.device)

    def score(self, state: Any, tokens: torch.Tensor) -> tuple[torch.Tensor, Any]:
        logits, state = self.lm.step(tokens, state)
        return logits.float().log_softmax(-1), state

    def select(self, pending: Any, index: torch.Tensor, tokens: torch.Tensor) -> Any:
        h, c = pending
        return h.index_select(1, index), c.index_select(1, index)


class WordLMScorer:
    """A unigram word LM's per-character look-ahead scores (:class:`asr_s2s.word_lm.WordLM`); the
    state is each hypothesis's node in the word list's prefix tree ``(rows,)``."""

    def __init__(self, lm: WordLM, batch: int, device: torch.device, oov_penalty: float) -> None:
        self.lm = lm.to(device)
        self.batch = batch
        self.device = device
        self.oov_penalty = oov_penalty

    def start(self, beam: int) -> torch.Tensor:
        return torch.zeros(self.batch * beam, dtype=torch.long, device=self.device)

    def score(self, state: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        leaves = self.lm.leaves.index_select(0, state)
        return self.lm.delta.index_select(0, state) - self.oov_penalty * leaves, state

    def select(self, pending: torch.Tensor, index: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm.next[pending.index_select(0, index), tokens].long()
