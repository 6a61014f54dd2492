"""Tests for asr_s2s.loss: decoder input/label construction, masked cross entropy and CTC."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asr_s2s.loss import cross_entropy, ctc_loss, teacher_forcing_io
from asr_s2s.text import Vocabulary

PAD, SOS, EOS = Vocabulary.pad_id, Vocabulary.sos_id, Vocabulary.eos_id


def test_teacher_forcing_io() -> None:
    tokens = torch.tensor([[5, 6, 7], [8, 9, PAD], [4, PAD, PAD], [PAD, PAD, PAD]])
    lengths = torch.tensor([3, 2, 1, 0])
    inputs, labels = teacher_forcing_io(tokens, lengths)
    assert inputs.tolist() == [
        [SOS, 5, 6, 7],
        [SOS, 8, 9, PAD],
        [SOS, 4, PAD, PAD],
        [SOS, PAD, PAD, PAD],
    ]
    assert labels.tolist() == [
        [5, 6, 7, EOS],
        [8, 9, EOS, PAD],
        [4, EOS, PAD, PAD],
        [EOS, PAD, PAD, PAD],
    ]
    assert tokens.tolist()[1] == [8, 9, PAD]  # input untouched
    assert inputs.dtype == labels.dtype == torch.long


def _manual_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[b, t])
            if y == PAD:
                continue
            total += -float(logits[b, t].double().log_softmax(-1)[y])
            count += 1
    return torch.tensor(total / count)


def test_cross_entropy_ignores_pad_positions() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 10, generator=gen)
    labels = torch.tensor([[4, 5, 6, EOS, PAD], [7, EOS, PAD, PAD, PAD], [8, 9, 4, 5, EOS]])
    loss = cross_entropy(logits, labels)
    torch.testing.assert_close(loss.double(), _manual_ce(logits, labels).double(), atol=1e-6, rtol=0)
    # Whatever the logits at pad positions are, the loss is the same.
    noisy = logits.clone()
    noisy[labels == PAD] = torch.randn(int((labels == PAD).sum()), 10) * 100
    assert torch.equal(cross_entropy(noisy, labels), loss)


def test_cross_entropy_is_fp32_for_half_logits() -> None:
    logits = torch.randn(2, 3, 6).to(torch.bfloat16)
    labels = torch.tensor([[4, 5, EOS], [4, EOS, PAD]])
    assert cross_entropy(logits, labels).dtype == torch.float32


def test_label_smoothing_raises_loss_of_a_confident_correct_prediction() -> None:
    labels = torch.tensor([[4, 5, EOS]])
    logits = torch.full((1, 3, 8), -10.0)
    for t, y in enumerate(labels[0].tolist()):
        logits[0, t, y] = 10.0
    plain = cross_entropy(logits, labels)
    smooth = cross_entropy(logits, labels, label_smoothing=0.1)
    assert plain < 1e-6
    assert smooth > plain + 1.0
    # The known formula: (1 - eps) * CE + eps * mean over classes of -log p.
    logp = logits.log_softmax(-1)[0]
    expected = (0.9 * -logp.gather(1, labels[0][:, None]).squeeze(1) + 0.1 * -logp.mean(-1)).mean()
    torch.testing.assert_close(smooth, expected, atol=1e-4, rtol=1e-5)


def test_ctc_matches_torch_per_utterance() -> None:
    gen = torch.Generator().manual_seed(1)
    batch, time, vocab = 3, 12, 9
    logits = torch.randn(batch, time, vocab, generator=gen)
    enc_lengths = torch.tensor([12, 9, 6])
    targets = [[4, 5, 5, 6], [7, 8], [4]]
    tokens = torch.zeros(batch, 4, dtype=torch.long)  # padded with pad id (= blank)
    for i, t in enumerate(targets):
        tokens[i, : len(t)] = torch.tensor(t)
    token_lengths = torch.tensor([len(t) for t in targets])
    loss = ctc_loss(logits, enc_lengths, tokens, token_lengths)
    per_utt = []
    for i, t in enumerate(targets):
        n = int(enc_lengths[i])
        lp = logits[i, :n].log_softmax(-1)[:, None, :]  # (T, 1, V)
        per_utt.append(
            F.ctc_loss(
                lp, torch.tensor([t]), torch.tensor([n]), torch.tensor([len(t)]), blank=PAD, reduction="sum"
            )
        )
    expected = torch.stack(per_utt).sum() / token_lengths.sum()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_ctc_ignores_frames_after_length() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 10, 7, generator=gen)
    tokens, tlen, elen = torch.tensor([[4, 5], [6, 0]]), torch.tensor([2, 1]), torch.tensor([10, 5])
    loss = ctc_loss(logits, elen, tokens, tlen)
    other = logits.clone()
    other[1, 5:] = torch.randn(5, 7) * 50
    assert torch.equal(ctc_loss(other, elen, tokens, tlen), loss)


def test_ctc_impossible_alignment_is_zeroed_not_inf() -> None:
    # A target longer than the encoder output cannot be aligned: zero_infinity keeps training alive.
    logits = torch.randn(1, 2, 7, requires_grad=True)
    loss = ctc_loss(logits, torch.tensor([2]), torch.tensor([[4, 5, 6, 4]]), torch.tensor([4]))
    assert math.isfinite(float(loss.detach()))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_ctc_prefers_the_right_alignment() -> None:
    # Logits that spell the target with blanks between repeats score better than random ones.
    vocab, target = 7, [4, 4, 5]
    path = [4, PAD, 4, 5, PAD, PAD]
    good = torch.full((1, len(path), vocab), -5.0)
    for t, y in enumerate(path):
        good[0, t, y] = 5.0
    args = (torch.tensor([len(path)]), torch.tensor([target]), torch.tensor([3]))
    assert ctc_loss(good, *args) < 0.1
    assert ctc_loss(torch.zeros_like(good), *args) > 1.0


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_gradients_are_zero_at_pad_positions(smoothing: float) -> None:
    logits = torch.randn(2, 4, 6, requires_grad=True)
    labels = torch.tensor([[4, 5, EOS, PAD], [4, EOS, PAD, PAD]])
    cross_entropy(logits, labels, smoothing).backward()
    assert torch.all(logits.grad[labels == PAD] == 0)
    assert torch.all(logits.grad[labels != PAD].abs().sum(-1) > 0)
