"""Encoder, Bridge, Decoder and the Seq2Seq model that joins them.

The decoder's initial state is the encoder's final ``(h, c)`` of every layer, passed through the
:class:`Bridge`. With ``model.attention == "none"`` that is all the decoder sees of the audio; with
``additive``, ``location`` or ``dot`` it also attends over the encoder outputs at every step (see
:mod:`asr_s2s.attention`). This module holds no data loading or search code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr_s2s.attention import AdditiveAttention, DotAttention
from asr_s2s.config import ModelConfig
from asr_s2s.lstm import LSTMState, TapedSteps, lstm_step, reverse_padded, segmented_lstm

# Floor of a per-utterance std (model.normalization=utterance), as for the global statistics: a bin
# that stays at the log floor through an utterance comes out as zeros, not as amplified rounding.
UTTERANCE_MIN_STD = 1e-3


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """``(batch,)`` lengths -> ``(batch, max_len)`` bool mask, True on real positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def init_forget_bias(lstm: nn.LSTM, value: float) -> None:
    """Set every layer's forget-gate bias to ``value`` (PyTorch's gate order is i, f, g, o).

    A positive bias makes the cells keep their contents by default, which speeds up learning to
    carry information over many steps (Jozefowicz et al., 2015): here, the whole utterance.
    """
    hidden = lstm.hidden_size
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            if name.startswith("bias_ih"):
                param[hidden : 2 * hidden].fill_(value)
            elif name.startswith("bias_hh"):
                param[hidden : 2 * hidden].zero_()


@dataclass
class EncoderOutput:
    """``outputs`` ``(batch, time', dim)``, ``lengths`` ``(batch,)``, ``final`` = (h, c), each
    ``(layers, batch, dim)`` with both directions concatenated along ``dim``."""

    outputs: torch.Tensor
    lengths: torch.Tensor
    final: LSTMState


