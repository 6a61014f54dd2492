"""On-the-fly training augmentation: speed, tempo, reverberation, noise, VTLP and the SpecAugment schedule.

:class:`Augmenter` turns one training utterance's waveform ``(samples,)`` into augmented log-mels
``(frames, n_mels)``, inside the DataLoader workers (``AsrDataset.__getitem__``). Every random draw
comes from a generator seeded by ``(train.seed, epoch, utterance index, method)``: the result does
not depend on the number of workers, on which worker loads an utterance, or on the global RNG, so a
resumed run sees the same augmented data as an uninterrupted one, and switching one method on does
not change the draws of the others. The order is speed -> reverberation -> noise (waveform) -> STFT
-> tempo -> VTLP-warped mel filterbank -> log, each applied with its own probability
(``augment.*_prob``). Batches are planned from the manifest's durations, so a speed or tempo factor
of 0.9 makes an utterance, and at most its batch, 11 % longer than ``train.max_frames`` allows.

Choices, with the costs measured in BENCHMARKS.md:

- speed: resampling, as ``torchaudio.functional.speed`` (duration and pitch both change by the
  factor), through :func:`asr_s2s.audio.resample`, whose cached kernels give the same samples.
  The factors come from a list so that the resampling ratios stay small (0.9 -> 9:10).
- tempo: a phase-vocoder time stretch of the features' own STFT: duration changes, pitch stays.
  The log-mels keep only the STFT's magnitudes, and those of ``torchaudio.functional.phase_vocoder``
  are linear interpolations between neighbouring frames, so :func:`tempo_stretch` computes just
  them; the full phase vocoder with an inverse STFT cost 40 ms per 3.5-second utterance, 15 times the
  log-mel.
- vocal-tract length: VTLP (Jaitly and Hinton, 2013), the mel filterbank read at warped frequencies,
  so it costs no more than the log-mel itself. ``torchaudio.functional.pitch_shift`` was measured at
  5-26 s per 2-second utterance (its resampling ratios are unreduced), so it is not offered; speed
  and tempo with inverse factors give a pitch shift at the same duration.
- noise: white, pink or brown noise generated per utterance, or a random stretch of a noise file,
  mixed by ``torchaudio.functional.add_noise`` at an SNR drawn uniformly in dB.
- reverberation: a synthetic room impulse response (a direct path, then Gaussian noise decaying by
  60 dB over a random RT60, at a random direct-to-reverberant ratio) applied with
  ``torchaudio.functional.fftconvolve``; the result keeps the input's RMS level.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.fft
import torch
import torchaudio

from asr_s2s.audio import audio_info, load_audio, resample
from asr_s2s.config import AugmentConfig
from asr_s2s.errors import AsrError, ConfigError
from asr_s2s.features import LogMel
from asr_s2s.manifest import read_manifest

log = logging.getLogger(__name__)
T = TypeVar("T")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")
# Sub-streams of the per-utterance seed, one per method: turning one on leaves the others' draws alone.
_SPEED, _TEMPO, _REVERB, _NOISE, _VTLP = range(5)
# VTLP's warp is linear up to this fraction of the Nyquist frequency, then bends to keep it fixed.
VTLP_BOUNDARY = 0.6
# Tail of a synthetic room response: 60 dB of decay over RT60, cut where it is 80 dB down.
_RIR_CUT_DB = 80.0
# Direct-to-reverberant energy ratio of the synthetic responses, drawn uniformly in dB.
REVERB_DRR_DB = (0.0, 15.0)


def utterance_generator(seed: int, epoch: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, index, stream)`` alone."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index, stream]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _choice(options: Sequence[T], generator: torch.Generator) -> T:
    return options[int(torch.randint(len(options), (), generator=generator))]


def speed_perturb(wave: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """``(samples,)`` -> ``(ceil(samples / factor),)``: played ``factor`` times faster, pitch up by it.

    The same samples as ``torchaudio.functional.speed``, with the resampling kernel cached.
    """
    if factor == 1.0:
        return wave
    return resample(wave, int(factor * sample_rate), sample_rate)


def tempo_stretch(power: torch.Tensor, factor: float) -> torch.Tensor:
    """Power spectrogram ``(..., freq, frames)`` -> ``(..., freq, ceil(frames / factor))``, ``factor``
    times faster at the same pitch: the magnitudes of ``torchaudio.functional.phase_vocoder`` (output
    frame ``j`` reads input time ``j * factor``, linearly between its two neighbours), except that the
    last frame is held instead of faded towards silence."""
    if factor == 1.0:
        return power
    frames = power.shape[-1]
    steps = torch.arange(0, frames, factor, dtype=torch.float64)
    low = steps.floor().long()
    high = (low + 1).clamp(max=frames - 1)
    alpha = (steps - low).to(power.dtype)
    magnitude = power.sqrt()
    return (magnitude[..., low] * (1 - alpha) + magnitude[..., high] * alpha).pow(2)


def colored_noise(num_samples: int, color: str, generator: torch.Generator) -> torch.Tensor:
    """``(num_samples,)`` Gaussian noise whose power falls as ``1/f**k``: white k=0, pink 1, brown 2."""
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[color]
    if exponent == 0.0:
        return torch.randn(num_samples, generator=generator)
    # Shaped at a fast FFT length, then cut: lengths with a large prime factor are 10x slower.
    length = scipy.fft.next_fast_len(max(2, num_samples), real=True)
    spectrum = torch.fft.rfft(torch.randn(length, generator=generator))
    freqs = torch.fft.rfftfreq(length)
    freqs[0] = freqs[1]  # no infinite gain at DC
    return torch.fft.irfft(spectrum / freqs.pow(exponent / 2), n=length)[:num_samples]


def mix_noise(wave: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """``wave`` plus ``noise`` (both ``(samples,)``) scaled to ``snr_db``; ``inf`` leaves ``wave`` as is."""
    if math.isinf(snr_db) and snr_db > 0:
        return wave
    if float(noise.pow(2).sum()) == 0.0 or float(wave.pow(2).sum()) == 0.0:
        return wave  # add_noise would divide by a zero energy
    return torchaudio.functional.add_noise(wave[None], noise[None], torch.tensor([snr_db]))[0]


def synthetic_rir(
    sample_rate: int, rt60: float, drr_db: float, generator: torch.Generator, min_length: int = 1
) -> torch.Tensor:
    """A room impulse response ``(length,)``: 1 at time 0 (the direct path), then Gaussian noise whose
    envelope falls by 60 dB every ``rt60`` seconds, scaled to a direct-to-reverberant energy ratio of
    ``drr_db``. ``length`` covers 80 dB of decay and is at least ``min_length``."""
    tail_len = max(1, int(rt60 * sample_rate * _RIR_CUT_DB / 60.0))
    t = torch.arange(1, tail_len + 1, dtype=torch.float32) / sample_rate
    tail = torch.randn(tail_len, generator=generator) * torch.exp(-3.0 * math.log(10.0) * t / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / float(tail.pow(2).sum()))
    rir = torch.zeros(max(min_length, tail_len + 1))
    rir[0] = 1.0
    rir[1 : tail_len + 1] = tail
    return rir


def reverberate(wave: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """``wave`` ``(samples,)`` convolved with ``rir`` ``(taps,)``, cut to ``samples`` and brought back
    to the input's RMS level."""
    # fftconvolve's transform length is samples + taps - 1; lengths with a large prime factor are 10x
    # slower, so the response is zero-padded to the next fast length.
    taps = scipy.fft.next_fast_len(len(wave) + len(rir) - 1, real=True) - len(wave) + 1
    rir = torch.nn.functional.pad(rir, (0, taps - len(rir)))
    out = torchaudio.functional.fftconvolve(wave, rir)[: len(wave)]
    rms_out = float(out.pow(2).mean().sqrt())
    return out * (float(wave.pow(2).mean().sqrt()) / rms_out) if rms_out > 0 else out


