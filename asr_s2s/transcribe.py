"""Transcription of audio files and waveforms of any length, whisper-style.

>>> model = load_model("exp/digits/model.pt")
>>> result = model.transcribe("meeting.flac")
>>> result.text, [(s.start, s.end, s.text) for s in result.segments]

Inputs no longer than the model's longest chunk are decoded whole, as in training. Longer ones are
read in blocks, split at silences into chunks of at most :attr:`Transcriber.max_chunk_seconds`,
and decoded chunk by chunk, so that memory stays bounded whatever the length of the recording.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from asr_s2s.audio import (
    DECODE_ERRORS,
    audio_info,
    check_sample_rate,
    decode_error_reason,
    load_audio,
    resample,
    to_mono,
)
from asr_s2s.checkpoint import ModelBundle, load_bundle
from asr_s2s.config import Config, DecodeConfig
from asr_s2s.data import pad_features
from asr_s2s.decoding import decode
from asr_s2s.errors import AsrError, AudioError, ConfigError
from asr_s2s.features import LogMel
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

log = logging.getLogger(__name__)

AudioInput = str | Path | np.ndarray | torch.Tensor

MAX_CHUNK_SECONDS = 20.0  # upper bound on a chunk, whatever the model was trained on
MIN_CHUNK_SECONDS = 1.0  # lower bound: room for a word plus the silence padding around it
BLOCK_SECONDS = 60.0  # long files are read this much at a time

# Silences shorter than this do not split a chunk: stop consonants and short pauses are not breaks.
_MIN_GAP_SECONDS = 0.3
# Silence kept around each chunk, like the silence around training utterances.
_PAD_SECONDS = 0.2
# Split's reference level never drops below this (dBFS), so that a recording of near-silence is
# not split as if its faint noise were speech.
_REF_FLOOR_DB = -50.0
# Chunks waiting to be decoded together (sorted by length): at most this much audio, this many batches.
_WINDOW_SECONDS = 600.0
_WINDOW_BATCHES = 8


@dataclass
class Segment:
    """One decoded chunk: ``start`` and ``end`` in seconds from the beginning of the audio."""

    start: float
    end: float
    text: str


@dataclass
class Transcription:
    """The text of one input, its timed segments, its path (None for waveforms) and duration in seconds."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    audio_path: str | None = None
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio_path": self.audio_path,
            "duration": round(self.duration, 3),
            "text": self.text,
            "segments": [
                {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text} for s in self.segments
            ],
        }


@dataclass
class _Chunk:
    """Part ``start``..``end`` (seconds) of input ``owner``; ``wave`` ``(samples,)`` at the model rate."""

    owner: int
    start: float
    end: float
    wave: np.ndarray


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


def _array_blocks(wave: np.ndarray, orig_sr: int, sample_rate: int) -> Iterator[np.ndarray]:
    step = max(1, int(BLOCK_SECONDS * orig_sr))
    if len(wave) <= step:
        yield resample(torch.from_numpy(wave), orig_sr, sample_rate).numpy()
        return
    resampler = StreamResampler(orig_sr, sample_rate)
    for start in range(0, len(wave), step):
        yield resampler.push(wave[start : start + step])
    yield resampler.flush()


