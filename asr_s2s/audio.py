"""Audio decoding with soundfile: mono float32 at the model's sample rate."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asr_s2s.errors import AudioError

# What soundfile raises for files it cannot decode: its own error, and ValueError for headers that
# make a file look unseekable or give impossible sizes (found by fuzzing).
DECODE_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError)

# torchaudio's resampling filter has about (orig / g) * (new / g) taps, g = gcd(orig, new): a few
# thousand for the usual rates, but 256 million (a gigabyte) for 16001 -> 16000 Hz. Rates whose
# ratio needs more than this are refused rather than exhausting memory.
MAX_RESAMPLE_TAPS = 2**24


@functools.lru_cache(maxsize=16)
def _resampler(orig_sr: int, new_sr: int) -> torchaudio.transforms.Resample:
    # The transform precomputes its windowed-sinc kernel once per rate pair.
    return torchaudio.transforms.Resample(orig_sr, new_sr)


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``(..., samples)`` from ``orig_sr`` to ``new_sr`` Hz."""
    if orig_sr == new_sr:
        return wave
    return _resampler(int(orig_sr), int(new_sr))(wave)


def check_sample_rate(path: str | Path, orig_sr: int, new_sr: int) -> None:
    """Raise :class:`AudioError` naming ``path`` when ``orig_sr`` cannot be resampled to ``new_sr``."""
    if orig_sr <= 0:
        raise AudioError(path, f"invalid sample rate {orig_sr} Hz")
    g = math.gcd(orig_sr, new_sr)
    if (orig_sr // g) * (new_sr // g) > MAX_RESAMPLE_TAPS:
        raise AudioError(
            path,
            f"unsupported sample rate {orig_sr} Hz (too costly to resample to {new_sr} Hz); "
            f"convert the file to {new_sr} Hz first",
        )


def to_mono(wave: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` into ``(samples,)``."""
    return wave if wave.ndim == 1 else wave.mean(axis=1, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """``(sample_rate, frames, channels)`` from the file header, without decoding."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except DECODE_ERRORS as err:
        raise AudioError(path, decode_error_reason(err)) from None
    return info.samplerate, info.frames, info.channels


def load_audio(
    path: str | Path,
    sample_rate: int | None = None,
    offset: float = 0.0,
    duration: float | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode ``[offset, offset + duration]`` seconds of a file as mono float32.

    Returns ``(wave, rate)`` with ``wave`` of shape ``(samples,)``; ``rate`` is ``sample_rate`` when
    given (the audio is resampled to it), else the file's own rate.
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(str(path)) as handle:
            file_sr = handle.samplerate
            if sample_rate is not None:
                check_sample_rate(path, file_sr, sample_rate)
            start = int(round(offset * file_sr))
            if start > handle.frames:
                raise AudioError(
                    path, f"offset {offset:.3f}s is past the end ({handle.frames / file_sr:.3f}s)"
                )
            if start:
                handle.seek(start)
            frames = -1 if duration is None else int(round(duration * file_sr))
            data = handle.read(frames, dtype="float32", always_2d=True)
    except DECODE_ERRORS as err:
        raise AudioError(path, decode_error_reason(err)) from None
    if data.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    mono = to_mono(data)
    if not np.isfinite(mono).all():
        raise AudioError(path, "contains NaN or infinite samples")
    wave = torch.from_numpy(np.ascontiguousarray(mono))
    if sample_rate is None:
        return wave, file_sr
    return resample(wave, file_sr, sample_rate), sample_rate


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def decode_error_reason(err: Exception) -> str:
    """The reason part of a soundfile error, without soundfile's ``Error opening 'path':`` prefix."""
    message = str(err).split(":", 1)[-1].strip() if ":" in str(err) else str(err)
    return f"cannot decode audio ({message or 'unknown format'})"
