"""Tests for asr_s2s.augment: each method against an independent measurement (FFT peaks, SNR, decay
slopes, torchaudio's own functionals), identities at factor 1 / SNR inf / probability 0, and the
seeding (same draws for the same (seed, epoch, index), new ones for another epoch, any worker)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio
from conftest import build_manifest, noise, sine, tiny_config, write_audio
from torch.utils.data import DataLoader

from asr_s2s.augment import (
    REVERB_DRR_DB,
    Augmenter,
    VtlpFilterbank,
    colored_noise,
    mix_noise,
    reverberate,
    spec_augment_scale,
    speed_perturb,
    synthetic_rir,
    tempo_stretch,
    utterance_generator,
    vtlp_warp,
)
from asr_s2s.checkpoint import load_file
from asr_s2s.config import AugmentConfig, Config, ConfigError, FeatureConfig, apply_overrides
from asr_s2s.data import AsrDataset
from asr_s2s.features import LogMel, SpecAugment
from asr_s2s.manifest import read_manifest
from asr_s2s.text import Vocabulary
from asr_s2s.train import Interrupted, Trainer

SR = 16000


def _peak_hz(wave: torch.Tensor | np.ndarray, sr: int = SR) -> float:
    x = np.asarray(wave, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def _cfg(**values) -> AugmentConfig:
    return AugmentConfig(**values)


def _augmenter(seed: int = 0, **values) -> Augmenter:
    return Augmenter(_cfg(**values), LogMel(FeatureConfig(n_mels=40)), seed)


ALL_ON = dict(speed_prob=0.5, tempo_prob=0.5, vtlp_prob=0.5, noise_prob=0.5, reverb_prob=0.5)


# ---- config ------------------------------------------------------------------------------------
def test_defaults_are_off() -> None:
    cfg = Config().augment
    assert not cfg.waveform and cfg.specaug_start_step == 0 and cfg.specaug_ramp_steps == 0
    assert _cfg(noise_prob=0.1).waveform


def test_list_options_from_set_and_validation() -> None:
    config = apply_overrides(Config(), ["augment.speed_factors=0.9,1.1", "augment.noise_snr_db=[0, 20]"])
    assert config.augment.speed_factors == [0.9, 1.1] and config.augment.noise_snr_db == [0.0, 20.0]
    assert Config.from_dict(config.to_dict()) == config
    for bad in (
        "augment.speed_factors=0.91234",  # 14597.44 Hz: not a whole resampling rate
        "augment.noise_colors=red",
        "augment.reverb_prob=1.5",
        "augment.vtlp_alpha=[1.1, 0.9]",
        "augment.noise_snr_db=10",
        "augment.specaug_ramp_steps=-1",
    ):
        with pytest.raises(ConfigError):
            apply_overrides(Config(), [bad])


# ---- seeding -----------------------------------------------------------------------------------
def test_utterance_generator_depends_on_every_part_only() -> None:
    def draw(*key: int) -> torch.Tensor:
        return torch.rand(4, generator=utterance_generator(*key))

    assert torch.equal(draw(1, 2, 3, 0), draw(1, 2, 3, 0))
    torch.manual_seed(5)  # the global RNG plays no part
    assert torch.equal(draw(1, 2, 3, 0), draw(1, 2, 3, 0))
    others = [draw(2, 2, 3, 0), draw(1, 3, 3, 0), draw(1, 2, 4, 0), draw(1, 2, 3, 1)]
    assert all(not torch.equal(draw(1, 2, 3, 0), o) for o in others)


# ---- speed and tempo ---------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_is_torchaudio_speed_and_moves_pitch(factor: float) -> None:
    wave = torch.from_numpy(sine(440, 1.0))
    out = speed_perturb(wave, SR, factor)
    reference, _ = torchaudio.functional.speed(wave, SR, factor)
    torch.testing.assert_close(out, reference)
    assert len(out) == math.ceil(len(wave) / factor)
    assert _peak_hz(out) == pytest.approx(440 * factor, abs=2.0)


def _stft(wave: torch.Tensor) -> torch.Tensor:
    cfg = FeatureConfig()  # the log-mel's STFT: 512 points, 25 ms Hann window, 10 ms hop
    window = torch.hann_window(cfg.win_length)
    return torch.stft(wave, cfg.n_fft, cfg.hop_length, cfg.win_length, window, pad_mode="constant",
                      return_complex=True)


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.25])
def test_tempo_stretch_is_the_phase_vocoders_magnitude(factor: float) -> None:
    wave = torch.from_numpy(sine(440, 0.8) + noise(0.8, amp=0.05))
    spec = _stft(wave)
    advance = torch.linspace(0, math.pi * FeatureConfig().hop_length, spec.shape[0])[:, None]
    reference = torchaudio.functional.phase_vocoder(spec, factor, advance).abs().pow(2)
    out = tempo_stretch(spec.abs().pow(2), factor)
    assert out.shape == reference.shape == (spec.shape[0], math.ceil(spec.shape[1] / factor))
    # All but the last frame, which the phase vocoder fades towards its zero padding.
    torch.testing.assert_close(out[:, :-1], reference[:, :-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_tempo_keeps_pitch_and_speed_does_not(factor: float) -> None:
    extractor = LogMel(FeatureConfig())
    wave = torch.from_numpy(sine(1000, 0.5))
    plain = extractor(wave)
    stretched = extractor.log_mel(tempo_stretch(extractor.mel.spectrogram(wave), factor))
    assert stretched.shape[0] == math.ceil(plain.shape[0] / factor)
    assert int(stretched[5:-5].mean(0).argmax()) == int(plain[5:-5].mean(0).argmax())
    sped = extractor(speed_perturb(wave, SR, factor))
    assert int(sped[5:-5].mean(0).argmax()) != int(plain[5:-5].mean(0).argmax())


def test_speed_and_tempo_are_identities_at_one() -> None:
    wave = torch.from_numpy(noise(0.5))
    assert torch.equal(speed_perturb(wave, SR, 1.0), wave)
    power = _stft(wave).abs().pow(2)
    assert torch.equal(tempo_stretch(power, 1.0), power)


# ---- noise -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_colored_noise_power_slope(color: str, slope: float) -> None:
    x = colored_noise(2**16, color, torch.Generator().manual_seed(0)).numpy()
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x))
    band = (freqs > 1e-3) & (freqs < 0.4)
    # Power averaged in log-spaced bands, then the slope of log power against log frequency.
    edges = np.logspace(np.log10(1e-3), np.log10(0.4), 20)
    centers, levels = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = band & (freqs >= lo) & (freqs < hi)
        centers.append(np.log10(np.sqrt(lo * hi)))
        levels.append(np.log10(power[sel].mean()))
    assert np.polyfit(centers, levels, 1)[0] == pytest.approx(slope, abs=0.15)


@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_mix_noise_reaches_the_snr(snr: float) -> None:
    wave = torch.from_numpy(sine(300, 0.5))
    n = colored_noise(len(wave), "pink", torch.Generator().manual_seed(1))
    out = mix_noise(wave, n, snr)
    added = out - wave
    measured = 10 * math.log10(float(wave.pow(2).sum()) / float(added.pow(2).sum()))
    assert measured == pytest.approx(snr, abs=1e-3)


def test_mix_noise_identity_at_infinite_snr() -> None:
    wave = torch.from_numpy(noise(0.3))
    assert torch.equal(mix_noise(wave, torch.randn(len(wave)), math.inf), wave)


# ---- reverberation -----------------------------------------------------------------------------
@pytest.mark.parametrize("rt60", [0.2, 0.6])
def test_synthetic_rir_decays_60_db_per_rt60_at_the_drr(rt60: float) -> None:
    rir = synthetic_rir(SR, rt60, drr_db=5.0, generator=torch.Generator().manual_seed(0)).numpy()
    assert rir[0] == 1.0
    tail = rir[1:]
    assert 10 * math.log10(1.0 / float((tail**2).sum())) == pytest.approx(5.0, abs=1e-3)
    # Schroeder backward integration: the energy decay curve falls linearly, 60 dB per RT60.
    edc = 10 * np.log10(np.cumsum((tail**2)[::-1])[::-1] / float((tail**2).sum()))
    t = np.arange(len(tail)) / SR
    fit = (edc > -35) & (edc < -5)
    assert -60.0 / np.polyfit(t[fit], edc[fit], 1)[0] == pytest.approx(rt60, rel=0.1)


def test_reverberate_keeps_length_and_level() -> None:
    wave = torch.from_numpy(sine(500, 0.7) * np.hanning(int(0.7 * SR)).astype(np.float32))
    rir = synthetic_rir(SR, 0.5, 3.0, torch.Generator().manual_seed(2))
    out = reverberate(wave, rir)
    assert out.shape == wave.shape
    assert float(out.pow(2).mean()) == pytest.approx(float(wave.pow(2).mean()), rel=1e-4)
    # A click comes out as the response itself (up to the level), the convolution's definition.
    click = torch.zeros(SR)
    click[0] = 1.0
    echo = reverberate(click, rir)
    scale = float(echo[0])
    torch.testing.assert_close(echo[: len(rir)] / scale, rir[: min(len(rir), SR)], atol=1e-5, rtol=1e-4)
    # A response that is only the direct path changes nothing.
    delta = torch.zeros(100)
    delta[0] = 1.0
    torch.testing.assert_close(reverberate(wave, delta), wave, atol=1e-6, rtol=1e-5)


# ---- VTLP --------------------------------------------------------------------------------------
def test_vtlp_warp_is_monotone_and_fixes_the_ends() -> None:
    freqs = torch.linspace(0, 8000, 1001, dtype=torch.float64)
    for alpha in (0.9, 1.0, 1.1):
        warped = vtlp_warp(freqs, alpha, 8000.0)
        assert float(warped[0]) == 0.0 and float(warped[-1]) == pytest.approx(8000.0)
        assert bool((warped.diff() > 0).all())
        assert float(warped[100]) == pytest.approx(alpha * float(freqs[100]))  # 800 Hz: linear part
    assert torch.equal(vtlp_warp(freqs, 1.0, 8000.0), freqs)


def test_vtlp_at_one_is_the_extractors_filterbank() -> None:
    extractor = LogMel(FeatureConfig())
    bank = VtlpFilterbank(extractor)(1.0)
    torch.testing.assert_close(bank, extractor.mel.mel_scale.fb, atol=1e-7, rtol=1e-5)
    wave = torch.from_numpy(noise(0.3))
    torch.testing.assert_close(extractor(wave, bank), extractor(wave), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_moves_a_tone_as_if_it_were_alpha_times_higher(alpha: float) -> None:
    extractor = LogMel(FeatureConfig())
    bank = VtlpFilterbank(extractor)(alpha)
    warped = extractor(torch.from_numpy(sine(1500, 0.3)), bank).mean(0)
    moved = extractor(torch.from_numpy(sine(1500 * alpha, 0.3))).mean(0)
    original = extractor(torch.from_numpy(sine(1500, 0.3))).mean(0)
    assert int(warped.argmax()) == int(moved.argmax()) != int(original.argmax())


# ---- the augmenter -----------------------------------------------------------------------------
def test_probability_zero_is_the_plain_features() -> None:
    augment = _augmenter()
    wave = torch.from_numpy(noise(0.4))
    assert torch.equal(augment(wave, epoch=3, index=7), augment.extractor(wave))


def test_certain_identity_settings_change_nothing() -> None:
    augment = _augmenter(
        speed_prob=1.0, speed_factors=[1.0], tempo_prob=1.0, tempo_factors=[1.0], noise_prob=1.0,
        noise_snr_db=[100.0, 100.0],
    )
    wave = torch.from_numpy(sine(300, 0.4))
    feats = augment(wave, 0, 0)
    # 100 dB SNR: the noise is 1e-5 of the amplitude, far below what the log-mel resolves here.
    torch.testing.assert_close(feats, augment.extractor(wave), atol=1e-3, rtol=0)


def test_same_key_same_result_new_epoch_new_draws() -> None:
    augment = _augmenter(seed=3, **ALL_ON)
    wave = torch.from_numpy(sine(400, 0.6) + noise(0.6, amp=0.02))
    first = [augment(wave, 0, i) for i in range(6)]
    again = [_augmenter(seed=3, **ALL_ON)(wave, 0, i) for i in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    later = [augment(wave, 1, i) for i in range(6)]
    assert sum(not (a.shape == b.shape and torch.equal(a, b)) for a, b in zip(first, later)) >= 4
    other_seed = [_augmenter(seed=4, **ALL_ON)(wave, 0, i) for i in range(6)]
    assert sum(not (a.shape == b.shape and torch.equal(a, b)) for a, b in zip(first, other_seed)) >= 4


def test_shapes_follow_the_duration_change() -> None:
    augment = _augmenter(speed_prob=1.0, speed_factors=[0.9, 1.1], tempo_prob=1.0, tempo_factors=[0.8, 1.25])
    wave = torch.from_numpy(noise(0.5))
    frames = set()
    for index in range(16):
        changed = augment.waveform(wave, 0, index)
        assert len(changed) in {math.ceil(len(wave) / s) for s in (0.9, 1.1)}
        feats = augment(wave, 0, index)
        expected = math.ceil(augment.extractor.num_frames(len(changed)) / augment.tempo(0, index))
        assert feats.shape == (expected, 40)
        frames.add(feats.shape[0])
    assert len(frames) >= 3


def test_methods_draw_from_their_own_streams() -> None:
    # Switching noise on leaves the speed factors drawn for each utterance as they were.
    speed_only = _augmenter(speed_prob=0.5, speed_factors=[0.9, 1.1])
    with_noise = _augmenter(speed_prob=0.5, speed_factors=[0.9, 1.1], noise_prob=1.0)
    wave = torch.from_numpy(noise(0.3))
    for index in range(10):
        assert len(speed_only.waveform(wave, 0, index)) == len(with_noise.waveform(wave, 0, index))


def test_probability_is_the_fraction_augmented() -> None:
    augment = _augmenter(noise_prob=0.3)
    wave = torch.from_numpy(sine(300, 0.1))
    changed = sum(not torch.equal(augment.waveform(wave, 0, i), wave) for i in range(400))
    assert 90 <= changed <= 150  # 120 expected; binomial sd 9


def test_noise_files_from_a_folder_and_a_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "noises"
    write_audio(folder / "hum.wav", sine(50, 0.2, amp=0.3))  # shorter than the utterance: repeated
    write_audio(folder / "hiss.flac", noise(2.0, amp=0.3, seed=4))
    manifest = build_manifest(tmp_path / "m", ["x", "y"], [0.3, 0.5])
    wave = torch.from_numpy(sine(1000, 0.5))
    for spec in (folder, manifest):
        augment = _augmenter(
            noise_prob=1.0, noise_colors=[], noise_files=str(spec), noise_snr_db=[10.0, 10.0]
        )
        for index in range(4):
            out = augment.waveform(wave, 0, index)
            snr = 10 * math.log10(float(wave.pow(2).sum()) / float((out - wave).pow(2).sum()))
            assert out.shape == wave.shape and snr == pytest.approx(10.0, abs=1e-3)
    assert len(read_manifest(manifest)) == 2
    with pytest.raises(ConfigError, match="no such manifest or folder"):
        _augmenter(noise_prob=1.0, noise_files=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        _augmenter(noise_prob=1.0, noise_files=str(tmp_path / "empty"))


def test_reverb_draws_stay_in_range() -> None:
    augment = _augmenter(reverb_prob=1.0, reverb_rt60=[0.3, 0.3])
    wave = torch.from_numpy(sine(700, 0.5))
    out = augment.waveform(wave, 0, 0)
    assert out.shape == wave.shape and not torch.equal(out, wave)
    assert REVERB_DRR_DB[0] < REVERB_DRR_DB[1]


# ---- the dataset hook --------------------------------------------------------------------------
def _dataset(tmp_path: Path, **values) -> AsrDataset:
    manifest = build_manifest(tmp_path / "data", ["one", "two", "three"], [0.4, 0.5, 0.6])
    extractor = LogMel(FeatureConfig(n_mels=20))
    dataset = AsrDataset(read_manifest(manifest), Vocabulary.build(["one two three"]), extractor)
    dataset.set_augment(Augmenter(_cfg(**values), extractor, seed=0))
    return dataset


def test_dataset_workers_see_the_epoch_and_match_the_main_process(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, speed_prob=1.0, speed_factors=[0.9, 1.1], noise_prob=1.0)
    by_epoch = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        main = [dataset[i].feats for i in range(len(dataset))]
        loader = DataLoader(dataset, batch_size=None, num_workers=1)
        workers = [example.feats for example in loader]
        assert all(torch.equal(a, b) for a, b in zip(main, workers))
        by_epoch.append(main)
    assert any(not (a.shape == b.shape and torch.equal(a, b)) for a, b in zip(*by_epoch))


def test_augmented_dataset_refuses_a_cache(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path, noise_prob=1.0)
    with pytest.raises(ValueError, match="cannot cache"):
        dataset.precompute()
    dataset.set_augment(None)
    dataset.precompute()
    with pytest.raises(ValueError, match="uncached"):
        dataset.set_augment(Augmenter(_cfg(noise_prob=1.0), dataset.extractor, 0))


# ---- SpecAugment schedule ----------------------------------------------------------------------
def test_spec_augment_scale_schedule() -> None:
    assert [spec_augment_scale(s, 10, 4) for s in (0, 9, 10, 11, 12, 13, 50)] == [0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert spec_augment_scale(0, 0, 0) == 1.0 and spec_augment_scale(4, 5, 0) == 0.0


def _old_spec_augment(module: SpecAugment, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # The transform-based loop SpecAugment had before the schedule.
    out = feats.clone()
    for i, length in enumerate(lengths.tolist()):
        spec = out[i, :length].transpose(0, 1).unsqueeze(0)
        fill = float(spec.mean())
        for _ in range(module.cfg.freq_masks):
            spec = module.freq(spec, fill)
        for _ in range(module.cfg.time_masks):
            spec = module.time(spec, fill)
        out[i, :length] = spec.squeeze(0).transpose(0, 1)
    return out


def test_spec_augment_full_scale_is_unchanged_and_zero_scale_is_identity() -> None:
    module = SpecAugment(FeatureConfig(n_mels=40))
    feats, lengths = torch.randn(3, 120, 40), torch.tensor([120, 90, 60])
    torch.manual_seed(0)
    new = module(feats, lengths)
    torch.manual_seed(0)
    old = _old_spec_augment(module, feats, lengths)
    assert torch.equal(new, old) and not torch.equal(new, feats)
    assert torch.equal(module(feats, lengths, scale=0.0), feats)


def test_spec_augment_half_scale_halves_the_widest_mask() -> None:
    cfg = FeatureConfig(n_mels=80, freq_masks=1, time_masks=0, freq_mask_width=30)
    module = SpecAugment(cfg)
    feats, lengths = torch.randn(1, 50, 80), torch.tensor([50])
    widest = 0
    torch.manual_seed(1)
    for _ in range(200):
        out = module(feats, lengths, scale=0.5)
        widest = max(widest, int((out[0] != feats[0]).any(0).sum()))
    assert 10 <= widest <= 15


# ---- training with augmentation ----------------------------------------------------------------
TEXTS = ["one two", "three", "four five six", "seven", "eight nine", "zero one", "two", "three four"]


def _train_corpus(tmp_path: Path) -> tuple[Path, Path]:
    train = build_manifest(tmp_path / "data", TEXTS, [0.3 + 0.05 * i for i in range(len(TEXTS))])
    dev = train.parent / "dev.jsonl"
    dev.write_text("".join(train.read_text().splitlines(keepends=True)[:3]))
    return train, dev


def _augmented_config(**changes):
    config = tiny_config(
        train__epochs=2,
        train__max_frames=120,
        train__spec_augment=True,
        train__num_workers=1,
        train__cache_features="true",
        train__warmup_steps=2,
        augment__speed_prob=0.5,
        augment__tempo_prob=0.3,
        augment__vtlp_prob=0.5,
        augment__noise_prob=0.5,
        augment__reverb_prob=0.3,
        augment__specaug_start_step=2,
        augment__specaug_ramp_steps=3,
    )
    for key, value in changes.items():
        section, name = key.split("__")
        setattr(getattr(config, section), name, value)
    return config


def test_training_bypasses_the_cache_for_the_augmented_train_set_only(tmp_path: Path) -> None:
    train, dev = _train_corpus(tmp_path)
    trainer = Trainer(_augmented_config(), train, dev, tmp_path / "exp", progress=False)
    assert trainer.train_set.augment is not None and not trainer.train_set.cached
    assert trainer.dev_set.augment is None and trainer.dev_set.cached
    # The normalization statistics are those of the clean features (there from the float16 cache).
    off = {f"augment__{name}_prob": 0.0 for name in ("speed", "tempo", "vtlp", "noise", "reverb")}
    clean = Trainer(_augmented_config(**off), train, dev, tmp_path / "clean", progress=False)
    assert clean.train_set.cached
    torch.testing.assert_close(trainer.model.feat_mean, clean.model.feat_mean, atol=2e-3, rtol=0)
    torch.testing.assert_close(trainer.model.feat_std, clean.model.feat_std, atol=2e-3, rtol=0)


def test_exact_resume_with_augmentation_in_workers(tmp_path: Path) -> None:
    train, dev = _train_corpus(tmp_path)
    config = _augmented_config()
    full = Trainer(config, train, dev, tmp_path / "full", progress=False).fit()
    first_epoch = full.history[0]["step"]
    out = tmp_path / "cut"
    with pytest.raises(Interrupted):
        Trainer(config, train, dev, out, progress=False).fit(stop_after_steps=2)
    # Resumed in the second epoch, in the main process this time: the draws do not depend on workers.
    with pytest.raises(Interrupted):
        Trainer(config, train, dev, out, resume=True, progress=False).fit(stop_after_steps=first_epoch)
    Trainer(_augmented_config(train__num_workers=0), train, dev, out, resume=True, progress=False).fit()
    a, b = load_file(tmp_path / "full" / "last.pt"), load_file(out / "last.pt")
    assert a["step"] == b["step"] == full.steps
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["history"] == b["history"]
    # Augmentation did change training: the same run without it ends elsewhere.
    plain = _augmented_config(augment__noise_prob=0.0)
    Trainer(plain, train, dev, tmp_path / "plain", progress=False).fit()
    c = load_file(tmp_path / "plain" / "last.pt")
    assert not torch.equal(a["model"]["decoder.output.weight"], c["model"]["decoder.output.weight"])


@pytest.mark.parametrize("make", ["missing", "empty", "not audio"])
def test_cli_train_bad_noise_files_is_one_line(
    make: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from asr_s2s.cli import main

    train, dev = _train_corpus(tmp_path)
    noises = tmp_path / "noises"
    if make != "missing":
        noises.mkdir()
    if make == "not audio":
        (noises / "hum.wav").write_text("not audio")
    args = ["train", "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "exp")]
    args += ["--set", "features.n_mels=20", "--set", "augment.noise_prob=0.5"]
    code = main([*args, "--set", f"augment.noise_files={noises}"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and err.startswith("asr-s2s: error: augment.noise_files")
    expected = {"missing": "no such manifest or folder", "empty": "no audio files", "not audio": "hum.wav"}
    assert expected[make] in err
