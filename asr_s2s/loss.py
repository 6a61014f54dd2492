"""Training losses: label-smoothed cross entropy for the decoder, CTC for the encoder aid."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asr_s2s.text import Vocabulary


def teacher_forcing_io(tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded targets ``(batch, chars)`` -> decoder inputs ``<sos> + y`` and labels ``y + <eos>``,
    both ``(batch, chars + 1)`` and padded with the pad id."""
    batch = tokens.shape[0]
    sos = torch.full((batch, 1), Vocabulary.sos_id, dtype=tokens.dtype, device=tokens.device)
    pad = torch.full((batch, 1), Vocabulary.pad_id, dtype=tokens.dtype, device=tokens.device)
    inputs = torch.cat([sos, tokens], dim=1)
    labels = torch.cat([tokens, pad], dim=1)
    labels[torch.arange(batch, device=tokens.device), lengths] = Vocabulary.eos_id
    return inputs, labels


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean per-token cross entropy of ``(batch, steps, vocab)`` logits; pad labels are ignored."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=Vocabulary.pad_id,
        label_smoothing=label_smoothing,
    )


def ctc_loss(
    ctc_logits: torch.Tensor, enc_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
) -> torch.Tensor:
    """CTC of ``(batch, time', vocab)`` encoder logits against the character targets; blank = pad id.

    Averaged over target characters so that its scale matches the per-token cross entropy.
    """
    log_probs = ctc_logits.float().log_softmax(-1).transpose(0, 1)
    loss = F.ctc_loss(
        log_probs,
        tokens,
        enc_lengths,
        token_lengths,
        blank=Vocabulary.pad_id,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / token_lengths.sum().clamp_min(1)
