"""Silence segmentation of a stream of audio blocks into chunks short enough to decode at once.

:class:`SilenceSplitter` finds the non-silent runs with :func:`librosa.effects.split`, joins runs
separated by short pauses, cuts runs too long for one chunk at their quietest frame, and pads each
chunk with some of the surrounding silence. It keeps only the unfinished tail of the stream in
memory, so recordings of any length are segmented in bounded memory.
"""

from __future__ import annotations

import librosa
import numpy as np

# Silences shorter than this do not split a chunk: stop consonants and short pauses are not breaks.
MIN_GAP_SECONDS = 0.3
# Silence kept around each chunk, like the silence around training utterances.
PAD_SECONDS = 0.2
# Split's reference level never drops below this (dBFS), so that a recording of near-silence is
# not split as if its faint noise were speech.
REF_FLOOR_DB = -50.0


class SilenceSplitter:
    """Cuts a stream of blocks at silences into chunks of at most ``max_seconds``.

    Non-silent runs come from :func:`librosa.effects.split` (``top_db`` below the loudest frame so
    far); runs closer than ``MIN_GAP_SECONDS`` join; a run too long for one chunk is cut at its
    quietest frame. Chunks get up to ``PAD_SECONDS`` of the surrounding silence and never overlap.
    A run reaching the end of the buffer stays buffered until the next block shows where it ends.
    """

    def __init__(self, sample_rate: int, top_db: float, max_seconds: float) -> None:
        self.hop = max(1, sample_rate // 100)
        self.frame = 4 * self.hop
        self.pad = int(PAD_SECONDS * sample_rate)
        self.min_gap = int(MIN_GAP_SECONDS * sample_rate)
        self.max_speech = int(max_seconds * sample_rate) - 2 * self.pad
        self.top_db = top_db
        self.peak = 10.0 ** (REF_FLOOR_DB / 20.0)  # RMS amplitude
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
