"""Tests for asr_s2s.audio: decoding, downmix, resampling, windows and errors naming the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from conftest import noise, sine, write_audio

from asr_s2s.audio import (
    StreamResampler,
    array_blocks,
    as_mono,
    audio_info,
    load_audio,
    read_blocks,
    resample,
    to_mono,
)
from asr_s2s.errors import AsrError, AudioError


def _peak_hz(wave: np.ndarray | torch.Tensor, sr: int) -> float:
    x = np.asarray(wave, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def _ramp(n: int) -> np.ndarray:
    # Distinct, exactly representable values so that any misplaced sample shows.
    return ((np.arange(n) % 20000) / 32768.0).astype(np.float32)


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [(".wav", "PCM_16", 1 / 32768), (".wav", "FLOAT", 0.0), (".flac", "PCM_16", 1 / 32768)],
)
def test_lossless_formats_decode_exactly(tmp_path: Path, suffix: str, subtype: str, atol: float) -> None:
    wave = sine(440, 0.5, 16000, amp=0.6)
    path = write_audio(tmp_path / f"a{suffix}", wave, 16000, subtype)
    out, sr = load_audio(path)
    assert sr == 16000 and out.dtype == torch.float32 and out.shape == (len(wave),)
    np.testing.assert_allclose(out.numpy(), wave, atol=atol, rtol=0)


def test_ogg_vorbis_decodes(tmp_path: Path) -> None:
    wave = sine(1000, 0.5, 16000, amp=0.5)
    path = write_audio(tmp_path / "a.ogg", wave, 16000, "VORBIS")
    out, sr = load_audio(path, 16000)
    assert sr == 16000
    assert abs(len(out) - len(wave)) <= 16
    assert _peak_hz(out, sr) == pytest.approx(1000, abs=5)
    assert float(out.abs().max()) == pytest.approx(0.5, abs=0.1)


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    left, right = sine(300, 0.25, 16000, 0.4), sine(700, 0.25, 16000, 0.2)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000, "FLOAT")
    out, _ = load_audio(path)
    assert out.shape == (len(left),)
    np.testing.assert_allclose(out.numpy(), (left + right) / 2, atol=1e-7)
    assert audio_info(path) == (16000, len(left), 2)


def test_to_mono_passes_mono_through() -> None:
    x = np.arange(6, dtype=np.float32)
    assert to_mono(x) is x
    assert to_mono(x.reshape(3, 2)).tolist() == [0.5, 2.5, 4.5]


@pytest.mark.parametrize("orig_sr", [8000, 22050, 44100, 48000])
def test_resample_to_16k(tmp_path: Path, orig_sr: int) -> None:
    freq, seconds = 1234.0, 0.5
    wave = sine(freq, seconds, orig_sr, amp=0.5)
    path = write_audio(tmp_path / f"s{orig_sr}.wav", wave, orig_sr, "FLOAT")
    out, sr = load_audio(path, 16000)
    assert sr == 16000
    assert len(out) == math.ceil(len(wave) * 16000 / orig_sr)
    assert _peak_hz(out, 16000) == pytest.approx(freq, abs=4)
    reference = AF.resample(torch.from_numpy(wave), orig_sr, 16000)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    # The interior keeps the sine's amplitude (no aliasing or gain change).
    assert float(out[400:-400].abs().max()) == pytest.approx(0.5, abs=0.01)


def test_resample_identity_and_batched() -> None:
    x = torch.randn(3, 800)
    assert resample(x, 16000, 16000) is x
    y = resample(x, 8000, 16000)
    assert y.shape == (3, 1600)
    torch.testing.assert_close(y[1], resample(x[1], 8000, 16000))


def test_high_frequency_is_removed_when_downsampling(tmp_path: Path) -> None:
    # 7 kHz is representable at 16 kHz; 12 kHz (above 8 kHz Nyquist) must not alias into the band.
    wave = sine(12000, 0.5, 48000, amp=0.5)
    path = write_audio(tmp_path / "hf.wav", wave, 48000, "FLOAT")
    out, _ = load_audio(path, 16000)
    assert float(out[400:-400].abs().max()) < 0.02


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "FLOAT"), (".flac", "PCM_16")])
@pytest.mark.parametrize(("offset", "duration"), [(0.0, 0.5), (0.25, 0.5), (1.0, None), (1.9, 0.5)])
def test_offset_and_duration_read_exact_samples(
    tmp_path: Path, suffix: str, subtype: str, offset: float, duration: float | None
) -> None:
    sr = 16000
    wave = _ramp(2 * sr)
    path = write_audio(tmp_path / f"ramp{suffix}", wave, sr, subtype)
    out, _ = load_audio(path, sr, offset=offset, duration=duration)
    start = int(round(offset * sr))
    stop = len(wave) if duration is None else min(len(wave), start + int(round(duration * sr)))
    np.testing.assert_array_equal(out.numpy(), wave[start:stop])


def test_offset_window_with_resampling(tmp_path: Path) -> None:
    wave = sine(500, 2.0, 8000, amp=0.5)
    path = write_audio(tmp_path / "w.wav", wave, 8000, "FLOAT")
    out, _ = load_audio(path, 16000, offset=0.5, duration=1.0)
    assert len(out) == 16000
    reference = AF.resample(torch.from_numpy(wave[4000:12000]), 8000, 16000)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_offset_past_the_end(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "short.wav", sine(300, 0.5), 16000)
    with pytest.raises(AudioError, match="past the end") as info:
        load_audio(path, offset=2.0)
    assert str(info.value).startswith(str(path))
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path, offset=0.5)  # exactly at the end: nothing to read


def test_audio_info(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "i.flac", sine(300, 0.3, 22050), 22050)
    assert audio_info(path) == (22050, int(round(0.3 * 22050)), 1)


def _expect_error(path: Path, reason: str) -> None:
    for call in (lambda: load_audio(path, 16000), lambda: audio_info(path)):
        with pytest.raises(AudioError) as info:
            call()
        err = info.value
        assert isinstance(err, AsrError)
        assert err.path == str(path) and str(err).startswith(f"{path}: ")
        assert reason in err.reason, err.reason
        assert "\n" not in str(err)


def test_missing_file(tmp_path: Path) -> None:
    _expect_error(tmp_path / "missing.wav", "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "d.wav").mkdir()
    _expect_error(tmp_path / "d.wav", "not a file")


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _expect_error(path, "0 bytes")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "text.wav"
    path.write_text("this is not audio, just some text\n" * 20)
    _expect_error(path, "cannot decode audio")


def test_truncated_wav_header(tmp_path: Path) -> None:
    good = write_audio(tmp_path / "good.wav", sine(300, 0.2), 16000)
    path = tmp_path / "trunc.wav"
    path.write_bytes(good.read_bytes()[:30])  # RIFF header cut inside the fmt chunk
    _expect_error(path, "cannot decode audio")


def test_nan_samples_in_float_wav(tmp_path: Path) -> None:
    wave = sine(300, 0.2)
    wave[100] = np.nan
    path = write_audio(tmp_path / "nan.wav", wave, 16000, "FLOAT")
    with pytest.raises(AudioError, match="NaN") as info:
        load_audio(path)
    assert info.value.path == str(path)
    wave[100] = np.inf
    path = write_audio(tmp_path / "inf.wav", wave, 16000, "FLOAT")
    with pytest.raises(AudioError, match="infinite"):
        load_audio(path, 16000)


def test_real_fsdd_recording_is_resampled() -> None:
    from conftest import fsdd_files

    path = fsdd_files("0_george_0.wav")[0]
    sr_file, frames, channels = audio_info(path)
    assert (sr_file, channels) == (8000, 1)
    out, sr = load_audio(path, 16000)
    raw, _ = sf.read(str(path), dtype="float32")
    assert len(out) == 2 * frames
    torch.testing.assert_close(out, AF.resample(torch.from_numpy(raw), 8000, 16000), atol=1e-5, rtol=0)


# ---- streaming: blocks of long files, resampled piece by piece ---------------------------------

SR = 16000


def test_stream_resampler_matches_whole_signal() -> None:
    rng = np.random.default_rng(0)
    for orig, new, step in [(44100, 16000, 12345), (8000, 16000, 777), (48000, 16000, 4800)]:
        x = rng.standard_normal(orig * 2 + 13).astype(np.float32)
        whole = resample(torch.from_numpy(x), orig, new).numpy()
        stream = StreamResampler(orig, new)
        pieces = [stream.push(x[i : i + step]) for i in range(0, len(x), step)] + [stream.flush()]
        np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)


def test_read_blocks_matches_load_audio(tmp_path: Path) -> None:
    stereo = np.stack([noise(3.0, 44100, seed=1), sine(700, 3.0, 44100, amp=0.3)], axis=1)
    path = write_audio(tmp_path / "long.flac", stereo, 44100)
    blocks = list(read_blocks(path, SR, block_seconds=0.7))
    assert len(blocks) > 3
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(path, SR)[0].numpy(), atol=1e-5)


def test_array_blocks_match_resampling_whole() -> None:
    x = noise(3.3, 44100, seed=2)
    whole = resample(torch.from_numpy(x), 44100, SR).numpy()
    for block_seconds in (0.5, 10.0):
        blocks = list(array_blocks(x, 44100, SR, block_seconds=block_seconds))
        assert (len(blocks) > 3) == (block_seconds == 0.5)
        np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)


def test_as_mono_layouts_and_integer_pcm() -> None:
    left, right = sine(300, 0.1), sine(500, 0.1, amp=0.2)
    mono = (left + right) / 2
    both = np.stack([left, right])
    for wave in (both, both.T, torch.from_numpy(both)):
        np.testing.assert_allclose(as_mono(wave), mono, atol=1e-7)
    pcm = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    np.testing.assert_allclose(as_mono(pcm), pcm / 32768.0, atol=1e-4)
    assert as_mono(np.array([0, 128, 255], dtype=np.uint8))[1] == 0.0
    for bad, match in [(np.zeros(0), "no audio"), (np.array([0.0, np.nan]), "NaN")]:
        with pytest.raises(AudioError, match=match):
            as_mono(bad)
    with pytest.raises(ValueError, match="dimensions"):
        as_mono(np.zeros((2, 2, 2)))
