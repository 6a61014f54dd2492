"""Running an ``nn.LSTM``'s own weights fast on CPU.

Two functions that compute what an ``nn.LSTM`` computes, with the module's parameters (so
checkpoints, optimizers and DDP see no difference), through faster CPU kernels:

- :func:`segmented_lstm`: a padded batch with per-utterance lengths, with the semantics of a
  ``PackedSequence`` (each utterance's recurrence stops at its own last frame, the final states are
  taken there, the backward direction starts there). On CPU, ``nn.LSTM`` runs oneDNN's fused kernels
  (forward and backward) only for padded input; a ``PackedSequence`` with unequal lengths falls back
  to ATen's step-by-step loop, whose backward also builds, at every step, a zero-filled gradient the
  size of the whole packed input projection: its cost per step grows with the sequence length (about
  12x slower for a LibriSpeech-size 4x512 biLSTM encoder, see BENCHMARKS.md). Here the batch is sorted
  longest first, so that the utterances still running between two consecutive distinct lengths are a
  prefix of the batch, and the fused kernel runs once per distinct length, layer and direction on that
  prefix, continuing from the previous call's state.
- :func:`lstm_step`: a single time step. A one-step ``nn.LSTM`` call is a oneDNN RNN primitive per
  call on CPU, costly for one step; ``torch.lstm_cell`` per layer (two matrix products and one fused
  pointwise kernel) gives the same result.

Both leave other devices to ``nn.LSTM`` itself (cuDNN handles packed sequences and single steps).
:func:`segmented_lstm` calls ``torch._VF.lstm``, which is what ``nn.LSTM.forward`` calls: a private
API, so ``tests/test_lstm.py`` checks the results and gradients against ``nn.LSTM`` on a
``PackedSequence``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``(batch, time, dim)`` within its own length; padding stays put.

    (Here rather than in :mod:`asr_s2s.model`, which imports it from here: the backward direction of
    :func:`segmented_lstm` needs it.)"""
    time = torch.arange(x.shape[1], device=x.device)[None, :]
    index = (lengths[:, None] - 1 - time).clamp_min(0)
    index = torch.where(time < lengths[:, None], index, time)
    return x.gather(1, index[:, :, None].expand_as(x))


def _check_plain(lstm: nn.LSTM) -> None:
    if lstm.proj_size:
        raise ValueError("LSTMs with proj_size are not supported")


def layer_weights(lstm: nn.LSTM, layer: int, reverse: bool = False) -> list[torch.Tensor]:
    """``lstm``'s ``weight_ih``, ``weight_hh`` (and ``bias_ih``, ``bias_hh`` when it has biases) of one
    layer and direction, in the order ``torch._VF.lstm`` and ``torch.lstm_cell`` take them."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if lstm.bias else ("weight_ih", "weight_hh")
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    return [getattr(lstm, name + suffix) for name in names]


def _prefix_lstm(
    x: torch.Tensor, lengths: list[int], weights: list[torch.Tensor], has_biases: bool, train: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer and direction over ``x`` ``(batch, time, dim)`` sorted longest first.

    ``lengths`` (descending, each in ``1..time``). Returns the outputs ``(batch, time, hidden)`` (zero
    past each length) and the final ``h``, ``c`` ``(batch, hidden)`` at each sequence's last step.
    """
    batch, time, _ = x.shape
    hidden = weights[1].shape[1]
    xt = x.transpose(0, 1)  # (time, batch, dim)
    h = x.new_zeros(1, batch, hidden)
    c = x.new_zeros(1, batch, hidden)
    pieces, last_h, last_c = [], [], []
    start = 0
    for end in sorted(set(lengths)):
        running = sum(n >= end for n in lengths)  # sequences [0, running) cover steps [start, end)
        # torch._VF.lstm is what nn.LSTM.forward calls (private, hence tests/test_lstm.py): input,
        # (h0, c0), weights, has_biases, num_layers, dropout, train, bidirectional, batch_first.
        out, h, c = torch._VF.lstm(
            xt[start:end, :running],
            (h[:, :running], c[:, :running]),
            weights,
            has_biases,
            1,
            0.0,
            train,
            False,
            False,
        )
        pieces.append(F.pad(out, (0, 0, 0, batch - running)))
        ending = sum(n > end for n in lengths)  # sequences [ending, running) end at step `end`
        last_h.append(h[0, ending:running])
        last_c.append(c[0, ending:running])
        start = end
    if start < time:
        pieces.append(x.new_zeros(time - start, batch, hidden))
    # The shortest sequences ended first and sit last in the batch: reverse to restore batch order.
    return torch.cat(pieces).transpose(0, 1), torch.cat(last_h[::-1]), torch.cat(last_c[::-1])


