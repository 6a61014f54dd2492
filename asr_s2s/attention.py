"""Attention over the encoder outputs: additive (optionally location-aware) and scaled dot-product.

Energies of decoder state ``s`` against encoder frame ``h_j``:

    additive, location:  e_j = w^T tanh(W s + V h_j + U f_j + b),  f = conv1d(previous weights)
    dot:                 e_j = (W s + b) . (V h_j) / sqrt(attention_dim)

Additive is Bahdanau et al. (2015), the location term as in Chorowski et al. (2015), LAS and ESPnet's
``AttLoc``; ``additive`` leaves out ``U f_j``. Dot is Luong et al.'s (2015) multiplicative score:
it needs no previous alignment, so the decoder can score all its steps at once.
This module holds no data loading or search code.
"""

from __future__ import annotations

import torch
from torch import nn

# ESPnet's AttLoc uses 10 channels; 31 taps cover +-15 encoder frames (+-0.45 s at 3-frame stacking),
# enough to see where the previous step attended and to learn to move forward from there.
LOCATION_CHANNELS = 10
LOCATION_KERNEL = 31


class AdditiveAttention(nn.Module):
    """``w^T tanh(W s + V h_j [+ U f_j] + b)``, softmax over the real (unmasked) frames."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int, location: bool) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, attention_dim)  # W s + b
        self.memory = nn.Linear(memory_dim, attention_dim, bias=False)  # V h_j
        self.location = location
        if location:
            self.location_conv = nn.Conv1d(
                1, LOCATION_CHANNELS, LOCATION_KERNEL, padding=LOCATION_KERNEL // 2, bias=False
            )
            self.location_proj = nn.Linear(LOCATION_CHANNELS, attention_dim, bias=False)  # U f_j
        self.energy = nn.Linear(attention_dim, 1, bias=False)  # w

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``V h``: ``(batch, time, memory_dim) -> (batch, time, attention_dim)``, once per utterance."""
        return self.memory(memory)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor, previous: torch.Tensor
    ) -> torch.Tensor:
        """Attention weights ``(batch, time)``, summing to 1 over each row's real frames, 0 on padding.

        ``query`` ``(batch, query_dim)`` is the decoder state, ``keys`` ``(groups, time, attention_dim)``
        from :meth:`keys`, ``mask`` ``(groups, time)`` True on real frames, ``previous`` ``(batch, time)``
        the previous step's weights (used by the location term only). ``batch`` is a multiple of
        ``groups``: consecutive rows share one utterance's keys (the hypotheses of a beam), uncopied.
        """
        groups, time, dim = keys.shape
        hidden = (self.query(query).view(groups, -1, 1, dim) + keys[:, None]).view(-1, time, dim)
        if self.location:
            # Padding frames hold weight 0, exactly what the convolution's zero padding would give for
            # a shorter utterance alone: batching cannot change the location features of real frames.
            features = self.location_conv(previous[:, None, :]).transpose(1, 2)
            hidden = hidden + self.location_proj(features)
        energies = self.energy(torch.tanh(hidden))[:, :, 0].float().view(groups, -1, time)
        return energies.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1).view(-1, time)


class DotAttention(nn.Module):
    """``(W s + b) . (V h_j) / sqrt(d)``, softmax over the real frames, for many queries at once."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, attention_dim)
        self.memory = nn.Linear(memory_dim, attention_dim, bias=False)
        self.scale = attention_dim**-0.5

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """``V h``: ``(batch, time, memory_dim) -> (batch, time, attention_dim)``, once per utterance."""
        return self.memory(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(batch, steps, time)`` for queries ``(batch, steps, query_dim)``, each
        row summing to 1 over the real frames (``mask`` ``(groups, time)``, True on real frames).
        ``keys`` ``(groups, time, attention_dim)``: as in :class:`AdditiveAttention`, ``batch`` is a
        multiple of ``groups`` and consecutive rows share one utterance's keys."""
        batch, steps, _ = query.shape
        queries = self.query(query).reshape(keys.shape[0], -1, keys.shape[2])
        energies = torch.bmm(queries, keys.transpose(1, 2)) * self.scale
        weights = energies.float().masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return weights.view(batch, steps, -1)
