"""Tests for asr_s2s.lstm: the fused-kernel runners give what nn.LSTM gives (outputs, final states,
gradients). They guard the use of the private ``torch._VF.lstm``."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr_s2s.lstm import (
    CELL_MAX_BATCH,
    SPLIT_SAVING,
    TapedSteps,
    lstm_step,
    row_groups,
    segmented_lstm,
)

ATOL = 1e-5
INPUT, HIDDEN = 3, 5
# Unsorted, with ties, a length-1 sequence, and padding past the longest (time 8).
LENGTHS = {"ties": [5, 2, 7, 2, 7, 1], "equal": [4, 4, 4], "single": [6]}


def _lstm(layers: int, bidirectional: bool, dropout: float = 0.0, seed: int = 0) -> nn.LSTM:
    torch.manual_seed(seed)
    return nn.LSTM(
        INPUT, HIDDEN, num_layers=layers, batch_first=True, bidirectional=bidirectional, dropout=dropout
    )


def _inputs(lengths: list[int], time: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), time, INPUT, generator=gen)
    return x.requires_grad_(), torch.tensor(lengths)


def _packed(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """The reference: nn.LSTM on the PackedSequence, padded back to ``x``'s time."""
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, state = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


def _results_and_grads(fn, lstm: nn.LSTM, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs, h, c, and the gradients of a random weighting of all three w.r.t. the parameters
    and the input."""
    out, (h, c) = fn()
    gen = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in (out, h, c))
    grads = torch.autograd.grad(loss, [*lstm.parameters(), x])
    return [out, h, c, *grads]


@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_segmented_equals_packed(lengths: list[int], layers: int, bidirectional: bool, train: bool) -> None:
    lstm = _lstm(layers, bidirectional).train(train)
    x, lens = _inputs(lengths)
    ours = _results_and_grads(lambda: segmented_lstm(lstm, x, lens), lstm, x)
    reference = _results_and_grads(lambda: _packed(lstm, x, lens), lstm, x)
    dirs = 2 if bidirectional else 1
    assert ours[0].shape == (len(lengths), 8, dirs * HIDDEN)
    assert ours[1].shape == ours[2].shape == (layers * dirs, len(lengths), HIDDEN)
    names = ["outputs", "h", "c", *(n for n, _ in lstm.named_parameters()), "input"]
    for name, a, b in zip(names, ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    # Zeros past each length, and the final states are where each sequence ends.
    for i, n in enumerate(lengths):
        assert torch.equal(ours[0][i, n:], torch.zeros_like(ours[0][i, n:]))
        torch.testing.assert_close(ours[1][-dirs, i], ours[0][i, n - 1, :HIDDEN])
        if bidirectional:
            torch.testing.assert_close(ours[1][-1, i], ours[0][i, 0, HIDDEN:])


def test_segmented_applies_dropout_between_layers_only() -> None:
    # Dropout 1 zeroes whatever it applies to, so nn.LSTM's placement (between layers, not after the
    # last) is deterministic to compare: layers 2 and 3 see zeros, the outputs are not zeroed.
    lstm = _lstm(3, bidirectional=True, dropout=1.0).train()
    x, lens = _inputs(LENGTHS["ties"])
    out, (h, c) = segmented_lstm(lstm, x, lens)
    ref_out, (ref_h, ref_c) = _packed(lstm, x, lens)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(h, ref_h, atol=ATOL, rtol=0)
    torch.testing.assert_close(c, ref_c, atol=ATOL, rtol=0)
    assert out.abs().amax() > 0
    # The top layer saw zeros from a zero state: its outputs do not depend on the input, unless in eval.
    other = x.detach() + 1.0
    torch.testing.assert_close(segmented_lstm(lstm, other, lens)[0], out)
    lstm.eval()
    assert not torch.allclose(segmented_lstm(lstm, other, lens)[0], segmented_lstm(lstm, x, lens)[0])


def test_segmented_rejects_bad_lengths() -> None:
    lstm = _lstm(1, bidirectional=False)
    x, _ = _inputs([3, 3])
    for bad in ([3, 0], [9, 3]):
        with pytest.raises(ValueError, match="lengths"):
            segmented_lstm(lstm, x, torch.tensor(bad))


def _one_step(lstm: nn.LSTM, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
    out, new = lstm(x[:, None], state)
    return out[:, 0], new


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_lstm_step_equals_one_step_lstm(layers: int, train: bool) -> None:
    lstm = _lstm(layers, bidirectional=False).train(train)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, INPUT, generator=gen).requires_grad_()
    state = (torch.randn(layers, 4, HIDDEN, generator=gen), torch.randn(layers, 4, HIDDEN, generator=gen))
    ours = _results_and_grads(lambda: lstm_step(lstm, x, state), lstm, x)
    reference = _results_and_grads(lambda: _one_step(lstm, x, state), lstm, x)
    assert ours[0].shape == (4, HIDDEN) and ours[1].shape == (layers, 4, HIDDEN)
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # Two steps in a row equal a two-step call.
    x2 = torch.randn(4, INPUT, generator=gen)
    out1, mid = lstm_step(lstm, x.detach(), state)
    out2, (h, c) = lstm_step(lstm, x2, mid)
    ref, (ref_h, ref_c) = lstm(torch.stack([x.detach(), x2], 1), state)
    torch.testing.assert_close(torch.stack([out1, out2], 1), ref, atol=ATOL, rtol=0)
    torch.testing.assert_close((h, c), (ref_h, ref_c), atol=ATOL, rtol=0)


@pytest.mark.parametrize(("rows", "grad", "cell"), [(4, False, True), (5, False, False), (5, True, True)])
def test_lstm_step_kernel_choice(monkeypatch: pytest.MonkeyPatch, rows: int, grad: bool, cell: bool) -> None:
    """Small batches and training take ``lstm_cell``, large batches at inference the module; both agree."""
    assert CELL_MAX_BATCH == 4
    lstm = _lstm(2, bidirectional=False).eval()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(rows, INPUT, generator=gen)
    state = (torch.randn(2, rows, HIDDEN, generator=gen), torch.randn(2, rows, HIDDEN, generator=gen))
    calls = []
    real_cell = torch.lstm_cell
    monkeypatch.setattr(torch, "lstm_cell", lambda *a: calls.append(1) or real_cell(*a))
    with torch.set_grad_enabled(grad):
        out, (h, c) = lstm_step(lstm, x, state)
        ref, (ref_h, ref_c) = _one_step(lstm, x, state)
    assert bool(calls) == cell
    torch.testing.assert_close((out, h, c), (ref, ref_h, ref_c), atol=ATOL, rtol=0)


def test_lstm_step_applies_dropout_between_layers_only() -> None:
    lstm = _lstm(3, bidirectional=False, dropout=1.0).train()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, INPUT, generator=gen)
    state = (torch.randn(3, 2, HIDDEN, generator=gen), torch.randn(3, 2, HIDDEN, generator=gen))
    out, (h, c) = lstm_step(lstm, x, state)
    ref, (ref_h, ref_c) = _one_step(lstm, x, state)
    torch.testing.assert_close((out, h, c), (ref, ref_h, ref_c), atol=ATOL, rtol=0)
    assert out.abs().amax() > 0


def test_lstm_step_rejects_bidirectional() -> None:
    lstm = _lstm(1, bidirectional=True)
    state = (torch.zeros(2, 1, HIDDEN), torch.zeros(2, 1, HIDDEN))
    with pytest.raises(ValueError, match="unidirectional"):
        lstm_step(lstm, torch.zeros(1, INPUT), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lstm_step_on_cuda_uses_the_module() -> None:
    lstm = _lstm(2, bidirectional=False).eval()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, INPUT, generator=gen)
    state = (torch.randn(2, 3, HIDDEN, generator=gen), torch.randn(2, 3, HIDDEN, generator=gen))
    cpu_out, cpu_state = lstm_step(lstm, x, state)
    lstm.cuda()
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out, (h, c) = lstm_step(lstm, x.cuda(), tuple(s.cuda() for s in state))
    torch.testing.assert_close((out.cpu(), h.cpu(), c.cpu()), (cpu_out, *cpu_state), atol=1e-4, rtol=0)


def _brute_groups(steps: list[int]) -> list[tuple[int, int]]:
    """row_groups's rule, written directly: the best single split by padded frames, if it saves enough."""
    frames = len(steps) * steps[0]
    splits = [(k * steps[0] + (len(steps) - k) * steps[k], k) for k in range(1, len(steps))]
    if not splits or frames - min(splits)[0] < SPLIT_SAVING * frames:
        return [(0, len(steps))]
    k = min(splits)[1]
    return _brute_groups(steps[:k]) + [(a + k, b + k) for a, b in _brute_groups(steps[k:])]


@pytest.mark.parametrize(
    "steps", [[7], [7, 7, 5, 2, 2, 1], [9, 9, 9, 9], [100, 99, 98, 97], [100, 90, 40, 39, 10, 9, 8, 1]]
)
def test_row_groups_partition_and_save(steps: list[int]) -> None:
    groups = row_groups(steps)
    assert groups == _brute_groups(steps)
    assert groups[0][0] == 0 and groups[-1][1] == len(steps)
    assert all(a < b == c for (a, b), (c, _) in zip(groups, groups[1:]))
    # Bucketed batches (lengths within a few percent) stay one fused call per layer and direction.
    if steps[-1] >= 0.9 * steps[0]:
        assert groups == [(0, len(steps))]


def test_segmented_splits_unequal_batches() -> None:
    # [7, 7, 5, 2, 2, 1] sorted: splitting after the 5 saves 15 of 42 padded frames, so "ties" (in
    # test_segmented_equals_packed) runs in two row groups; this pins that the split path is tested.
    assert len(row_groups(sorted(LENGTHS["ties"], reverse=True))) == 2


def test_segmented_ignores_padding_values() -> None:
    # The hold on padding frames must dominate whatever the padding holds: huge values there change
    # nothing, outputs or final states.
    lstm = _lstm(2, bidirectional=True).eval()
    x, lens = _inputs(LENGTHS["ties"])
    x = x.detach()
    noisy = x.clone()
    for i, n in enumerate(LENGTHS["ties"]):
        noisy[i, n:] = 1e6
    out, (h, c) = segmented_lstm(lstm, x, lens)
    out2, (h2, c2) = segmented_lstm(lstm, noisy, lens)
    assert torch.equal(out, out2) and torch.equal(h, h2) and torch.equal(c, c2)


@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_taped_steps_equal_lstm_step(layers: int, bias: bool) -> None:
    # Values and gradients (weights, inputs, initial state) over a chain of steps, each step's input
    # also depending on the previous output (as input feeding does), against lstm_step's cells.
    torch.manual_seed(0)
    lstm = nn.LSTM(INPUT + HIDDEN, HIDDEN, num_layers=layers, bias=bias)
    gen = torch.Generator().manual_seed(3)
    xs = torch.randn(6, 4, INPUT, generator=gen, requires_grad=True)
    h0 = torch.randn(layers, 4, HIDDEN, generator=gen, requires_grad=True)
    c0 = torch.randn(layers, 4, HIDDEN, generator=gen, requires_grad=True)
    weights = torch.randn(6, 4, HIDDEN, generator=gen)

    def run(step) -> list[torch.Tensor]:
        state, out, loss = (h0, c0), h0[-1], 0.0
        for t in range(xs.shape[0]):
            out, state = step(torch.cat([xs[t], torch.tanh(out)], 1), state)
            loss = loss + (weights[t] * out).sum()
        loss = loss + state[1].sum()
        return [out, *state, *torch.autograd.grad(loss, [*lstm.parameters(), xs, h0, c0])]

    taped = TapedSteps(lstm)
    ours = run(taped)
    reference = run(lambda x, s: lstm_step(lstm, x, s))
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_taped_steps_skip_unused_steps_and_catch_misuse() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(INPUT, HIDDEN, num_layers=2)
    x = torch.randn(3, INPUT)
    zero = torch.zeros(2, 3, HIDDEN)
    # The last step's output is unused: its gradient is zero and it is simply never recorded.
    taped = TapedSteps(lstm)
    out, state = taped(x, (zero, zero))
    taped(x, state)
    ours = torch.autograd.grad(out.sum(), list(lstm.parameters()))
    reference = torch.autograd.grad(lstm_step(lstm, x, (zero, zero))[0].sum(), list(lstm.parameters()))
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    # A second step not fed by the first: its backward may come after the first step's, whose
    # gradient is already final; that must fail loudly, not drop the step's gradient.
    taped = TapedSteps(lstm)
    first, _ = taped(x, (zero, zero))
    second, _ = taped(x, (zero, zero))
    with pytest.raises(RuntimeError, match="TapedSteps"):
        first.sum().backward(retain_graph=True)
        second.sum().backward()
    with pytest.raises(ValueError, match="unidirectional"):
        TapedSteps(nn.LSTM(INPUT, HIDDEN, bidirectional=True))