def vtlp_warp(freqs: torch.Tensor, alpha: float, nyquist: float) -> torch.Tensor:
    """Jaitly and Hinton's (2013) piecewise-linear frequency warp: ``f -> alpha f`` up to a boundary,
    then the straight line that keeps ``nyquist`` fixed. ``freqs`` in Hz, any shape."""
    boundary = VTLP_BOUNDARY * nyquist * min(alpha, 1.0) / alpha
    upper = nyquist - (nyquist - VTLP_BOUNDARY * nyquist * min(alpha, 1.0)) / (nyquist - boundary) * (
        nyquist - freqs
    )
    return torch.where(freqs <= boundary, freqs * alpha, upper)


class VtlpFilterbank:
    """Mel filterbanks ``(n_fft // 2 + 1, n_mels)`` of a :class:`LogMel` read at VTLP-warped frequencies.

    Filter ``m`` of the warped bank at frequency ``f`` is the original filter at ``warp(f)``: the
    energy at ``f`` counts as if it were at ``alpha f``. The original bank is sampled on a grid 16
    times finer than the FFT bins (torchaudio's ``melscale_fbanks``) and interpolated linearly; the
    filters are piecewise linear, so that is exact away from their corners, and ``alpha`` = 1 gives
    the extractor's own bank.
    """

    _FINE = 16

    def __init__(self, extractor: LogMel) -> None:
        cfg = extractor.cfg
        self.n_freqs = cfg.n_fft // 2 + 1
        self.nyquist = cfg.sample_rate / 2
        self.fine = torchaudio.functional.melscale_fbanks(
            (self.n_freqs - 1) * self._FINE + 1,
            f_min=0.0,
            f_max=self.nyquist,
            n_mels=cfg.n_mels,
            sample_rate=cfg.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )

    def __call__(self, alpha: float) -> torch.Tensor:
        freqs = torch.linspace(0, self.nyquist, self.n_freqs, dtype=torch.float64)
        position = vtlp_warp(freqs, alpha, self.nyquist) / self.nyquist * (len(self.fine) - 1)
        position = position.clamp(0, len(self.fine) - 1)
        low = position.floor().long().clamp(max=len(self.fine) - 2)
        frac = (position - low).float()[:, None]
        return self.fine[low] * (1 - frac) + self.fine[low + 1] * frac


