"""Log-mel features, padding them into batches, global normalization statistics and SpecAugment."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchaudio

from asr_s2s.config import FeatureConfig
from asr_s2s.errors import ConfigError
from asr_s2s.fileio import atomic_write


class LogMel(torch.nn.Module):
    """Waveform ``(samples,)`` -> log-mel ``(frames, n_mels)``; frames = 1 + samples // hop.

    Slaney mel scale and area normalization, as ``librosa.feature.melspectrogram`` computes them.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            power=2.0,
            center=True,
            pad_mode="constant",
            norm="slaney",
            mel_scale="slaney",
        )

    @torch.no_grad()
    def forward(self, wave: torch.Tensor, filterbank: torch.Tensor | None = None) -> torch.Tensor:
        """``filterbank`` ``(n_fft // 2 + 1, n_mels)`` replaces the mel filterbank (VTLP, asr_s2s.augment)."""
        return self.log_mel(self.mel.spectrogram(wave.float()), filterbank)

    def log_mel(self, power: torch.Tensor, filterbank: torch.Tensor | None = None) -> torch.Tensor:
        """Power spectrogram ``(..., n_fft // 2 + 1, frames)`` -> log-mel ``(..., frames, n_mels)``."""
        bank = self.mel.mel_scale.fb if filterbank is None else filterbank
        return torch.log((power.transpose(-1, -2) @ bank).clamp_min(self.cfg.log_floor)).contiguous()

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of ``num_samples``."""
        return 1 + num_samples // self.cfg.hop_length


class RunningStats:
    """Streaming per-dimension mean and standard deviation over ``(frames, dim)`` arrays."""

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.total_sq = torch.zeros(dim, dtype=torch.float64)

    def update(self, feats: torch.Tensor) -> None:
        feats = feats.double()
        self.count += feats.shape[0]
        self.total += feats.sum(0)
        self.total_sq += (feats * feats).sum(0)

    def merge(self, other: RunningStats) -> None:
        """Add the frames counted by ``other`` (e.g. a worker's partial sums)."""
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq

    def result(self, min_std: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as float32 ``(dim,)`` tensors."""
        if self.count == 0:
            raise ValueError("no frames to compute statistics from")
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0.0)
        return mean.float(), var.sqrt().clamp_min(min_std).float()


def compute_stats(features: Iterable[torch.Tensor], n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Global mean and std of a stream of ``(frames, n_mels)`` feature matrices, in one pass."""
    stats = RunningStats(n_mels)
    for feats in features:
        stats.update(feats)
    return stats.result()


def write_stats(path: str | Path, mean: torch.Tensor, std: torch.Tensor, **info: Any) -> None:
    """Save normalization statistics ``(n_mels,)`` as JSON (with ``info``: where they came from)."""
    record = {"n_mels": len(mean), "mean": mean.tolist(), "std": std.tolist(), **info}
    with atomic_write(Path(path)) as handle:
        handle.write(json.dumps(record, indent=1) + "\n")


def read_stats(path: str | Path, n_mels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, std)`` written by :func:`write_stats`; a :class:`ConfigError` (one line) when the
    file is missing, malformed, or for another number of mel bins."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        mean = torch.tensor(record["mean"], dtype=torch.float32)
        std = torch.tensor(record["std"], dtype=torch.float32)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read feature statistics ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: not a feature statistics file ({type(err).__name__}: {err})") from None
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ConfigError(f"{path}: statistics for {len(mean)} mel bins, but features.n_mels is {n_mels}")
    if not all(math.isfinite(x) for x in mean.tolist() + std.tolist()) or float(std.min()) <= 0:
        raise ConfigError(f"{path}: statistics hold non-finite values or a non-positive std")
    return mean, std


class SpecAugment(torch.nn.Module):
    """Frequency and time masking of ``(batch, time, n_mels)`` log-mels, per utterance.

    Masks never reach into an utterance's padding; masked cells take the utterance's mean so that
    they look like average speech after normalization. ``scale`` multiplies the mask widths (the
    schedule of asr_s2s.augment.spec_augment_scale); at 1 the masks are torchaudio's transforms'.
    """

    def __init__(self, cfg: FeatureConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.freq = torchaudio.transforms.FrequencyMasking(cfg.freq_mask_width)
        self.time = torchaudio.transforms.TimeMasking(cfg.time_mask_width, p=0.2)

    @torch.no_grad()
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        out = feats.clone()
        freq_width = round(self.freq.mask_param * scale)
        time_width = round(self.time.mask_param * scale)
        if freq_width == 0 and time_width == 0:
            return out
        for i, length in enumerate(lengths.tolist()):
            spec = out[i, :length].transpose(0, 1).unsqueeze(0)  # (1, n_mels, time)
            fill = float(spec.mean())
            for _ in range(self.cfg.freq_masks):
                spec = torchaudio.functional.mask_along_axis(spec, freq_width, fill, 1)
            for _ in range(self.cfg.time_masks):
                spec = torchaudio.functional.mask_along_axis(spec, time_width, fill, 2, p=self.time.p)
            out[i, :length] = spec.squeeze(0).transpose(0, 1)
        return out


def pad_features(feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(frames_i, n_mels)`` matrices into zero-padded ``(batch, time, n_mels)`` plus lengths."""
    lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
    out = feats[0].new_zeros(len(feats), int(lengths.max()), feats[0].shape[1])
    for i, f in enumerate(feats):
        out[i, : f.shape[0]] = f
    return out, lengths
