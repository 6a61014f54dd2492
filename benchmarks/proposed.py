"""Prototypes of two changes suggested for ``asr_s2s/model.py``, so that the benchmarks can measure them.

:class:`SegmentedEncoder` (training). On CPU, ``nn.LSTM`` runs oneDNN's fused LSTM kernels (forward
and backward) only for padded input. A ``PackedSequence`` whose lengths differ falls back to ATen's
step-by-step implementation, whose backward also materializes, at every time step, a zero-filled
gradient the size of the whole packed input projection (``slice_backward``): the cost per step
grows with the sequence length, so a long-utterance batch is many times slower. The prototype keeps
the packed semantics exactly (each utterance's recurrence stops at its own last frame, the final
states are that frame's, the backward direction starts there) but calls the fused kernel on padded
pieces: with the batch sorted longest first, the utterances still running between two consecutive
distinct lengths are a prefix of the batch, so each layer and direction needs one call per distinct
length, each continuing from the previous call's state.

:class:`CellStepDecoder` (decoding). ``Decoder.step`` runs a one-step ``nn.LSTM``, which on CPU is a
oneDNN RNN primitive per call: costly for a single step. ``torch.lstm_cell`` per layer (two matrix
products and one fused pointwise kernel) gives the same result for less.

Both use the modules' own parameters, so checkpoints and optimizers are unaffected; both leave
non-CPU devices (cuDNN) to the package's code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from asr_s2s.config import ModelConfig
from asr_s2s.model import Decoder, DecoderState, Encoder, EncoderOutput, Seq2Seq, reverse_padded

_GATE_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _weights(lstm: torch.nn.LSTM, layer: int, suffix: str = "") -> list[torch.Tensor]:
    return [getattr(lstm, f"{name}_l{layer}{suffix}") for name in _GATE_PARAMS]


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
        if feats.device.type != "cpu":
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
                weights = _weights(lstm, layer, "_reverse" if direction else "")
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


class CellStepDecoder(Decoder):
    """:class:`Decoder` whose single steps run ``torch.lstm_cell`` per layer on CPU."""

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        if tokens.device.type != "cpu" or self.attention is not None:
            return super().step(tokens, state)
        lstm = self.lstm
        x = self.dropout(self.embedding(tokens))
        hs, cs = [], []
        for layer in range(lstm.num_layers):
            if layer > 0:
                x = F.dropout(x, lstm.dropout, self.training)  # nn.LSTM's dropout between layers
            h, c = torch.lstm_cell(x, (state.h[layer], state.c[layer]), *_weights(lstm, layer))
            hs.append(h)
            cs.append(c)
            x = h
        return self.output(self.dropout(x)), replace(state, h=torch.stack(hs), c=torch.stack(cs))


@contextlib.contextmanager
def prototypes(model: Seq2Seq, encoder: bool = True, decoder: bool = True) -> Iterator[Seq2Seq]:
    """Run ``model`` with the prototypes inside the block (the encoder's, the decoder's or both).

    Swapping the classes keeps the very parameter tensors, so an optimizer built on them still applies.
    """
    swaps = []
    if encoder:
        swaps.append((model.encoder, SegmentedEncoder))
    if decoder:
        swaps.append((model.decoder, CellStepDecoder))
    originals = [module.__class__ for module, _ in swaps]
    try:
        for module, cls in swaps:
            module.__class__ = cls
        yield model
    finally:
        for (module, _), original in zip(swaps, originals):
            module.__class__ = original


def check_equivalence(cfg: ModelConfig, n_mels: int = 6, vocab_size: int = 7, seed: int = 0) -> float:
    """Largest relative difference between the package's modules and the prototypes on small random
    inputs: encoder outputs, final states and gradients (training mode, no dropout) and decoder step
    logits and states (eval mode). Raises ``AssertionError`` above 1e-4: a prototype that computed
    something else would not be worth timing."""
    torch.manual_seed(seed)
    small = replace(cfg, encoder_hidden=8, decoder_hidden=12, embedding_dim=5, encoder_dropout=0.0)
    model = Seq2Seq(small, n_mels, vocab_size).train()
    lengths = torch.tensor([23, 9, 23, 1, 17])
    feats = torch.randn(len(lengths), int(lengths.max()), n_mels)
    tokens = torch.randint(0, vocab_size, (len(lengths),))
    results = []
    for use in (False, True):
        with prototypes(model, encoder=use, decoder=use):
            model.train()
            enc = model.encoder(feats, lengths)
            mask = (torch.arange(enc.outputs.shape[1])[None, :] < enc.lengths[:, None])[:, :, None]
            loss = (enc.outputs * mask).pow(2).sum() + enc.final[0].sum() + enc.final[1].pow(2).sum()
            grads = torch.autograd.grad(loss, list(model.encoder.parameters()))
            model.eval()
            state = model.initial_state(enc)
            logits, state = model.decoder.step(tokens, state)
            logits2, state = model.decoder.step(logits.argmax(-1), state)
            outputs = (enc.outputs * mask, *enc.final, *grads, logits, logits2, state.h, state.c)
            results.append([t.detach() for t in outputs])
    worst = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6)) for a, b in zip(*results))
    assert worst < 1e-4, f"the prototypes differ from the package's modules by {worst:.2e} (relative)"
    return worst