class NoiseSource:
    """Noise recordings from a manifest (JSON lines) or a folder: random stretches ``(samples,)``."""

    def __init__(self, spec: str, sample_rate: int) -> None:
        path = Path(spec)
        self.sample_rate = sample_rate
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            self.items = [(f, 0.0, _seconds(f)) for f in files]
        elif path.is_file():
            self.items = [(Path(u.audio_filepath), u.offset, u.duration) for u in read_manifest(path)]
        else:
            raise ConfigError(f"augment.noise_files={spec!r}: no such manifest or folder")
        if not self.items:
            raise ConfigError(f"augment.noise_files={spec!r}: no audio files ({', '.join(AUDIO_SUFFIXES)})")

    def draw(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """A random stretch of a random file, repeated when the file is shorter than ``num_samples``."""
        path, offset, duration = _choice(self.items, generator)
        want = num_samples / self.sample_rate
        start = _uniform(0.0, max(0.0, duration - want), generator)
        noise, _ = load_audio(path, self.sample_rate, offset + start, min(want, duration))
        if len(noise) == 0:
            return torch.zeros(num_samples)
        return noise.repeat(math.ceil(num_samples / len(noise)))[:num_samples]


def _seconds(path: Path) -> float:
    rate, frames, _ = audio_info(path)
    return frames / rate


class Augmenter:
    """Augmented log-mels ``(frames, n_mels)`` of one training utterance's waveform ``(samples,)``,
    reproducible from ``(seed, epoch, index)``; see the module docstring for the methods."""

    def __init__(self, cfg: AugmentConfig, extractor: LogMel, seed: int) -> None:
        self.cfg = cfg
        self.extractor = extractor
        self.sample_rate = extractor.cfg.sample_rate
        self.seed = seed
        self.vtlp = VtlpFilterbank(extractor) if cfg.vtlp_prob > 0 else None
        try:
            self.noise_files = NoiseSource(cfg.noise_files, self.sample_rate) if cfg.noise_files else None
        except ConfigError:
            raise
        except AsrError as err:  # an unreadable noise manifest or file, named in the message
            raise ConfigError(f"augment.noise_files: {err}") from None

    def _draw(self, epoch: int, index: int, stream: int, prob: float) -> torch.Generator | None:
        """The method's generator when it applies to this utterance, else None."""
        if prob <= 0.0:
            return None
        generator = utterance_generator(self.seed, epoch, index, stream)
        return generator if float(torch.rand((), generator=generator)) < prob else None

    def waveform(self, wave: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        """Speed, reverberation and noise: ``(samples,)`` -> ``(samples',)``."""
        cfg, sr = self.cfg, self.sample_rate
        if (g := self._draw(epoch, index, _SPEED, cfg.speed_prob)) is not None:
            wave = speed_perturb(wave, sr, _choice(cfg.speed_factors, g))
        if (g := self._draw(epoch, index, _REVERB, cfg.reverb_prob)) is not None:
            rt60 = _uniform(*cfg.reverb_rt60, g)
            wave = reverberate(wave, synthetic_rir(sr, rt60, _uniform(*REVERB_DRR_DB, g), g))
        if (g := self._draw(epoch, index, _NOISE, cfg.noise_prob)) is not None:
            sources = list(cfg.noise_colors) + (["file"] if self.noise_files is not None else [])
            source = _choice(sources, g)
            snr = _uniform(*cfg.noise_snr_db, g)
            if source == "file":
                noise = self.noise_files.draw(len(wave), g)
            else:
                noise = colored_noise(len(wave), source, g)
            wave = mix_noise(wave, noise, snr)
        return wave

    def filterbank(self, epoch: int, index: int) -> torch.Tensor | None:
        """This utterance's VTLP filterbank ``(n_fft // 2 + 1, n_mels)``, or None for the usual one."""
        if self.vtlp is None or (g := self._draw(epoch, index, _VTLP, self.cfg.vtlp_prob)) is None:
            return None
        return self.vtlp(_uniform(*self.cfg.vtlp_alpha, g))

    def tempo(self, epoch: int, index: int) -> float:
        """This utterance's tempo factor (1 when tempo perturbation does not apply to it)."""
        if (g := self._draw(epoch, index, _TEMPO, self.cfg.tempo_prob)) is None:
            return 1.0
        return _choice(self.cfg.tempo_factors, g)

    def __call__(self, wave: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        power = self.extractor.mel.spectrogram(self.waveform(wave, epoch, index).float())
        power = tempo_stretch(power, self.tempo(epoch, index))
        return self.extractor.log_mel(power, self.filterbank(epoch, index))


def spec_augment_scale(step: int, start_step: int, ramp_steps: int) -> float:
    """SpecAugment's mask-width factor at optimizer ``step``: 0 before ``start_step``, then rising
    linearly to 1 over ``ramp_steps`` (at once when 0)."""
    if step < start_step:
        return 0.0
    if ramp_steps == 0:
        return 1.0
    return min(1.0, (step - start_step + 1) / ramp_steps)
