"""Tests for asr_s2s.segment: silence splitting of a block stream, on its own (no model)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from conftest import noise, sine

from asr_s2s.segment import MIN_GAP_SECONDS, PAD_SECONDS, SilenceSplitter

SR = 16000


def _stream(bursts: list[tuple[float, float]], seconds: float) -> np.ndarray:
    wave = noise(seconds, SR, amp=1e-4, seed=1)
    for start, end in bursts:
        a, b = int(start * SR), int(end * SR)
        wave[a:b] += sine(440, end - start, SR, amp=0.3)[: b - a]
    return wave


def _split(wave: np.ndarray, block: int, max_seconds: float = 10.0) -> list[tuple[int, np.ndarray]]:
    splitter = SilenceSplitter(SR, top_db=40.0, max_seconds=max_seconds)
    chunks = []
    for start in range(0, len(wave), block):
        chunks += splitter.push(wave[start : start + block])
    return chunks + splitter.flush()


def test_one_padded_chunk_per_burst_matching_librosa() -> None:
    bursts = [(0.5, 1.2), (2.0, 3.5), (4.4, 4.9)]
    wave = _stream(bursts, 6.0)
    chunks = _split(wave, len(wave))
    assert len(chunks) == len(bursts)
    hop = SR // 100
    reference = librosa.effects.split(wave, top_db=40.0, frame_length=4 * hop, hop_length=hop)
    pad = int(PAD_SECONDS * SR)
    for (start, chunk), (s, e) in zip(chunks, reference.tolist()):
        assert start == max(0, s - pad) and start + len(chunk) == min(len(wave), e + pad)
        np.testing.assert_array_equal(chunk, wave[start : start + len(chunk)])  # the stream's own samples


def test_block_size_does_not_change_the_chunks() -> None:
    wave = _stream([(0.3, 1.9), (2.5, 2.9), (3.2, 5.5), (6.0, 7.7)], 8.0)
    whole = [(s, s + len(c)) for s, c in _split(wave, len(wave), max_seconds=3.0)]
    for block in (SR // 3, SR, 2 * SR + 17):
        spans = [(s, s + len(c)) for s, c in _split(wave, block, max_seconds=3.0)]
        # The analysis frames start where the buffer starts, so a boundary may move by up to one
        # hop (10 ms) with the block size; the chunks stay the same ones.
        assert len(spans) == len(whole)
        assert np.abs(np.array(spans) - np.array(whole)).max() <= SR // 100


def test_pause_shorter_than_the_minimum_gap_does_not_split() -> None:
    gap = MIN_GAP_SECONDS / 2
    wave = _stream([(0.5, 1.5), (1.5 + gap, 2.5)], 3.5)
    assert len(_split(wave, SR)) == 1
    wave = _stream([(0.5, 1.5), (1.5 + 3 * MIN_GAP_SECONDS, 2.5 + 3 * MIN_GAP_SECONDS)], 4.0)
    assert len(_split(wave, SR)) == 2


def test_continuous_sound_is_cut_back_to_back_within_the_limit() -> None:
    wave = sine(300, 9.0, SR) + noise(9.0, SR, amp=0.05)
    chunks = _split(wave, SR, max_seconds=2.0)
    assert len(chunks) >= 5
    spans = [(s, s + len(c)) for s, c in chunks]
    assert spans[0][0] == 0 and spans[-1][1] == len(wave)
    assert all(e0 == s1 for (_, e0), (s1, _) in zip(spans, spans[1:]))
    assert all(e - s <= 2.0 * SR for s, e in spans)


@pytest.mark.parametrize("amp", [0.0, 1e-5])
def test_silence_or_faint_noise_gives_no_chunks(amp: float) -> None:
    wave = noise(5.0, SR, amp=amp) if amp else np.zeros(5 * SR, dtype=np.float32)
    assert _split(wave, SR) == []