def concat_frames(x: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Join ``k`` consecutive frames, keep every ``k``-th: ``(B, T, F) -> (B, ceil(T/k), k*F)``, lengths
    ``(B,)`` -> ``ceil(lengths / k)``. The last group of a sequence is completed with what follows it
    (zeros past the padded end)."""
    if k == 1:
        return x, lengths
    batch, time, dim = x.shape
    pad = (-time) % k
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.reshape(batch, (time + pad) // k, k * dim), (lengths + k - 1) // k


class Encoder(nn.Module):
    """Frame stacking with subsampling, then a stack of (bi)LSTM layers with packed-sequence semantics
    (each utterance's recurrence and final states end at its own length).

    With ``model.pyramid`` (one factor per layer but the last) the output of layer ``i`` is
    subsampled by concatenating ``pyramid[i]`` consecutive frames before layer ``i + 1``, as in LAS's
    pyramidal BLSTM (Chan et al., 2016): the lower layers see a finer time resolution and the upper
    ones run on fewer steps. The layers between two reductions run as one ``nn.LSTM``; the first of
    those is ``self.lstm``, so a model without a pyramid has the parameter names it always had.
    """

    def __init__(self, cfg: ModelConfig, n_mels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.directions = 2 if cfg.bidirectional else 1
        self.output_dim = cfg.encoder_hidden * self.directions
        factors = list(cfg.pyramid) or [1] * (cfg.encoder_layers - 1)
        cuts = [i + 1 for i, k in enumerate(factors) if k > 1]
        bounds = [0, *cuts, cfg.encoder_layers]
        # pools[j]: the frames joined before block j + 1 (after block j's last layer).
        self.pools = [factors[cut - 1] for cut in cuts]
        blocks = []
        for j, (start, stop) in enumerate(zip(bounds, bounds[1:])):
            size = n_mels * cfg.stack_frames if j == 0 else self.output_dim * self.pools[j - 1]
            lstm = nn.LSTM(
                size,
                cfg.encoder_hidden,
                num_layers=stop - start,
                batch_first=True,
                dropout=cfg.encoder_dropout if stop - start > 1 else 0.0,
                bidirectional=cfg.bidirectional,
            )
            if cfg.forget_bias:
                init_forget_bias(lstm, cfg.forget_bias)
            blocks.append(lstm)
        self.lstm = blocks[0]
        self.upper = nn.ModuleList(blocks[1:])

    @property
    def subsampling(self) -> int:
        """Input frames per output frame: ``stack_frames`` times the pyramid's factors."""
        return self.cfg.stack_frames * math.prod(self.pools)

    def stack(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Join ``k`` consecutive frames, keep every ``k``-th: ``(B, T, F) -> (B, ceil(T/k), k*F)``."""
        return concat_frames(feats, lengths, self.cfg.stack_frames)

    @staticmethod
    def _run(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, LSTMState]:
        if x.device.type == "cpu":
            # nn.LSTM on a PackedSequence takes a slow step-by-step path on CPU; this runs the same
            # weights through the fused kernel with the same results (see asr_s2s.lstm).
            return segmented_lstm(lstm, x, lengths)
        # cuDNN runs packed sequences itself
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, state

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        x, lengths = self.stack(feats, lengths)
        if self.cfg.reverse_input:
            x = reverse_padded(x, lengths)
        x, (h, c) = self._run(self.lstm, x, lengths)
        hs, cs = [h], [c]
        for k, lstm in zip(self.pools, self.upper):
            # nn.LSTM's dropout between layers, here between blocks (elementwise: before or after the
            # concatenation is the same).
            x = nn.functional.dropout(x, self.cfg.encoder_dropout, self.training)
            x, lengths = concat_frames(x, lengths, k)
            x, (h, c) = self._run(lstm, x, lengths)
            hs.append(h)
            cs.append(c)
        layers, dirs = self.cfg.encoder_layers, self.directions

        def merge(s: torch.Tensor) -> torch.Tensor:
            # (layers*dirs, B, H) -> (layers, B, dirs*H): forward and backward side by side.
            s = s.view(layers, dirs, s.shape[1], s.shape[2])
            return torch.cat(list(s.unbind(1)), dim=-1)

        return EncoderOutput(x, lengths, (merge(torch.cat(hs)), merge(torch.cat(cs))))


class Bridge(nn.Module):
    """Encoder final states -> decoder initial states, one per decoder layer.

    Decoder layer ``l`` takes encoder layer ``N - M + l`` (the top layers; clamped at the bottom when
    the decoder is deeper). When ``encoder_dim`` (both directions concatenated, for a bidirectional
    encoder) differs from ``decoder_dim``, ``h`` and ``c`` each go through linear + tanh; when the
    sizes are equal they pass through unchanged, whatever the directions (a bidirectional encoder's
    forward and backward states then fill the two halves of the decoder's).
    """

    def __init__(self, encoder_layers: int, encoder_dim: int, decoder_layers: int, decoder_dim: int) -> None:
        super().__init__()
        self.source = [max(0, encoder_layers - decoder_layers + i) for i in range(decoder_layers)]
        self.project = encoder_dim != decoder_dim
        if self.project:
            self.h_proj = nn.ModuleList(nn.Linear(encoder_dim, decoder_dim) for _ in range(decoder_layers))
            self.c_proj = nn.ModuleList(nn.Linear(encoder_dim, decoder_dim) for _ in range(decoder_layers))

    def forward(self, final: LSTMState) -> LSTMState:
        h, c = final
        hs = [h[s] for s in self.source]
        cs = [c[s] for s in self.source]
        if self.project:
            hs = [torch.tanh(p(x)) for p, x in zip(self.h_proj, hs)]
            cs = [torch.tanh(p(x)) for p, x in zip(self.c_proj, cs)]
        return torch.stack(hs).contiguous(), torch.stack(cs).contiguous()


@dataclass
class DecoderState:
    """Recurrent state of the decoder: ``h``, ``c`` each ``(layers, batch, hidden)``.

    Attention modes add the encoder side (None otherwise): ``memory`` ``(batch, time, memory_dim)``
    the encoder outputs, ``keys`` ``(batch, time, attention_dim)`` their attention projection,
    ``memory_mask`` ``(batch, time)`` True on real frames, ``context`` ``(batch, memory_dim)`` the
    previous step's context vector and ``weights`` ``(batch, time)`` its attention weights.
    ``summary`` ``(batch, hidden)`` is the bridge's summary fed at every step (``summary_input``).
    After :meth:`expand` the encoder side keeps one row per utterance (``groups``) while the rest
    holds ``k`` hypotheses per utterance.
    """

    h: torch.Tensor
    c: torch.Tensor
    summary: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    context: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> DecoderState:
        """Reorder or repeat along the batch; ``index`` is ``(new_batch,)``."""
        return self._select(index, ("summary", "memory", "keys", "memory_mask", "context", "weights"))

    def expand(self, k: int) -> DecoderState:
        """``k`` hypotheses per utterance, for beam search: rows ``b*k .. b*k+k-1`` are copies of
        utterance ``b``'s recurrent state, and all of them read its encoder side (``memory``, ``keys``,
        ``memory_mask``), which stays one uncopied row per utterance."""
        index = torch.arange(self.h.shape[1], device=self.h.device).repeat_interleave(k)
        return self.reorder(index)

    def reorder(self, index: torch.Tensor) -> DecoderState:
        """Keep hypotheses ``index`` ``(new_batch,)`` of an :meth:`expand`-ed state, leaving the shared
        encoder side alone: each must stay among its utterance's rows (same ``row // k``)."""
        return self._select(index, ("summary", "context", "weights"))

    def _select(self, index: torch.Tensor, batch_first: tuple[str, ...]) -> DecoderState:
        picked = {
            name: value.index_select(0, index)
            for name in batch_first
            if (value := getattr(self, name)) is not None
        }
        return replace(self, h=self.h.index_select(1, index), c=self.c.index_select(1, index), **picked)


class Decoder(nn.Module):
    """Character embedding, M-layer LSTM and output projection, with optional attention.

    With attention, the top layer's output ``s_t`` queries the encoder outputs for the context ``c_t``
    and the output layer reads ``[s_t; c_t]``. ``additive`` and ``location`` are LAS: the LSTM input
    also holds the previous step's context (input feeding), so teacher forcing loops over the steps.
    ``dot`` (Luong et al., 2015, without input feeding) keeps the LSTM's input the embedding alone,
    so, as with ``none``, the LSTM runs over all steps in one call, and so does the attention.
    With ``none`` there are no attention parameters.
    With ``summary_input`` the LSTM input also holds the bridge's summary at every step.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, memory_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        context_dim = memory_dim if cfg.attention != "none" else 0
        self.input_feeding = cfg.attention in ("additive", "location")
        summary_dim = cfg.decoder_hidden if cfg.summary_input else 0
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim)
        self.lstm = nn.LSTM(
            cfg.embedding_dim + summary_dim + (context_dim if self.input_feeding else 0),
            cfg.decoder_hidden,
            num_layers=cfg.decoder_layers,
            batch_first=True,
            dropout=cfg.decoder_dropout if cfg.decoder_layers > 1 else 0.0,
        )
        if cfg.forget_bias:
            init_forget_bias(self.lstm, cfg.forget_bias)
        self.dropout = nn.Dropout(cfg.decoder_dropout)
        self.output = nn.Linear(cfg.decoder_hidden + context_dim, vocab_size)
        self.attention: AdditiveAttention | DotAttention | None = None
        if self.input_feeding:
            self.attention = AdditiveAttention(
                cfg.decoder_hidden, memory_dim, cfg.attention_dim, cfg.attention == "location"
            )
        elif cfg.attention == "dot":
            self.attention = DotAttention(cfg.decoder_hidden, memory_dim, cfg.attention_dim)

    def attach_memory(self, state: DecoderState, memory: torch.Tensor, lengths: torch.Tensor) -> DecoderState:
        """Add the encoder outputs ``(batch, time, memory_dim)`` and their ``(batch,)`` lengths to
        ``state``: zero context and uniform weights over the real frames (the location term's first
        "previous" alignment, as in ESPnet)."""
        assert self.attention is not None, "attach_memory is for attention modes"
        mask = lengths_to_mask(lengths, memory.shape[1])
        return replace(
            state,
            memory=memory,
            keys=self.attention.keys(memory),
            memory_mask=mask,
            context=memory.new_zeros(memory.shape[0], memory.shape[2]),
            weights=mask.float() / lengths[:, None].float(),
        )

    def _inputs(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """The LSTM inputs before any context: ids ``(batch, steps)`` -> ``(batch, steps, embedding_dim)``,
        plus the bridge's summary ``(batch, hidden)`` on every step with ``summary_input``."""
        x = self.dropout(self.embedding(tokens))
        if self.cfg.summary_input:
            if state.summary is None:
                raise ValueError("summary_input needs the bridge's summary: use Seq2Seq.initial_state")
            x = torch.cat([x, state.summary[:, None, :].expand(-1, x.shape[1], -1)], dim=-1)
        return x

    def forward(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Teacher forcing: ``(batch, steps)`` ids -> logits ``(batch, steps, vocab)``.

        Without input feeding (``none``, ``dot``), one LSTM call over all steps; with it, a loop over
        the steps, since each step's input (and the location term) needs the previous step's attention.
        """
        x = self._inputs(tokens, state)
        if not self.input_feeding:
            out, (h, c) = self.lstm(x, (state.h, state.c))
            return self._read_out(out, replace(state, h=h, c=c))
        # On CPU under autograd, the LSTM's weight gradients are computed once for all the steps
        # (asr_s2s.lstm.TapedSteps) rather than step by step.
        taped = TapedSteps(self.lstm) if torch.is_grad_enabled() and x.device.type == "cpu" else None
        logits = []
        for t in range(x.shape[1]):
            step_logits, state = self._attend_step(x[:, t], state, taped)
            logits.append(step_logits)
        return torch.stack(logits, 1), state

    @staticmethod
    def _memory(state: DecoderState) -> torch.Tensor:
        """The encoder outputs an attention decoder reads, or a clear error when they are missing."""
        if state.memory is None:
            raise ValueError("an attention decoder needs the encoder outputs: use Seq2Seq.initial_state")
        return state.memory

    def _attend_output(
        self, out: torch.Tensor, weights: torch.Tensor, memory: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-layer outputs ``(batch, steps, hidden)`` and their weights ``(batch, steps, time)`` ->
        logits ``(batch, steps, vocab)`` read from ``[s_t; c_t]``, and the contexts
        ``(batch, steps, memory_dim)``. ``memory`` is ``(groups, time, memory_dim)``, consecutive rows
        sharing one group (see :meth:`DecoderState.expand`)."""
        batch, steps, time = weights.shape
        grouped = weights.to(memory.dtype).reshape(memory.shape[0], -1, time)
        context = torch.bmm(grouped, memory).view(batch, steps, -1)
        return self.output(self.dropout(torch.cat([out, context], dim=-1))), context

    def _attend_step(
        self, x: torch.Tensor, state: DecoderState, taped: TapedSteps | None = None
    ) -> tuple[torch.Tensor, DecoderState]:
        """One input-feeding attention step: inputs ``(batch, input_dim)`` from :meth:`_inputs` ->
        logits ``(batch, vocab)`` and the next state; the LSTM step through ``taped`` when given."""
        memory = self._memory(state)
        inputs = torch.cat([x, state.context], dim=-1)
        if taped is not None:
            query, (h, c) = taped(inputs, (state.h, state.c))
        else:
            query, (h, c) = lstm_step(self.lstm, inputs, (state.h, state.c))
        weights = self.attention(query, state.keys, state.memory_mask, state.weights)
        logits, context = self._attend_output(query[:, None], weights[:, None], memory)
        return logits[:, 0], replace(state, h=h, c=c, context=context[:, 0], weights=weights)

    def _read_out(self, out: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """Top-layer outputs ``(batch, steps, hidden)`` -> logits ``(batch, steps, vocab)``; with ``dot``
        attention, each step's context joins its output first and the last step's is kept in ``state``."""
        if self.attention is None:
            return self.output(self.dropout(out)), state
        memory = self._memory(state)
        weights = self.attention(out, state.keys, state.memory_mask)
        logits, context = self._attend_output(out, weights, memory)
        return logits, replace(state, context=context[:, -1], weights=weights[:, -1])

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """One step: previous ids ``(batch,)`` -> logits ``(batch, vocab)`` and the next state."""
        x = self._inputs(tokens[:, None], state)[:, 0]
        if self.input_feeding:
            return self._attend_step(x, state)
        out, (h, c) = lstm_step(self.lstm, x, (state.h, state.c))
        logits, state = self._read_out(out[:, None], replace(state, h=h, c=c))
        return logits[:, 0], state


@dataclass
class ModelOutput:
    """``logits`` ``(batch, steps, vocab)``, None when the decoder was not run; ``ctc_logits``
    ``(batch, time', vocab)`` or None; ``enc_lengths`` ``(batch,)`` the encoder's output lengths."""

    logits: torch.Tensor | None
    ctc_logits: torch.Tensor | None
    enc_lengths: torch.Tensor


class Seq2Seq(nn.Module):
    """Feature normalization -> Encoder -> Bridge (-> attention) -> Decoder, plus an optional CTC head.

    The normalization (``model.normalization``, see :meth:`normalize`) is part of the model, so
    training, evaluation and transcription apply the same one. The CTC head is a training aid on the
    encoder outputs, and a scorer of beam search with ``decode.ctc_weight`` (asr_s2s.scorers).
    """

    def __init__(self, cfg: ModelConfig, n_mels: int, vocab_size: int, ctc: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        self.vocab_size = vocab_size
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        self.encoder = Encoder(cfg, n_mels)
        self.bridge = Bridge(
            cfg.encoder_layers, self.encoder.output_dim, cfg.decoder_layers, cfg.decoder_hidden
        )
        self.decoder = Decoder(cfg, vocab_size, self.encoder.output_dim)
        self.ctc_head = nn.Linear(self.encoder.output_dim, vocab_size) if ctc else None

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the global mean and std ``(n_mels,)`` of the training features (used by the
        ``global`` normalization, and the std by ``utterance_mean``)."""
        self.feat_mean.copy_(mean)
        self.feat_std.copy_(std)

    def normalize(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Raw log-mels ``(batch, time, n_mels)`` -> normalized ones, zero on padding.

        ``global``: ``(x - mean) / std`` with the training set's statistics. ``utterance``: each
        utterance's own per-bin mean and std over its ``lengths`` frames (padding never enters them).
        ``utterance_mean``: the utterance's per-bin mean, the global std.
        """
        mask = lengths_to_mask(lengths, feats.shape[1])[:, :, None]
        if self.cfg.normalization == "global":
            return ((feats - self.feat_mean) / self.feat_std) * mask
        frames = lengths.clamp_min(1)[:, None, None].to(feats.dtype)
        mean = (feats * mask).sum(1, keepdim=True) / frames
        centered = (feats - mean) * mask
        if self.cfg.normalization == "utterance_mean":
            return centered / self.feat_std
        std = (centered.pow(2).sum(1, keepdim=True) / frames).sqrt().clamp_min(UTTERANCE_MIN_STD)
        return centered / std

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        """Raw log-mels ``(batch, time, n_mels)`` and lengths -> normalized, encoded output."""
        return self.encoder(self.normalize(feats, lengths), lengths)

    def initial_state(self, enc: EncoderOutput) -> DecoderState:
        """The decoder's initial state from the encoder's final states, plus, in attention modes, the
        encoder outputs to attend over."""
        h, c = self.bridge(enc.final)
        state = DecoderState(h, c, summary=h[-1] if self.cfg.summary_input else None)
        if self.decoder.attention is not None:
            state = self.decoder.attach_memory(state, enc.outputs, enc.lengths)
        return state

    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        tokens_in: torch.Tensor,
        sampling_prob: float = 0.0,
        run_decoder: bool = True,
    ) -> ModelOutput:
        """Teacher-forced logits for ``tokens_in`` (``<sos>`` + target), ``(batch, steps)``.

        With ``sampling_prob`` > 0 (scheduled sampling), that fraction of the input tokens after
        ``<sos>`` is replaced by the model's own greedy predictions from a first teacher-forced pass.
        With ``run_decoder=False`` (CTC-only training) only the encoder and the CTC head run.
        """
        enc = self.encode(feats, lengths)
        ctc_logits = self.ctc_head(enc.outputs) if self.ctc_head is not None else None
        if not run_decoder:
            return ModelOutput(None, ctc_logits, enc.lengths)
        state = self.initial_state(enc)
        if sampling_prob > 0.0:
            with torch.no_grad():
                first, _ = self.decoder(tokens_in, state)
            predicted = first.argmax(-1)[:, :-1]
            swap = torch.rand(predicted.shape, device=predicted.device) < sampling_prob
            tokens_in = torch.cat([tokens_in[:, :1], torch.where(swap, predicted, tokens_in[:, 1:])], dim=1)
        logits, _ = self.decoder(tokens_in, state)
        return ModelOutput(logits, ctc_logits, enc.lengths)