def segmented_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
    """``lstm`` over a padded batch as if it were packed, through the fused kernel (meant for CPU).

    ``x`` is ``(batch, time, input_size)`` batch first whatever ``lstm.batch_first`` says, ``lengths``
    ``(batch,)`` in ``1..time``, in any order. Returns the outputs ``(batch, time, dirs * hidden)``,
    zero past each length, and the final ``(h, c)``, each ``(layers * dirs, batch, hidden)`` in
    ``nn.LSTM``'s layout (layer-major, forward direction first), taken at each sequence's own end:
    what ``nn.LSTM`` returns for the ``PackedSequence`` of ``x`` (after ``pad_packed_sequence`` with
    ``total_length=time``). The initial state is zero. In training mode ``lstm.dropout`` applies
    between layers, as in ``nn.LSTM``.
    """
    _check_plain(lstm)
    lengths = lengths.to(x.device)
    order = torch.argsort(lengths, descending=True, stable=True)
    restore = torch.argsort(order)
    x, sorted_lengths = x[order], lengths[order]
    steps = sorted_lengths.tolist()
    if not steps or steps[-1] < 1 or steps[0] > x.shape[1]:
        raise ValueError(f"lengths must lie in 1..{x.shape[1]} (the padded time), got {lengths.tolist()}")
    dirs = 2 if lstm.bidirectional else 1
    finals_h, finals_c = [], []
    for layer in range(lstm.num_layers):
        if layer > 0 and lstm.training and lstm.dropout > 0:
            x = F.dropout(x, lstm.dropout, training=True)  # nn.LSTM's dropout between layers
        outputs = []
        for reverse in (False, True)[:dirs]:
            weights = layer_weights(lstm, layer, reverse)
            # The backward direction is the forward recurrence over each sequence reversed within its
            # length: it starts at the sequence's own last frame.
            source = reverse_padded(x, sorted_lengths) if reverse else x
            out, h, c = _prefix_lstm(source, steps, weights, lstm.bias, lstm.training)
            outputs.append(reverse_padded(out, sorted_lengths) if reverse else out)
            finals_h.append(h)
            finals_c.append(c)
        x = torch.cat(outputs, dim=-1) if dirs > 1 else outputs[0]
    h_n = torch.stack(finals_h)[:, restore]
    c_n = torch.stack(finals_c)[:, restore]
    return x[restore], (h_n, c_n)


# Measured on 2 CPU cores, 2x256 decoder: per step, lstm_cell took 0.07-0.1x the one-step nn.LSTM
# time for 1-4 rows; near 5 rows (one file, beam 5) the two were even and for 64-320 rows (batched
# decoding) nn.LSTM was up to 1.2x faster. In training (autograd through every step, attention modes)
# lstm_cell took 0.6-0.8x the time for 4-32 rows.
CELL_MAX_BATCH = 4


def lstm_step(lstm: nn.LSTM, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
    """One time step of a unidirectional ``lstm``: input ``x`` ``(batch, input_size)``, ``state`` =
    ``(h, c)`` each ``(layers, batch, hidden)`` -> the top layer's output ``(batch, hidden)`` and the
    new ``(h, c)``, as a one-step ``lstm`` call would give.

    On CPU, ``torch.lstm_cell`` per layer (with ``nn.LSTM``'s dropout between layers in training
    mode) when gradients are recorded or the batch has at most ``CELL_MAX_BATCH`` rows; otherwise,
    and on other devices, the module itself.
    """
    _check_plain(lstm)
    if lstm.bidirectional:
        raise ValueError("lstm_step runs unidirectional LSTMs only")
    h, c = state
    if x.device.type != "cpu" or (x.shape[0] > CELL_MAX_BATCH and not torch.is_grad_enabled()):
        time_dim = 1 if lstm.batch_first else 0
        out, (h, c) = lstm(x.unsqueeze(time_dim), (h, c))
        return out.squeeze(time_dim), (h, c)
    hs, cs = [], []
    for layer in range(lstm.num_layers):
        if layer > 0 and lstm.training and lstm.dropout > 0:
            x = F.dropout(x, lstm.dropout, training=True)  # nn.LSTM's dropout between layers
        h_l, c_l = torch.lstm_cell(x, (h[layer], c[layer]), *layer_weights(lstm, layer))
        hs.append(h_l)
        cs.append(c_l)
        x = h_l
    return x, (torch.stack(hs), torch.stack(cs))
