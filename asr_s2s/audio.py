"""Audio in: decoding with soundfile (whole files, segments, or block by block for long files),
resampling (whole or streamed) and conversion of waveforms to mono float32 at the model's rate."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
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
BLOCK_SECONDS = 60.0  # long files are read this much at a time


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


class StreamResampler:
    """Resamples a signal that arrives in pieces, giving the same samples as resampling it whole.

    Each call resamples the new input with some context on both sides (the sinc kernel's reach)
    and returns only the outputs that the context fully determines; :meth:`flush` returns the rest.
    Piece boundaries are kept on multiples of ``orig_sr / gcd`` so output samples stay on one grid.
    """

    def __init__(self, orig_sr: int, new_sr: int) -> None:
        self.orig_sr, self.new_sr = int(orig_sr), int(new_sr)
        g = math.gcd(self.orig_sr, self.new_sr)
        self.unit, self.out_unit = self.orig_sr // g, self.new_sr // g
        # torchaudio's kernel (lowpass_filter_width=6, rolloff=0.99) reaches ~6.1 * unit input samples.
        self.context = 8 * self.unit
        self.buf = np.zeros(0, dtype=np.float32)
        self.base = 0  # input index of buf[0]
        self.done = 0  # input samples whose outputs were returned

    def _outputs(self, samples: int) -> int:
        return samples // self.unit * self.out_unit

    def push(self, wave: np.ndarray) -> np.ndarray:
        """Add input ``(samples,)``; return the output samples ready so far."""
        if self.orig_sr == self.new_sr:
            return wave
        self.buf = np.concatenate([self.buf, wave])
        ready = self.base + len(self.buf) - self.context
        end = self.done + max(0, ready - self.done) // self.unit * self.unit
        if end <= self.done:
            return np.zeros(0, dtype=np.float32)
        out = resample(
            torch.from_numpy(self.buf[: end + self.context - self.base]), self.orig_sr, self.new_sr
        )
        piece = out[self._outputs(self.done - self.base) : self._outputs(end - self.base)].numpy()
        new_base = max(0, end - self.context)
        self.buf = self.buf[new_base - self.base :].copy()
        self.base, self.done = new_base, end
        return piece

    def flush(self) -> np.ndarray:
        """The remaining output samples, at the end of the input."""
        if self.orig_sr == self.new_sr or len(self.buf) == 0:
            return np.zeros(0, dtype=np.float32)
        out = resample(torch.from_numpy(self.buf), self.orig_sr, self.new_sr)
        self.buf = np.zeros(0, dtype=np.float32)
        return out[self._outputs(self.done - self.base) :].numpy()


def read_blocks(
    path: str | Path, sample_rate: int, block_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """Mono float32 blocks ``(samples,)`` of a file at ``sample_rate``, about ``block_seconds``
    (default :data:`BLOCK_SECONDS`) each.

    A file no longer than one block is decoded by :func:`load_audio`; longer ones are read a block
    at a time, so memory does not grow with the file. Raises :class:`AudioError` naming the file.
    """
    path = Path(path)
    file_sr, frames, _ = audio_info(path)
    check_sample_rate(path, file_sr, sample_rate)
    block = max(1, int((block_seconds or BLOCK_SECONDS) * file_sr))
    if frames <= block:
        yield load_audio(path, sample_rate)[0].numpy()
        return
    resampler = StreamResampler(file_sr, sample_rate)
    try:
        with sf.SoundFile(str(path)) as handle:
            while True:
                data = handle.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                mono = to_mono(data)
                if not np.isfinite(mono).all():
                    raise AudioError(path, "contains NaN or infinite samples")
                yield resampler.push(mono)
    except DECODE_ERRORS as err:
        raise AudioError(path, decode_error_reason(err)) from None
    yield resampler.flush()


def as_mono(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    """A waveform as mono float32 ``(samples,)``.

    Accepts ``(samples,)``, ``(channels, samples)`` or ``(samples, channels)`` (the shorter axis is
    taken as the channels), float in [-1, 1] or integer PCM (scaled to [-1, 1]).
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    wave = np.asarray(audio)
    if wave.ndim not in (1, 2):
        raise ValueError(f"expected a waveform of 1 or 2 dimensions, got shape {tuple(wave.shape)}")
    if np.issubdtype(wave.dtype, np.integer):
        info = np.iinfo(wave.dtype)
        middle = (int(info.max) + int(info.min) + 1) / 2.0
        wave = ((wave.astype(np.float64) - middle) / (int(info.max) + 1 - middle)).astype(np.float32)
    else:
        wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        wave = wave.mean(axis=int(np.argmin(wave.shape)), dtype=np.float32)
    if wave.size == 0:
        raise AudioError("<waveform>", "no audio samples")
    if not np.isfinite(wave).all():
        raise AudioError("<waveform>", "contains NaN or infinite samples")
    return np.ascontiguousarray(wave)


def array_blocks(
    wave: np.ndarray, orig_sr: int, sample_rate: int, block_seconds: float | None = None
) -> Iterator[np.ndarray]:
    """A mono waveform ``(samples,)`` at ``orig_sr`` as blocks at ``sample_rate``, resampled piece by
    piece (:class:`StreamResampler`) like the blocks of :func:`read_blocks`."""
    step = max(1, int((block_seconds or BLOCK_SECONDS) * orig_sr))
    if len(wave) <= step:
        yield resample(torch.from_numpy(wave), orig_sr, sample_rate).numpy()
        return
    resampler = StreamResampler(orig_sr, sample_rate)
    for start in range(0, len(wave), step):
        yield resampler.push(wave[start : start + step])
    yield resampler.flush()
