"""Running an ``nn.LSTM``'s own weights fast on CPU.

Two functions that compute what an ``nn.LSTM`` computes, with the module's parameters (so
checkpoints, optimizers and DDP see no difference), through faster CPU kernels:

- :func:`segmented_lstm`: a padded batch with per-utterance lengths, with the semantics of a
  ``PackedSequence`` (each utterance's recurrence stops at its own last frame, the final states are
  taken there, the backward direction starts there). On CPU, ``nn.LSTM`` runs oneDNN's fused kernels
  (forward and backward) only for padded input; a ``PackedSequence`` with unequal lengths falls back
  to ATen's step-by-step loop, whose backward also builds, at every step, a zero-filled gradient the
  size of the whole packed input projection: its cost per step grows with the sequence length (about
  12x slower for a LibriSpeech-size 4x512 biLSTM encoder, see BENCHMARKS.md). Here the fused kernel
  runs once per layer and direction over the padded batch, with one extra input column that is 1 on
  padding frames and whose weights push the input gate to exactly 0 and the forget gate to exactly 1
  there: the state is held, exactly, at zero before a sequence starts and at its final value after it
  ends. So the forward direction's final ``c`` is the kernel's, its final ``h`` its output at the
  sequence's last frame, and the backward direction runs over the time-flipped batch (padding first)
  and ends every sequence at the last step. Batches with very unequal lengths are split into a few
  row groups, each padded to its own longest, when that saves enough padding frames.
- :class:`TapedSteps`: single time steps in a teacher-forced training loop (input feeding makes each
  step's input depend on the previous step's output). Per step each layer is one matrix product of
  ``[x; h]`` with ``[W_ih; W_hh]``, whose weight gradient is not computed step by step (a rank-batch
  update of the whole weight plus its accumulation, three passes over the weight per step) but once
  for all steps, in one large product, at the backward of the first step.
- :func:`lstm_step`: a single time step. A one-step ``nn.LSTM`` call is a oneDNN RNN primitive per
  call on CPU, costly for one step; ``torch.lstm_cell`` per layer (two matrix products and one fused
  pointwise kernel) gives the same result.

All three leave other devices to ``nn.LSTM`` itself (cuDNN handles packed sequences and single steps).
:func:`segmented_lstm` calls ``torch._VF.lstm``, which is what ``nn.LSTM.forward`` calls: a private
API, so ``tests/test_lstm.py`` checks the results and gradients against ``nn.LSTM`` on a
``PackedSequence``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LSTMState = tuple[torch.Tensor, torch.Tensor]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of ``(batch, time, dim)`` within its own length; padding stays put."""
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


# Added, on padding frames, to the input gate's pre-activations (negated) and the forget gate's:
# sigmoid gives exactly 0 and 1 in float32 far below this, whatever the weights add.
HOLD = 1e4
# Rows (longest first) are split into groups, each padded to its own longest, only where a split
# saves at least this fraction of the group's padded frames: the fused kernel costs more per frame
# on fewer rows (per call, and its matrix products are narrower).
SPLIT_SAVING = 0.3
HOLD_ALIGN = 16


def row_groups(steps: list[int]) -> list[tuple[int, int]]:
    """Contiguous row ranges ``[start, stop)`` of ``steps`` (descending lengths): the whole batch, or,
    recursively, its two parts at the split saving the most padded frames, when that saves at least
    ``SPLIT_SAVING`` of them."""
    first, frames = steps[0], len(steps) * steps[0]
    best, split = 0, 0
    for k in range(1, len(steps)):
        saved = (len(steps) - k) * (first - steps[k])
        if saved > best:
            best, split = saved, k
    if best < SPLIT_SAVING * frames:
        return [(0, len(steps))]
    tail = [(a + split, b + split) for a, b in row_groups(steps[split:])]
    return row_groups(steps[:split]) + tail