class _Splitter:
    """Cuts a stream of blocks at silences into chunks of at most ``max_seconds``.

    Non-silent runs come from :func:`librosa.effects.split` (``top_db`` below the loudest frame so
    far); runs closer than ``_MIN_GAP_SECONDS`` join; a run too long for one chunk is cut at its
    quietest frame. Chunks get up to ``_PAD_SECONDS`` of the surrounding silence and never overlap.
    A run reaching the end of the buffer stays buffered until the next block shows where it ends.
    """

    def __init__(self, sample_rate: int, top_db: float, max_seconds: float) -> None:
        self.hop = max(1, sample_rate // 100)
        self.frame = 4 * self.hop
        self.pad = int(_PAD_SECONDS * sample_rate)
        self.min_gap = int(_MIN_GAP_SECONDS * sample_rate)
        self.max_speech = int(max_seconds * sample_rate) - 2 * self.pad
        self.top_db = top_db
        self.peak = 10.0 ** (_REF_FLOOR_DB / 20.0)  # RMS amplitude
        self.buf = np.zeros(0, dtype=np.float32)
        self.offset = 0  # sample index of buf[0] in the whole stream

    def _ref(self, rms: np.ndarray) -> float:
        # The loudest frame so far, not only this buffer's: a block of faint noise stays silence.
        self.peak = max(self.peak, float(rms.max(initial=0.0)))
        return self.peak

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add a block; return the chunks now complete as ``(start_sample, wave)``."""
        self.buf = np.concatenate([self.buf, block])
        return self._cut(final=False)

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """The remaining chunks, at the end of the stream."""
        return self._cut(final=True)

    def _split_long(self, s: int, e: int) -> list[tuple[int, int]]:
        pieces = []
        while e - s > self.max_speech:
            lo, hi = s + self.max_speech // 2, s + self.max_speech
            rms = librosa.feature.rms(
                y=self.buf[lo:hi], frame_length=self.frame, hop_length=self.hop, center=False
            )[0]
            cut = lo + int(np.argmin(rms)) * self.hop + self.frame // 2
            pieces.append((s, cut))
            s = cut
        pieces.append((s, e))
        return pieces

    def _cut(self, final: bool) -> list[tuple[int, np.ndarray]]:
        buf, n = self.buf, len(self.buf)
        if n == 0:
            return []
        groups: list[list[int]] = []
        intervals = librosa.effects.split(
            buf, top_db=self.top_db, ref=self._ref, frame_length=self.frame, hop_length=self.hop
        )
        for s, e in intervals.tolist():
            if groups and s - groups[-1][1] < self.min_gap:
                groups[-1][1] = e
            else:
                groups.append([s, e])
        open_start: int | None = None
        if not final and groups and n - groups[-1][1] < self.min_gap:
            open_start = groups.pop()[0]
        pieces = [p for s, e in groups for p in self._split_long(s, e)]
        if open_start is not None:
            # The unfinished run keeps only its last piece open, so the buffer stays bounded.
            *complete, last = self._split_long(open_start, n)
            pieces += complete
            open_start = last[0]
        chunks = []
        left = 0
        for i, (s, e) in enumerate(pieces):
            following = pieces[i + 1][0] if i + 1 < len(pieces) else open_start
            start = max(s - self.pad, left)
            end = min(e + self.pad, n if following is None else (e + following) // 2)
            chunks.append((self.offset + start, buf[start:end].copy()))
            left = end
        if final:
            keep = n
        else:
            keep = max(left, (n if open_start is None else open_start) - self.pad)
        self.buf = buf[keep:].copy()
        self.offset += keep
        return chunks


class Transcriber:
    """A loaded model with its feature extractor: decodes waveforms, files and long recordings.

    ``top_db``: how far below the loudest frame (dB) audio counts as silence when splitting long
    inputs. ``max_chunk_seconds``: the longest chunk decoded at once; by default the longest
    training utterance (``train.max_duration``) within ``MIN_CHUNK_SECONDS..MAX_CHUNK_SECONDS``.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device | None = None,
        top_db: float = 40.0,
        max_chunk_seconds: float | None = None,
        model_path: str | Path | None = None,
    ) -> None:
        self.bundle = bundle
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.extractor = LogMel(bundle.config.features).to(self.device)
        self.top_db = top_db
        if max_chunk_seconds is None:
            max_chunk_seconds = min(
                max(bundle.config.train.max_duration, MIN_CHUNK_SECONDS), MAX_CHUNK_SECONDS
            )
        if max_chunk_seconds < MIN_CHUNK_SECONDS:
            raise ValueError(
                f"max_chunk_seconds must be at least {MIN_CHUNK_SECONDS}, got {max_chunk_seconds}"
            )
        self.max_chunk_seconds = float(max_chunk_seconds)
        self.model_path = None if model_path is None else str(model_path)

    @property
    def model(self) -> Seq2Seq:
        return self.bundle.model

    @property
    def config(self) -> Config:
        return self.bundle.config

    @property
    def vocab(self) -> Vocabulary:
        return self.bundle.vocab

    @property
    def sample_rate(self) -> int:
        """The rate the model's features expect; every input is resampled to it."""
        return self.config.features.sample_rate

    def decode_config(self, beam_size: int | None = None) -> DecodeConfig:
        """The model's search settings, with ``beam_size`` replaced when given."""
        if beam_size is None:
            return self.config.decode
        if beam_size < 1:
            raise ConfigError(f"beam size must be at least 1, got {beam_size}")
        return dataclasses.replace(self.config.decode, beam_size=beam_size)

    def batch_size(self, batch_size: int | None = None) -> int:
        """``batch_size`` when given, else the model's ``decode.batch_size``."""
        size = self.config.decode.batch_size if batch_size is None else batch_size
        if size < 1:
            raise ConfigError(f"batch size must be at least 1, got {size}")
        return size

    @torch.inference_mode()
    def decode(
        self,
        waves: Sequence[np.ndarray | torch.Tensor],
        beam_size: int | None = None,
        batch_size: int | None = None,
    ) -> list[str]:
        """Texts of mono waveforms ``(samples,)`` at :attr:`sample_rate`, in their order.

        They are decoded in batches of similar length (longest first) and not split at silences.
        """
        size = self.batch_size(batch_size)
        order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
        texts = [""] * len(waves)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            feats = [self.extractor(torch.as_tensor(waves[i]).to(self.device)) for i in index]
            padded, lengths = pad_features(feats)
            for i, text in zip(index, self.decode_features(padded, lengths, beam_size)):
                texts[i] = text
        return texts

    @torch.inference_mode()
    def decode_features(
        self, feats: torch.Tensor, lengths: torch.Tensor, beam_size: int | None = None
    ) -> list[str]:
        """Texts of a padded batch of log-mels ``(batch, time, n_mels)`` with lengths ``(batch,)``
        (as :class:`asr_s2s.data.AsrDataset` computes them), decoded as one batch."""
        cfg = self.decode_config(beam_size)
        ids = decode(self.model, feats.to(self.device), lengths.to(self.device), cfg)
        return [self.vocab.decode(seq) for seq in ids]

    def _open(
        self, audio: AudioInput, sample_rate: int | None
    ) -> tuple[str | None, float, Iterator[np.ndarray]]:
        """``(path, duration, blocks)`` of an input; blocks are mono at the model's rate."""
        if isinstance(audio, str | Path):
            file_sr, frames, _ = audio_info(audio)
            if frames == 0:
                raise AudioError(audio, "no audio samples")
            return str(audio), frames / file_sr, read_blocks(audio, self.sample_rate)
        if isinstance(audio, np.ndarray | torch.Tensor):
            if sample_rate is None:
                raise ValueError("sample_rate is required with a waveform (it is the waveform's rate)")
            wave = as_mono(audio)
            check_sample_rate("<waveform>", sample_rate, self.sample_rate)
            return None, len(wave) / sample_rate, _array_blocks(wave, sample_rate, self.sample_rate)
        raise TypeError(f"expected a path, numpy array or tensor, got {type(audio).__name__}")

    def _chunks(self, owner: int, blocks: Iterator[np.ndarray], duration: float) -> Iterator[_Chunk]:
        sr = self.sample_rate
        if duration <= self.max_chunk_seconds:
            wave = np.concatenate(list(blocks))
            yield _Chunk(owner, 0.0, len(wave) / sr, wave)
            return
        splitter = _Splitter(sr, self.top_db, self.max_chunk_seconds)
        for block in blocks:
            for start, wave in splitter.push(block):
                yield _Chunk(owner, start / sr, (start + len(wave)) / sr, wave)
        for start, wave in splitter.flush():
            yield _Chunk(owner, start / sr, (start + len(wave)) / sr, wave)

    def chunks(
        self, audio: AudioInput, sample_rate: int | None = None
    ) -> Iterator[tuple[float, float, np.ndarray]]:
        """The pieces :meth:`transcribe` decodes: ``(start, end, wave)``, times in seconds, ``wave``
        mono ``(samples,)`` at :attr:`sample_rate`. Generated lazily, block by block."""
        _, duration, blocks = self._open(audio, sample_rate)
        for chunk in self._chunks(0, blocks, duration):
            yield chunk.start, chunk.end, chunk.wave

    def _decode_chunks(
        self, chunks: Iterable[_Chunk], beam_size: int, size: int
    ) -> Iterator[tuple[_Chunk, str]]:
        # A window of chunks is decoded at a time: long enough to sort into batches of similar
        # length, short enough to bound memory. Results come back in input order.
        window: list[_Chunk] = []
        samples = 0
        limit = int(_WINDOW_SECONDS * self.sample_rate)
        for chunk in chunks:
            window.append(chunk)
            samples += len(chunk.wave)
            if samples >= limit or len(window) >= size * _WINDOW_BATCHES:
                yield from zip(window, self.decode([c.wave for c in window], beam_size, size))
                window, samples = [], 0
        if window:
            yield from zip(window, self.decode([c.wave for c in window], beam_size, size))

    def iter_transcriptions(
        self,
        inputs: Sequence[AudioInput],
        sample_rate: int | None = None,
        beam_size: int | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Iterator[Transcription | AsrError]:
        """One result per input, in order, as each completes: its :class:`Transcription`, or the
        :class:`AsrError` that made it fail (the other inputs go on).

        Chunks of consecutive inputs are batched together, so many short files decode as fast as
        one long one. ``sample_rate`` is that of waveform inputs. The progress bar counts seconds
        of audio.
        """
        beam = self.decode_config(beam_size).beam_size
        size = self.batch_size(batch_size)
        meta: dict[int, tuple[str | None, float]] = {}
        failed: dict[int, AsrError] = {}

        def all_chunks() -> Iterator[_Chunk]:
            for i, audio in enumerate(inputs):
                try:
                    path, duration, blocks = self._open(audio, sample_rate)
                    meta[i] = (path, duration)
                    bar.total = (bar.total or 0) + round(duration)
                    bar.refresh()
                    yield from self._chunks(i, blocks, duration)
                except AsrError as err:
                    failed[i] = err

        def finish(i: int, segments: list[Segment]) -> Transcription | AsrError:
            if i in failed:
                return failed[i]
            path, duration = meta[i]
            bar.update(round(duration) - shown[i])
            return Transcription(" ".join(s.text for s in segments), segments, path, duration)

        shown: dict[int, int] = {i: 0 for i in range(len(inputs))}
        with tqdm(total=0, unit="s", desc="transcribe", disable=not progress or None) as bar:
            owner, segments = 0, []
            for chunk, text in self._decode_chunks(all_chunks(), beam, size):
                while owner < chunk.owner:
                    yield finish(owner, segments)
                    owner, segments = owner + 1, []
                if text:
                    segments.append(Segment(chunk.start, chunk.end, text))
                seen = min(round(chunk.end), round(meta[owner][1]))
                bar.update(max(0, seen - shown[owner]))
                shown[owner] = max(seen, shown[owner])
            while owner < len(inputs):
                yield finish(owner, segments)
                owner, segments = owner + 1, []

    def transcribe(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        beam_size: int | None = None,
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> Transcription:
        """Transcribe a file (any rate and channels soundfile reads) or a waveform.

        A waveform (numpy array or tensor, ``(samples,)``, ``(channels, samples)`` or
        ``(samples, channels)``) needs its ``sample_rate``. Raises :class:`AudioError` for unusable
        audio. Segments whose text came out empty are left out.
        """
        (result,) = self.iter_transcriptions([audio], sample_rate, beam_size, batch_size, progress)
        if isinstance(result, AsrError):
            raise result
        return result


def load_model(path: str | Path, device: str | torch.device | None = None, **options: Any) -> Transcriber:
    """Load a model bundle or training checkpoint as a :class:`Transcriber`.

    ``device`` defaults to CUDA when available, else the CPU; ``options`` go to :class:`Transcriber`.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return Transcriber(load_bundle(path, device), device, model_path=path, **options)


def transcribe(
    model: str | Path | Transcriber,
    audio: AudioInput,
    sample_rate: int | None = None,
    beam_size: int | None = None,
    device: str | torch.device | None = None,
) -> Transcription:
    """One-call transcription: ``model`` is a :class:`Transcriber` or the path of a model file."""
    transcriber = model if isinstance(model, Transcriber) else load_model(model, device)
    return transcriber.transcribe(audio, sample_rate, beam_size)
