"""Prototype of a change suggested for ``asr_s2s/model.py``, so that the benchmarks can measure it.

On CPU, ``nn.LSTM`` runs oneDNN's fused LSTM kernels (forward and backward) only for padded input.
A ``PackedSequence`` whose lengths differ falls back to ATen's step-by-step implementation, which
records several small ops per time step, layer and direction for autograd: several times slower,
and much slower still when two OpenMP threads compete with other processes for two cores.

:class:`SegmentedEncoder` keeps the packed semantics exactly (each utterance's recurrence stops at
its own last frame, the final states are those of that frame, the backward direction starts there)
but calls the fused kernel on padded pieces. With the batch sorted longest first, the utterances
still running between two consecutive distinct lengths are a prefix of the batch, so each layer and
direction needs one call per distinct length, each continuing from the previous call's state. The
parameters are the ``nn.LSTM``'s own, so checkpoints and optimizers are unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from asr_s2s.config import ModelConfig
from asr_s2s.model import Encoder, EncoderOutput, Seq2Seq, reverse_padded

_GATE_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _prefix_lstm(
    x: torch.Tensor, steps: list[int], weights: list[torch.Tensor], train: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One LSTM layer and direction over ``x`` ``(batch, time, dim)`` sorted longest first.

    ``steps`` are the lengths (descending). Returns outputs ``(batch, time, hidden)`` (zero past each
    length) and the final ``h``, ``c`` ``(batch, hidden)`` at each sequence's last step.
    """
    batch, time, _ = x.shape
    hidden = weights[1].shape[1]
    xt = x.transpose(0, 1)
    h = x.new_zeros(1, batch, hidden)
    c = x.new_zeros(1, batch, hidden)
    pieces, last_h, last_c = [], [], []
    start = 0
    for end in sorted(set(steps)):
        running = sum(s >= end for s in steps)
        # torch._VF.lstm is what nn.LSTM.forward calls: (input, hx, weights, has_biases, layers,
        # dropout, train, bidirectional, batch_first).
        out, h, c = torch._VF.lstm(
            xt[start:end, :running],
            (h[:, :running], c[:, :running]),
            weights,
            True,
            1,
            0.0,
            train,
            False,
            False,
        )
        pieces.append(F.pad(out, (0, 0, 0, batch - running)))
        ending = sum(s > end for s in steps)  # sequences [ending, running) stop here
        last_h.append(h[0, ending:running])
        last_c.append(c[0, ending:running])
        start = end
    if start < time:
        pieces.append(x.new_zeros(time - start, batch, hidden))
    # The shortest sequences ended first and sit last in the batch: reverse to restore batch order.
    return torch.cat(pieces).transpose(0, 1), torch.cat(last_h[::-1]), torch.cat(last_c[::-1])


class SegmentedEncoder(Encoder):
    """:class:`Encoder` with the same results, run on CPU through the fused (oneDNN) LSTM kernels."""

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        if feats.device.type != "cpu":  # cuDNN handles packed sequences natively
            return super().forward(feats, lengths)
        x, lengths = self.stack(feats, lengths)
        if self.cfg.reverse_input:
            x = reverse_padded(x, lengths)
        order = torch.argsort(lengths, descending=True, stable=True)
        restore = torch.argsort(order)
        x, sorted_lengths = x[order], lengths[order]
        steps = sorted_lengths.tolist()
        lstm = self.lstm
        finals_h, finals_c = [], []
        for layer in range(lstm.num_layers):
            if layer > 0 and self.training and lstm.dropout > 0:
                x = F.dropout(x, lstm.dropout, training=True)  # nn.LSTM's dropout between layers
            outputs = []
            for direction in range(self.directions):
                suffix = "_reverse" if direction else ""
                weights = [getattr(lstm, f"{name}_l{layer}{suffix}") for name in _GATE_PARAMS]
                source = reverse_padded(x, sorted_lengths) if direction else x
                out, h, c = _prefix_lstm(source, steps, weights, self.training)
                outputs.append(reverse_padded(out, sorted_lengths) if direction else out)
                finals_h.append(h)
                finals_c.append(c)
            x = torch.cat(outputs, dim=-1)

        def merge(states: list[torch.Tensor]) -> torch.Tensor:
            # [(B, H)] * layers*dirs -> (layers, B, dirs*H), as Encoder.forward returns them.
            s = torch.stack(states)[:, restore]
            s = s.view(lstm.num_layers, self.directions, s.shape[1], s.shape[2])
            return torch.cat(list(s.unbind(1)), dim=-1)

        return EncoderOutput(x[restore], lengths, (merge(finals_h), merge(finals_c)))


@contextlib.contextmanager
def segmented(model: Seq2Seq) -> Iterator[Seq2Seq]:
    """Run ``model``'s encoder as :class:`SegmentedEncoder` inside the block.

    Swapping the class keeps the very parameter tensors, so an optimizer built on them still applies.
    """
    encoder = model.encoder
    original = encoder.__class__
    encoder.__class__ = SegmentedEncoder
    try:
        yield model
    finally:
        encoder.__class__ = original


def check_equivalence(cfg: ModelConfig, n_mels: int = 6, batch: int = 5, seed: int = 0) -> float:
    """Largest relative difference of outputs, final states and gradients between the package's
    packed :class:`Encoder` and :class:`SegmentedEncoder` on a small random batch, in training mode
    without dropout. Raises ``AssertionError`` above 1e-4: a prototype that computed something else
    would not be worth timing."""
    torch.manual_seed(seed)
    small = ModelConfig(
        stack_frames=cfg.stack_frames,
        encoder_hidden=8,
        encoder_layers=cfg.encoder_layers,
        bidirectional=cfg.bidirectional,
        encoder_dropout=0.0,
        reverse_input=cfg.reverse_input,
    )
    encoder = Encoder(small, n_mels).train()
    lengths = torch.tensor([23, 9, 23, 1, 17][:batch])
    feats = torch.randn(len(lengths), int(lengths.max()), n_mels)
    results = []
    for cls in (Encoder, SegmentedEncoder):
        encoder.__class__ = cls
        out = encoder(feats, lengths)
        mask = torch.arange(out.outputs.shape[1])[None, :] < out.lengths[:, None]
        loss = (out.outputs * mask[:, :, None]).pow(2).sum() + out.final[0].sum() + out.final[1].pow(2).sum()
        grads = torch.autograd.grad(loss, list(encoder.parameters()))
        results.append([t.detach() for t in (out.outputs * mask[:, :, None], *out.final, *grads)])
    encoder.__class__ = Encoder
    worst = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for a, b in zip(*results))
    assert worst < 1e-4, f"SegmentedEncoder differs from Encoder by {worst:.2e} (relative)"
    return worst