def _held_lstm(
    xt: torch.Tensor, held: torch.Tensor, weights: list[torch.Tensor], has_biases: bool, train: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fused call of one layer and direction from a zero state over ``xt`` ``(time, batch, dim)``,
    the state held where ``held`` ``(time, batch, 1)`` is 1 (see :data:`HOLD`). Returns the outputs
    ``(time, batch, hidden)`` and the last step's ``h``, ``c`` ``(1, batch, hidden)``."""
    hidden = weights[1].shape[1]
    # The hold column comes with zero columns up to a multiple of HOLD_ALIGN inputs: oneDNN's input
    # product is about 17 % slower at 1025 inputs than at 1024 or 1040 (2 threads).
    width = HOLD_ALIGN - xt.shape[2] % HOLD_ALIGN
    block = xt.new_zeros(4 * hidden, width)  # gate order i, f, g, o
    block[:hidden, 0] = -HOLD
    block[hidden : 2 * hidden, 0] = HOLD
    # The block is a constant: autograd gives weight_ih its own gradient through the cat.
    weights = [torch.cat([weights[0], block], 1), *weights[1:]]
    zero = xt.new_zeros(1, xt.shape[1], hidden)
    # torch._VF.lstm is what nn.LSTM.forward calls (private, hence tests/test_lstm.py): input,
    # (h0, c0), weights, has_biases, num_layers, dropout, train, bidirectional, batch_first.
    return torch._VF.lstm(
        torch.cat([xt, F.pad(held, (0, width - 1))], -1),
        (zero, zero),
        weights,
        has_biases,
        1,
        0.0,
        train,
        False,
        False,
    )


def _group_lstm(lstm: nn.LSTM, xt: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
    """All layers over ``xt`` ``(time, batch, dim)`` whose longest sequence fills ``time``. Returns the
    outputs ``(time, batch, dirs * hidden)``, zero past each length, and the final ``(h, c)``, each
    ``(layers * dirs, batch, hidden)``."""
    time, batch, _ = xt.shape
    real = (torch.arange(time, device=xt.device)[:, None] < lengths[None, :])[:, :, None]
    held = (~real).to(xt.dtype)
    rows = torch.arange(batch, device=xt.device)
    xt = xt * real  # the hold must dominate the input's pre-activations: padding frames are zeroed
    finals_h, finals_c = [], []
    for layer in range(lstm.num_layers):
        if layer > 0 and lstm.training and lstm.dropout > 0:
            xt = F.dropout(xt, lstm.dropout, training=True)  # nn.LSTM's dropout between layers
        out, _, c = _held_lstm(xt, held, layer_weights(lstm, layer), lstm.bias, lstm.training)
        # Forward: the state is held after each sequence's end, so c is final; h past the end is not
        # (the output gate still moves): it is read at the last frame, and the padding zeroed.
        finals_h.append(out[lengths - 1, rows])
        finals_c.append(c[0])
        outputs = [out * real]
        if lstm.bidirectional:
            # Backward: over the time-flipped batch the padding comes first, where the state is held
            # at zero, and every sequence ends at the last step, at its own first frame.
            out, h, c = _held_lstm(
                xt.flip(0), held.flip(0), layer_weights(lstm, layer, True), lstm.bias, lstm.training
            )
            outputs.append(out.flip(0))  # zero on padding: h = o * tanh(0) there
            finals_h.append(h[0])
            finals_c.append(c[0])
        xt = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]
    return xt, (torch.stack(finals_h), torch.stack(finals_c))


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
    xt = x.transpose(0, 1)  # (time, batch, dim): the kernel's layout
    pieces, finals_h, finals_c = [], [], []
    for start, stop in row_groups(steps):
        out, (h, c) = _group_lstm(lstm, xt[: steps[start], start:stop], sorted_lengths[start:stop])
        pieces.append(F.pad(out, (0, 0, 0, 0, 0, x.shape[1] - steps[start])))
        finals_h.append(h)
        finals_c.append(c)
    out = torch.cat(pieces, 1).transpose(0, 1)
    h_n = torch.cat(finals_h, 1)[:, restore]
    c_n = torch.cat(finals_c, 1)[:, restore]
    return out[restore], (h_n, c_n)


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


class _Tape:
    """The ``(grad_output, input)`` pairs of one weight's steps, collected during the backward pass."""

    def __init__(self) -> None:
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.steps = 0
        self.done = False  # the first step's backward has run: the weight has its gradient


class _TapedMatmul(torch.autograd.Function):
    """``x @ weight.T`` whose weight gradient is left to ``tape``: the backward of each step records
    its pair; that of the first step (the last to run: every later step depends on it) computes the
    weight's gradient over all steps in one product."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, tape: _Tape, first: bool) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape, ctx.first = tape, first
        return x @ weight.t()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        tape: _Tape = ctx.tape
        if tape.done:
            raise RuntimeError(
                "TapedSteps: a step reached the backward pass after the first one (each step's state must "
                "feed the next), or a second backward pass ran through the same steps"
            )
        tape.pairs.append((grad, x))
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.first:  # steps whose outputs the loss does not use never record: their gradient is 0
            grads, inputs = zip(*tape.pairs)
            grad_w = torch.cat(grads).t() @ torch.cat(inputs)
            tape.pairs.clear()
            tape.done = True
        return grad_x, grad_w, None, None


class TapedSteps:
    """Time steps of a unidirectional ``lstm`` under autograd (see the module docstring), as
    :func:`lstm_step` computes them: call it once per step, in order, each step from the previous
    step's state.

    Meant for CPU training loops (the decoder's teacher forcing); one instance per forward pass and
    one backward pass through it. In training mode ``lstm.dropout`` applies between layers.
    """

    def __init__(self, lstm: nn.LSTM) -> None:
        _check_plain(lstm)
        if lstm.bidirectional:
            raise ValueError("TapedSteps runs unidirectional LSTMs only")
        self.lstm = lstm
        weights = [layer_weights(lstm, layer) for layer in range(lstm.num_layers)]
        self.weights = [torch.cat([w[0], w[1]], 1) for w in weights]  # [W_ih, W_hh]: (4H, in + H)
        self.biases = [w[2] + w[3] for w in weights] if lstm.bias else None
        self.tapes = [_Tape() for _ in weights]

    def __call__(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """Input ``x`` ``(batch, input_size)``, ``state`` = ``(h, c)`` each ``(layers, batch, hidden)``
        -> the top layer's output ``(batch, hidden)`` and the new ``(h, c)``."""
        h, c = state
        lstm = self.lstm
        first = self.tapes[0].steps == 0
        hs, cs = [], []
        for layer, (weight, tape) in enumerate(zip(self.weights, self.tapes)):
            if layer > 0 and lstm.training and lstm.dropout > 0:
                x = F.dropout(x, lstm.dropout, training=True)  # nn.LSTM's dropout between layers
            tape.steps += 1
            gates = _TapedMatmul.apply(torch.cat([x, h[layer]], 1), weight, tape, first)
            if self.biases is not None:
                gates = gates + self.biases[layer]
            i, f, g, o = gates.chunk(4, 1)  # PyTorch's gate order
            c_l = torch.sigmoid(f) * c[layer] + torch.sigmoid(i) * torch.tanh(g)
            h_l = torch.sigmoid(o) * torch.tanh(c_l)
            hs.append(h_l)
            cs.append(c_l)
            x = h_l
        return x, (torch.stack(hs), torch.stack(cs))
