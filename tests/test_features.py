"""Tests for asr_s2s.features: log-mel against librosa, statistics, SpecAugment."""

from __future__ import annotations

import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import noise, sine

from asr_s2s.config import FeatureConfig
from asr_s2s.features import LogMel, RunningStats, SpecAugment, compute_stats


def _librosa_logmel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        win_length=cfg.win_length,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        power=2.0,
        center=True,
        pad_mode="constant",
    )
    return np.log(np.maximum(mel, cfg.log_floor)).T  # (frames, n_mels)


@pytest.mark.parametrize(
    "signal",
    [
        lambda: noise(1.0, amp=0.1, seed=3),
        lambda: sine(440, 1.0, amp=0.5) + sine(3100, 1.0, amp=0.05),
        lambda: np.concatenate([np.zeros(3000, np.float32), sine(900, 0.3, amp=0.3)]),  # floor hit
    ],
    ids=["noise", "two-sines", "silence-then-tone"],
)
def test_logmel_matches_librosa(signal) -> None:
    cfg = FeatureConfig()
    y = signal().astype(np.float32)
    out = LogMel(cfg)(torch.from_numpy(y)).numpy()
    ref = _librosa_logmel(y, cfg)
    assert out.shape == ref.shape == (1 + len(y) // 160, 80)
    assert np.abs(out - ref).max() < 1e-3


def test_logmel_matches_librosa_on_real_librispeech(librispeech_flac: Path) -> None:
    cfg = FeatureConfig()
    y, sr = sf.read(str(librispeech_flac), dtype="float32")
    assert sr == 16000
    out = LogMel(cfg)(torch.from_numpy(y)).numpy()
    ref = _librosa_logmel(y, cfg)
    assert out.shape == ref.shape
    assert np.abs(out - ref).max() < 1e-3
    assert out.std() > 1.0  # real speech: a wide dynamic range, not a constant


def test_logmel_other_sizes_match_librosa() -> None:
    cfg = FeatureConfig(sample_rate=8000, n_mels=40, n_fft=256)
    y = noise(0.5, sr=8000, amp=0.2, seed=1)
    out = LogMel(cfg)(torch.from_numpy(y)).numpy()
    ref = _librosa_logmel(y, cfg)
    assert out.shape == (1 + len(y) // cfg.hop_length, 40)
    assert np.abs(out - ref).max() < 1e-3


@pytest.mark.parametrize("samples", [1, 159, 160, 161, 399, 400, 401, 4800, 16000, 16001])
def test_frame_count_formula(samples: int) -> None:
    extractor = LogMel(FeatureConfig(n_mels=20))
    out = extractor(torch.zeros(samples).uniform_(-0.1, 0.1))
    assert out.shape == (extractor.num_frames(samples), 20)
    assert extractor.num_frames(samples) == 1 + samples // 160
    assert (
        out.shape[0]
        == librosa.util.frame(np.pad(np.zeros(samples), 256), frame_length=512, hop_length=160).shape[-1]
    )


def test_silence_gives_the_log_floor() -> None:
    cfg = FeatureConfig(log_floor=1e-6)
    out = LogMel(cfg)(torch.zeros(1600))
    assert torch.allclose(out, torch.full_like(out, math.log(1e-6)))


def test_batched_waveforms() -> None:
    extractor = LogMel(FeatureConfig(n_mels=20))
    waves = torch.randn(2, 3200) * 0.1
    out = extractor(waves)
    assert out.shape == (2, 21, 20)
    torch.testing.assert_close(out[1], extractor(waves[1]))


def test_running_stats_equal_concatenated_mean_std() -> None:
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 8, generator=gen) * 3 + 7 for n in (5, 1, 40, 13)]
    stats = RunningStats(8)
    for c in chunks:
        stats.update(c)
    mean, std = stats.result()
    everything = torch.cat(chunks).double()
    torch.testing.assert_close(mean, everything.mean(0).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(std, everything.std(0, unbiased=False).float(), atol=1e-5, rtol=0)
    assert mean.dtype == std.dtype == torch.float32
    m2, s2 = compute_stats(iter(chunks), 8)
    torch.testing.assert_close(m2, mean)
    torch.testing.assert_close(s2, std)


def test_running_stats_large_offset_small_spread() -> None:
    # Log-mels sit around -10 with small spread in some bins: no catastrophic cancellation.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5000, 4, generator=gen, dtype=torch.float64) * 0.01 - 1000.0
    stats = RunningStats(4)
    for part in x.split(333):
        stats.update(part.float())
    mean, std = stats.result(min_std=1e-6)
    ref = x.float().double()
    torch.testing.assert_close(mean.double(), ref.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(std.double(), ref.std(0, unbiased=False), atol=2e-4, rtol=0.05)


def test_running_stats_constant_dim_gets_min_std_and_empty_is_error() -> None:
    stats = RunningStats(2)
    stats.update(torch.tensor([[1.0, 5.0], [3.0, 5.0]]))
    mean, std = stats.result(min_std=1e-3)
    assert mean.tolist() == [2.0, 5.0]
    assert std.tolist() == pytest.approx([1.0, 1e-3])
    with pytest.raises(ValueError):
        RunningStats(2).result()


def _padded_batch(lengths: list[int], n_mels: int = 40, pad_value: float = 123.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    feats = torch.full((len(lengths), max(lengths), n_mels), pad_value)
    for i, n in enumerate(lengths):
        feats[i, :n] = torch.randn(n, n_mels, generator=gen) - 5.0
    return feats


def test_spec_augment_masks_only_inside_each_utterance() -> None:
    cfg = FeatureConfig(n_mels=40, freq_masks=2, freq_mask_width=8, time_masks=2, time_mask_width=20)
    augment = SpecAugment(cfg)
    lengths = torch.tensor([120, 70, 25])
    feats = _padded_batch(lengths.tolist())
    original = feats.clone()
    torch.manual_seed(0)
    changed_any = torch.zeros(len(lengths), dtype=torch.bool)
    for _ in range(10):
        out = augment(feats, lengths)
        assert out.shape == feats.shape and out.dtype == feats.dtype
        assert torch.equal(feats, original)  # input untouched
        for i, n in enumerate(lengths.tolist()):
            assert torch.all(out[i, n:] == 123.0)  # padding untouched
            changed = out[i, :n] != original[i, :n]
            changed_any[i] |= bool(changed.any())
            # Masked cells hold the utterance's own mean, nothing else.
            fill = float(original[i, :n].mean())
            assert torch.allclose(out[i, :n][changed], torch.tensor(fill), atol=1e-5)
            # Masks are whole stripes: a masked cell's frequency row or time column is masked through.
            rows_full = changed.all(dim=0)  # (n_mels,) fully masked frequency channels
            cols_full = changed.all(dim=1)  # (time,) fully masked frames
            covered = rows_full[None, :] | cols_full[:, None]
            assert torch.equal(changed, changed & covered)
            assert int(rows_full.sum()) <= 2 * 8
            assert int(cols_full.sum()) <= 2 * min(20, int(0.2 * n))
    assert bool(changed_any.all())  # it does something, on every utterance


def test_spec_augment_is_reproducible_from_the_torch_seed() -> None:
    augment = SpecAugment(FeatureConfig(n_mels=40))
    feats, lengths = _padded_batch([80, 50]), torch.tensor([80, 50])
    torch.manual_seed(7)
    a = augment(feats, lengths)
    torch.manual_seed(7)
    b = augment(feats, lengths)
    assert torch.equal(a, b)


def test_running_stats_merge_equals_one_pass() -> None:
    rng = np.random.default_rng(0)
    parts = [torch.from_numpy(rng.standard_normal((n, 4)).astype(np.float32)) for n in (3, 10, 1)]
    whole = RunningStats(4)
    for p in parts:
        whole.update(p)
    merged = RunningStats(4)
    for p in parts:
        one = RunningStats(4)
        one.update(p)
        merged.merge(one)
    assert merged.count == whole.count == 14
    for a, b in zip(merged.result(), whole.result()):
        torch.testing.assert_close(a, b)


def test_stats_file_round_trip_and_errors(tmp_path: Path) -> None:
    from asr_s2s.errors import ConfigError
    from asr_s2s.features import read_stats, write_stats

    mean, std = torch.linspace(-3, 3, 5), torch.linspace(0.5, 2, 5)
    write_stats(tmp_path / "s.json", mean, std, utterances=7)
    got_mean, got_std = read_stats(tmp_path / "s.json", 5)
    assert torch.equal(got_mean, mean) and torch.equal(got_std, std)
    with pytest.raises(ConfigError, match="statistics for 5 mel bins, but features.n_mels is 80"):
        read_stats(tmp_path / "s.json", 80)
    with pytest.raises(ConfigError, match="cannot read feature statistics"):
        read_stats(tmp_path / "missing.json", 5)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not a feature statistics file"):
        read_stats(tmp_path / "bad.json", 5)
    write_stats(tmp_path / "zero.json", mean, torch.zeros(5))
    with pytest.raises(ConfigError, match="non-positive std"):
        read_stats(tmp_path / "zero.json", 5)


def test_stats_cli_matches_the_sample(tiny_manifest, tmp_path: Path) -> None:
    import json

    from asr_s2s.cli import main
    from asr_s2s.data import sample_indices
    from asr_s2s.manifest import read_manifest

    manifest = tiny_manifest([f"u{i}" for i in range(5)], seconds=[0.1 + 0.05 * i for i in range(5)])
    out = tmp_path / "stats.json"
    argv = ["stats", "--manifest", str(manifest), "--out", str(out), "--set", "features.n_mels=20"]
    assert main([*argv, "--set", "train.stats_utterances=3", "--set", "train.seed=4"]) == 0
    record = json.loads(out.read_text())
    assert record["n_mels"] == 20 and record["utterances"] == 3
    extractor = LogMel(FeatureConfig(n_mels=20))
    utts = read_manifest(manifest)
    frames = []
    for i in sample_indices(5, 3, seed=4):
        wave, _ = sf.read(utts[i].audio_filepath, dtype="float32")
        frames.append(extractor(torch.from_numpy(wave)).double().numpy())
    np.testing.assert_allclose(record["mean"], np.concatenate(frames).mean(0), rtol=1e-5, atol=1e-5)
