"""Transcription of audio files and waveforms of any length, whisper-style.

>>> model = load_model("exp/digits/model.pt")
>>> result = model.transcribe("meeting.flac")
>>> result.text, [(s.start, s.end, s.text) for s in result.segments]

:class:`Transcriber` composes the parts: audio read in blocks at the model's rate
(:mod:`asr_s2s.audio`), split at silences (:mod:`asr_s2s.segment`) into chunks of at most
``decode.max_chunk_seconds``, features (:mod:`asr_s2s.features`) and the search
(:mod:`asr_s2s.decoding`). Inputs no longer than one chunk are decoded whole, as in training;
memory stays bounded whatever the length of the recording.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from asr_s2s.audio import array_blocks, as_mono, audio_info, check_sample_rate, read_blocks
from asr_s2s.checkpoint import ModelBundle, load_bundle
from asr_s2s.config import Config, DecodeConfig
from asr_s2s.decoding import check_search, decode
from asr_s2s.errors import AsrError, AudioError, ConfigError
from asr_s2s.features import LogMel, pad_features
from asr_s2s.lm import CharLM, load_lm
from asr_s2s.model import Seq2Seq
from asr_s2s.segment import SilenceSplitter
from asr_s2s.text import Vocabulary
from asr_s2s.word_lm import WordLM, is_word_list

log = logging.getLogger(__name__)

AudioInput = str | Path | np.ndarray | torch.Tensor

MIN_CHUNK_SECONDS = 1.0  # lower bound: room for a word plus the silence padding around it
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


# The stream that :meth:`Transcriber.iter_transcriptions` passes from stage to stage: for each input
# in order, a _Start, its _Chunks and an _End, or a _Failed (possibly after some chunks).
@dataclass
class _Start:
    owner: int
    path: str | None
    duration: float


@dataclass
class _Chunk:
    """Part ``start``..``end`` (seconds) of input ``owner``; ``wave`` ``(samples,)`` at the model rate."""

    owner: int
    start: float
    end: float
    wave: np.ndarray


@dataclass
class _End:
    owner: int


@dataclass
class _Failed:
    owner: int
    error: AsrError


_Event = _Start | _Chunk | _End | _Failed


def read_lm(path: str | Path, device: torch.device, vocab: Vocabulary) -> CharLM | WordLM:
    """The LM file of ``--lm``: a character LM (``asr-s2s train-lm``) or a ``word count`` list."""
    if Path(path).is_file() and is_word_list(path):
        return WordLM.from_file(path, vocab)
    return load_lm(path, device, vocab=vocab).lm


class Transcriber:
    """A loaded model with its feature extractor: decodes waveforms, files and long recordings.

    ``top_db``: how far below the loudest frame (dB) audio counts as silence when splitting long
    inputs. ``max_chunk_seconds``: the longest chunk decoded at once (at least
    ``MIN_CHUNK_SECONDS``); by default the model's ``decode.max_chunk_seconds``. ``lm``: a character
    LM (file or :class:`asr_s2s.lm.CharLM`) or a word list with counts (file or
    :class:`asr_s2s.word_lm.WordLM`) for shallow fusion; ``ctc_weight``, ``lm_weight`` and
    ``length_bonus`` replace the model's ``decode`` values when given (see :mod:`asr_s2s.decoding`).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device | None = None,
        top_db: float = 40.0,
        max_chunk_seconds: float | None = None,
        model_path: str | Path | None = None,
        lm: str | Path | CharLM | WordLM | None = None,
        ctc_weight: float | None = None,
        lm_weight: float | None = None,
        length_bonus: float | None = None,
    ) -> None:
        weights = {"ctc_weight": ctc_weight, "lm_weight": lm_weight, "length_bonus": length_bonus}
        weights = {name: float(value) for name, value in weights.items() if value is not None}
        if weights:
            searched = dataclasses.replace(bundle.config.decode, **weights)
            bundle = dataclasses.replace(bundle, config=dataclasses.replace(bundle.config, decode=searched))
        self.bundle = bundle
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.extractor = LogMel(bundle.config.features).to(self.device)
        self.top_db = top_db
        if max_chunk_seconds is None:
            max_chunk_seconds = bundle.config.decode.max_chunk_seconds
        if max_chunk_seconds < MIN_CHUNK_SECONDS:
            raise ConfigError(
                f"max_chunk_seconds must be at least {MIN_CHUNK_SECONDS}, got {max_chunk_seconds}"
            )
        self.max_chunk_seconds = float(max_chunk_seconds)
        self.model_path = None if model_path is None else str(model_path)
        self.lm_path = str(lm) if isinstance(lm, str | Path) else None
        if isinstance(lm, str | Path):
            lm = read_lm(lm, self.device, self.vocab)
        self.lm = None if lm is None else lm.to(self.device).eval()
        check_search(self.model, self.config.decode, self.lm)

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
        ids = decode(self.model, feats.to(self.device), lengths.to(self.device), cfg, lm=self.lm)
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
            return None, len(wave) / sample_rate, array_blocks(wave, sample_rate, self.sample_rate)
        raise TypeError(f"expected a path, numpy array or tensor, got {type(audio).__name__}")

    def _chunks(self, owner: int, blocks: Iterator[np.ndarray], duration: float) -> Iterator[_Chunk]:
        sr = self.sample_rate
        if duration <= self.max_chunk_seconds:
            wave = np.concatenate(list(blocks))
            yield _Chunk(owner, 0.0, len(wave) / sr, wave)
            return
        splitter = SilenceSplitter(sr, self.top_db, self.max_chunk_seconds)
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

    def _events(self, inputs: Sequence[AudioInput], sample_rate: int | None) -> Iterator[_Event]:
        # Stage 1: each input opened, read and chunked; a failure ends that input only.
        for i, audio in enumerate(inputs):
            try:
                path, duration, blocks = self._open(audio, sample_rate)
                yield _Start(i, path, duration)
                yield from self._chunks(i, blocks, duration)
                yield _End(i)
            except AsrError as err:
                yield _Failed(i, err)

    def _decoded(
        self, events: Iterable[_Event], beam_size: int, size: int
    ) -> Iterator[tuple[_Event, str]]:
        # Stage 2: a window of events is held at a time, long enough to sort its chunks into batches
        # of similar length, short enough to bound memory; the events come out in order, each chunk
        # with its text (other events with "").
        window: list[_Event] = []
        chunks: list[_Chunk] = []
        samples = 0
        limit = int(_WINDOW_SECONDS * self.sample_rate)
        for event in events:
            window.append(event)
            if isinstance(event, _Chunk):
                chunks.append(event)
                samples += len(event.wave)
            if samples >= limit or len(chunks) >= size * _WINDOW_BATCHES:
                yield from self._flush(window, chunks, beam_size, size)
                window, chunks, samples = [], [], 0
        yield from self._flush(window, chunks, beam_size, size)

    def _flush(
        self, window: list[_Event], chunks: list[_Chunk], beam_size: int, size: int
    ) -> Iterator[tuple[_Event, str]]:
        texts = iter(self.decode([c.wave for c in chunks], beam_size, size) if chunks else [])
        for event in window:
            yield event, next(texts) if isinstance(event, _Chunk) else ""

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
        with tqdm(total=0, unit="s", desc="transcribe", disable=not progress or None) as bar:
            # Stage 3: the ordered stream becomes one result per input.
            start: _Start | None = None
            segments: list[Segment] = []
            shown = 0  # seconds of the current input counted on the bar
            for event, text in self._decoded(self._events(inputs, sample_rate), beam, size):
                if isinstance(event, _Start):
                    start, segments, shown = event, [], 0
                    bar.total = (bar.total or 0) + round(event.duration)
                    bar.refresh()
                elif isinstance(event, _Chunk):
                    if text:
                        segments.append(Segment(event.start, event.end, text))
                    seen = min(round(event.end), round(start.duration)) if start else 0
                    bar.update(max(0, seen - shown))
                    shown = max(seen, shown)
                elif isinstance(event, _End) and start is not None:
                    bar.update(round(start.duration) - shown)
                    text = " ".join(s.text for s in segments)
                    yield Transcription(text, segments, start.path, start.duration)
                elif isinstance(event, _Failed):
                    yield event.error

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
