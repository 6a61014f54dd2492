"""Tests for asr_s2s.config: YAML files, dotted overrides, errors and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from asr_s2s.config import (
    Config,
    DecodeConfig,
    FeatureConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    load_config,
    save_config,
    validate,
)
from asr_s2s.errors import AsrError, ConfigError


def test_defaults_without_file() -> None:
    config = load_config()
    assert config == Config()
    assert config.features.win_length == 400 and config.features.hop_length == 160


def test_yaml_file_sets_values_and_keeps_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "model:\n  encoder_layers: 4\n  bidirectional: false\n"
        "train:\n  lr: 1e-3\n  schedule: noam\n"  # YAML 1.1 reads 1e-3 as a string: must still work
        "decode:\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.model.encoder_layers == 4
    assert config.model.bidirectional is False
    assert config.train.lr == pytest.approx(1e-3) and isinstance(config.train.lr, float)
    assert config.train.schedule == "noam"
    assert config.model.decoder_hidden == ModelConfig().decoder_hidden
    assert config.decode == DecodeConfig()


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_config(path) == Config()


@pytest.mark.parametrize(
    ("override", "section", "name", "expected"),
    [
        ("model.encoder_layers=5", "model", "encoder_layers", 5),
        ("model.encoder_layers=6.0", "model", "encoder_layers", 6),
        ("train.max_steps=1e3", "train", "max_steps", 1000),
        ("train.lr=0.01", "train", "lr", 0.01),
        ("train.lr=3", "train", "lr", 3.0),
        ("train.lr=5e-4", "train", "lr", 5e-4),
        ("model.bidirectional=false", "model", "bidirectional", False),
        ("model.bidirectional=False", "model", "bidirectional", False),
        ("train.amp=no", "train", "amp", False),
        ("train.amp=1", "train", "amp", True),
        ("train.amp=0", "train", "amp", False),
        ("train.spec_augment=true", "train", "spec_augment", True),
        ("train.schedule=constant", "train", "schedule", "constant"),
        ("model.attention= none ", "model", "attention", "none"),
        ("features.n_mels=40", "features", "n_mels", 40),
        ("model.pyramid=2,1", "model", "pyramid", [2, 1]),
        ("decode.ctc_greedy=true", "decode", "ctc_greedy", True),
    ],
)
def test_set_override_coerces_types(override: str, section: str, name: str, expected: object) -> None:
    config = apply_overrides(Config(), [override])
    value = getattr(getattr(config, section), name)
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_do_not_mutate_the_input() -> None:
    base = Config()
    changed = apply_overrides(base, ["model.encoder_layers=7", "train.seed=3"])
    assert changed.model.encoder_layers == 7 and changed.train.seed == 3
    assert base == Config()


def test_overrides_apply_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  encoder_layers: 4\n", encoding="utf-8")
    config = load_config(path, ["model.encoder_layers=2", "model.decoder_layers=1"])
    assert (config.model.encoder_layers, config.model.decoder_layers) == (2, 1)


@pytest.mark.parametrize(
    ("override", "must_name"),
    [
        ("model.encoder_layer=3", "model.encoder_layer"),  # typo in the option
        ("modle.encoder_layers=3", "modle"),  # typo in the section
        ("encoder_layers=3", "encoder_layers"),  # no section
        ("model.encoder_layers=three", "model.encoder_layers"),
        ("model.encoder_layers=2.5", "model.encoder_layers"),
        ("model.bidirectional=maybe", "model.bidirectional"),
        ("train.lr=fast", "train.lr"),
        ("train.lr=true", "train.lr"),
        ("train.epochs=.inf", "train.epochs"),
        ("train.epochs=.nan", "train.epochs"),
        ("train.lr=nan", "train.lr"),
        ("train.max_duration=.inf", "train.max_duration"),
        ("train.schedule=[a, b]", "train.schedule"),
        ("model.encoder_layers", "model.encoder_layers"),  # no '='
    ],
)
def test_bad_override_is_config_error_naming_the_key(override: str, must_name: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), [override])
    message = str(info.value)
    assert must_name in message
    assert "\n" not in message


def test_unknown_key_in_yaml_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  encoder_layerz: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "model.encoder_layerz" in str(info.value)


def test_unknown_section_in_yaml_names_file_and_section(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer:\n  lr: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "'optimizer'" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "model: [1, 2]\n",  # section is not a mapping
        "- a\n- b\n",  # top level is not a mapping
        "model:\n  encoder_layers: many\n",  # wrong type
        "train:\n  amp: 3\n",  # not a boolean
    ],
)
def test_wrong_structure_or_type_in_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  encoder_layers: [1, 2\n  x: :\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "invalid YAML" in message
    assert "\n" not in message


def test_missing_config_file_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(path)


def test_config_error_is_an_asr_error() -> None:
    assert issubclass(ConfigError, AsrError)


def test_to_dict_from_dict_round_trip() -> None:
    config = apply_overrides(
        Config(),
        ["model.encoder_layers=2", "train.lr=0.5", "model.bidirectional=false", "decode.beam_size=4"],
    )
    data = config.to_dict()
    assert set(data) == {"features", "model", "train", "decode", "augment", "text", "lm"}
    assert data["model"]["encoder_layers"] == 2
    again = Config.from_dict(data)
    assert again == config
    # Also through YAML text, as checkpoints and `asr-s2s config` write it.
    assert Config.from_dict(yaml.safe_load(yaml.safe_dump(data))) == config


def test_save_config_then_load_round_trip(tmp_path: Path) -> None:
    config = apply_overrides(Config(), ["features.n_mels=40", "train.schedule=plateau"])
    path = tmp_path / "saved.yaml"
    save_config(config, path)
    assert load_config(path) == config


def test_from_dict_missing_keys_take_defaults() -> None:
    config = Config.from_dict({"model": {"decoder_layers": 3}, "train": None})
    assert config.model.decoder_layers == 3
    assert config.train == TrainConfig() and config.features == FeatureConfig()


@pytest.mark.parametrize(
    ("override", "must_name"),
    [
        ("model.attention=bahdanau", "model.attention"),
        ("model.attention_dim=0", "model.attention_dim"),
        ("train.schedule=linear", "train.schedule"),
        ("train.ctc_weight=1.5", "train.ctc_weight"),
        ("train.ctc_weight=-0.1", "train.ctc_weight"),
        ("train.label_smoothing=1", "train.label_smoothing"),
        ("model.stack_frames=0", "model.stack_frames"),
        ("model.encoder_layers=0", "layers"),
        ("features.n_mels=0", "features.n_mels"),
        ("features.win_ms=40", "features.win_ms"),  # 640 samples > n_fft 512
        ("decode.beam_size=0", "decode.beam_size"),
        ("decode.batch_size=0", "decode.batch_size"),
        ("features.hop_ms=0.01", "features.hop_ms"),
        ("model.decoder_hidden=0", "model.decoder_hidden"),
        ("model.encoder_dropout=1", "model.encoder_dropout"),
        ("train.epochs=0", "train.epochs"),
        ("train.max_steps=-1", "train.max_steps"),
        ("train.lr=0", "train.lr"),
        ("train.grad_clip=0", "train.grad_clip"),  # would zero every gradient
        ("train.max_frames=0", "train.max_frames"),
        ("train.log_every=0", "train.log_every"),  # step % 0 would crash mid-training
        ("train.checkpoint_every=0", "train.checkpoint_every"),
        ("train.scheduled_sampling=1.5", "train.scheduled_sampling"),
        ("train.token_dropout=1", "train.token_dropout"),
        ("model.pyramid=2", "model.pyramid"),  # one factor per layer but the last (3 layers: 2)
        ("model.pyramid=2,0", "model.pyramid"),
        ("train.ctc_weight=1", "decode.ctc_greedy"),  # CTC-only training leaves the decoder untrained
    ],
)
def test_validate_rejects_unworkable_values(override: str, must_name: str) -> None:
    with pytest.raises(ConfigError, match=must_name.replace(".", r"\.")):
        apply_overrides(Config(), [override])


def test_validate_accepts_defaults_and_direct_call() -> None:
    validate(Config())
    config = Config()
    config.train.ctc_weight = 2.0
    with pytest.raises(ConfigError, match="ctc_weight"):
        validate(config)


def test_window_and_hop_follow_sample_rate() -> None:
    cfg = FeatureConfig(sample_rate=8000, win_ms=25.0, hop_ms=10.0)
    assert (cfg.win_length, cfg.hop_length) == (200, 80)


@pytest.mark.parametrize(
    ("value", "expected"), [("true", "true"), ("false", "false"), ("auto", "auto"), ("on", "true")]
)
def test_cache_features_takes_auto_and_booleans(value: str, expected: str, tmp_path: Path) -> None:
    assert load_config(None, [f"train.cache_features={value}"]).train.cache_features == expected
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n  cache_features: {value}\n")
    assert load_config(path).train.cache_features == expected


def test_cache_features_rejects_other_values() -> None:
    with pytest.raises(ConfigError, match="train.cache_features='sometimes': expected auto, true or false"):
        load_config(None, ["train.cache_features=sometimes"])
    with pytest.raises(ConfigError, match="train.stats_utterances must be >= 0"):
        load_config(None, ["train.stats_utterances=-1"])
