"""Typed configuration: features, model, training, decoding, augmentation; YAML files and dotted overrides."""

from __future__ import annotations

import dataclasses
import logging
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from asr_s2s.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class FeatureConfig:
    """Log-mel front end and SpecAugment."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    log_floor: float = 1e-6
    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_width: int = 20

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))


# How the model normalizes its input log-mels (Seq2Seq.encode): "global" with the training set's
# per-bin mean and std; "utterance" with each utterance's own per-bin mean and std over its frames
# (CMVN, instance normalization over time); "utterance_mean" subtracts each utterance's per-bin mean
# and divides by the global std. Global statistics followed by per-utterance mean and variance would
# equal "utterance" alone, so there is no "both".
NORMALIZATION_TYPES = ("global", "utterance", "utterance_mean")

# "none": the decoder sees the audio only through the encoder's final states; "additive",
# "location" (location-aware additive) and "dot" (scaled dot-product, no input feeding) also attend
# over the encoder outputs, see asr_s2s.attention and asr_s2s.model.Decoder.
ATTENTION_TYPES = ("none", "additive", "location", "dot")


@dataclass
class ModelConfig:
    """Encoder, bridge and decoder sizes, and the decoder's attention (one of ``ATTENTION_TYPES``)."""

    stack_frames: int = 3
    encoder_hidden: int = 256
    encoder_layers: int = 3
    bidirectional: bool = True
    encoder_dropout: float = 0.1
    # Pyramidal encoder: frames joined after each encoder layer but the last, e.g. [2, 1] for 3
    # layers: layer 1 at stack_frames x 10 ms, layers 2 and 3 at twice that. [] (the default): none.
    pyramid: list[int] = field(default_factory=list)
    reverse_input: bool = False
    embedding_dim: int = 64
    decoder_hidden: int = 256
    decoder_layers: int = 2
    decoder_dropout: float = 0.1
    forget_bias: float = 0.0
    # Also feed the bridge's summary (the decoder's initial top-layer h) as an input at every
    # decoder step, as in Cho et al. (2014); the decoder still sees the audio only through it.
    summary_input: bool = False
    attention: str = "none"
    attention_dim: int = 128
    normalization: str = "global"  # one of NORMALIZATION_TYPES


@dataclass
class TrainConfig:
    """Optimisation, batching and the training aids."""

    seed: int = 0
    # Fine-tuning: a new run starts from this model's or checkpoint's weights, vocabulary and
    # normalization statistics (same front end and model shapes); --resume continues from last.pt.
    init_from: str = ""
    epochs: int = 10
    max_steps: int = 0
    max_frames: int = 20000
    max_duration: float = 30.0
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    label_smoothing: float = 0.1
    ctc_weight: float = 0.3
    spec_augment: bool = True
    curriculum_epochs: int = 0
    scheduled_sampling: float = 0.0
    token_dropout: float = 0.0
    # "auto": cache the features in memory (float16, 57.6 MB per hour at 80 mels, on every rank)
    # when the train and dev manifests total at most cache_max_hours, else compute them on the fly
    # in num_workers DataLoader workers; "true" / "false" force it.
    cache_features: str = "auto"
    cache_max_hours: float = 10.0
    stats_utterances: int = 2000  # normalization statistics from this many random utterances (0: all)
    stats_file: str = ""  # or read them from this file (asr-s2s stats)
    num_workers: int = 0
    amp: bool = True
    log_every: int = 20
    checkpoint_every: int = 200
    average_best: int = 0
    max_bad_steps: int = 20
    dev_max_utts: int = 0


NOISE_COLORS = ("white", "pink", "brown")


@dataclass
class AugmentConfig:
    """On-the-fly training augmentation (asr_s2s.augment); every ``*_prob`` 0 means off (the default).

    Speed, reverb and noise (on the waveform), tempo (on its STFT) and VTLP (on the mel filterbank)
    run per training utterance in the DataLoader workers, in that order, each with its probability,
    drawn from (train.seed, epoch, utterance index). The SpecAugment schedule scales
    ``features.*_mask_width`` (with ``train.spec_augment`` on) from 0 at ``specaug_start_step`` to
    full width ``specaug_ramp_steps`` later.
    """

    speed_prob: float = 0.0
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # resampling: pitch moves too
    tempo_prob: float = 0.0
    tempo_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # phase vocoder: pitch kept
    vtlp_prob: float = 0.0
    vtlp_alpha: list[float] = field(default_factory=lambda: [0.9, 1.1])  # [low, high] mel warp factor
    noise_prob: float = 0.0
    noise_snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])  # [low, high]
    noise_colors: list[str] = field(default_factory=lambda: list(NOISE_COLORS))
    noise_files: str = ""  # a manifest (JSON lines) or a folder of audio files; mixed with the colors
    reverb_prob: float = 0.0
    reverb_rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])  # [low, high] seconds
    specaug_start_step: int = 0
    specaug_ramp_steps: int = 0

    @property
    def waveform(self) -> bool:
        """Whether any per-utterance method (everything but the SpecAugment schedule) is on."""
        return max(self.speed_prob, self.tempo_prob, self.vtlp_prob, self.noise_prob, self.reverb_prob) > 0


HYPHEN_MODES = ("space", "join", "keep")
PUNCTUATION_MODES = ("drop", "keep")


@dataclass
class TextConfig:
    """Transcript normalization, applied alike to training targets, references and hypotheses
    (see :func:`asr_s2s.text.normalize`). The defaults are the normalization of models that predate
    this section, so their stored configs load unchanged."""

    lowercase: bool = True
    apostrophes: bool = True  # the variants ’ ‘ ʼ ` ´ become ' (and quote-like leading ones go)
    hyphens: str = "space"  # well-known -> "well known" (space), "wellknown" (join) or kept
    punctuation: str = "drop"  # other punctuation: dropped or kept


@dataclass
class DecodeConfig:
    """Search settings. Beam search weighs the decoder by ``1 - ctc_weight``, the CTC head's prefix
    scores by ``ctc_weight`` and a character LM (``--lm``) by ``lm_weight``, and adds
    ``length_bonus`` per token (see :mod:`asr_s2s.decoding`)."""

    beam_size: int = 1
    length_penalty: float = 1.0
    max_len_ratio: float = 1.0
    max_len_offset: int = 10
    batch_size: int = 32
    # Longer inputs are split at silences into chunks of at most this many seconds (transcribe).
    max_chunk_seconds: float = 20.0
    ctc_weight: float = 0.0
    lm_weight: float = 0.0
    oov_penalty: float = 10.0  # a word LM (--lm WORDS.txt): nats for a word outside its list
    length_bonus: float = 0.0
    # The CTC head's best path (argmax per frame, repeats merged, blanks dropped), as CTC toolkits
    # decode greedily: no decoder, no beam; the other search settings are ignored.
    ctc_greedy: bool = False


@dataclass
class LMConfig:
    """The character LM of ``asr-s2s train-lm`` (:mod:`asr_s2s.lm`): network and training."""

    embedding_dim: int = 64
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.1
    seed: int = 0
    epochs: int = 3
    max_steps: int = 0
    batch_chars: int = 8000
    max_line_chars: int = 400
    lr: float = 3e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    grad_clip: float = 1.0
    amp: bool = True
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    dev_max_lines: int = 2000


@dataclass
class Config:
    """Every setting of an experiment; stored inside each checkpoint."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    text: TextConfig = field(default_factory=TextConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<config>", strict: bool = True) -> Config:
        """Build a config from nested plain values; missing keys take defaults.

        Unknown keys are errors, unless ``strict`` is False (configs stored in older model files):
        then they are skipped with a warning.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
        config = cls()
        for section, values in data.items():
            if section not in _section_names():
                if not strict:
                    log.warning("%s: ignoring unknown config section '%s'", source, section)
                    continue
                raise ConfigError(
                    f"{source}: unknown section '{section}' (expected {', '.join(_section_names())})"
                )
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section '{section}' must be a mapping")
            known = {f.name for f in fields(getattr(config, section))}
            for key, value in values.items():
                if not strict and key not in known:
                    log.warning("%s: ignoring unknown config option '%s.%s'", source, section, key)
                    continue
                _assign(config, f"{section}.{key}", value, source)
        return config


def _section_names() -> list[str]:
    return [f.name for f in fields(Config)]


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints[name]


# String options that also take YAML booleans.
_BOOL_OR_AUTO = ("train.cache_features",)


def _coerce(value: Any, kind: Any, key: str, source: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the field's declared type."""
    origin = typing.get_origin(kind)
    if origin is list:
        if isinstance(value, str):  # `--set x=0.9,1.1` arrives as one string
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list | tuple):
            value = [value]
        (item_kind,) = typing.get_args(kind)
        return [_coerce(item, item_kind, key, source) for item in value]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        kind = args[0]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # `--set x=1` arrives as YAML's int 1
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{source}: '{key}' expects true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' expects a number, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if not math.isfinite(float(number)):
                raise ValueError
            if kind is int:
                if float(number) != int(float(number)):
                    raise ValueError
                return int(float(number))
            return float(number)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: '{key}' expects a finite {kind.__name__}, got {value!r}") from None
    if kind is str:
        if isinstance(value, bool) and key.endswith(_BOOL_OR_AUTO):  # YAML's true/false
            return "true" if value else "false"
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: '{key}' expects a string, got {value!r}")
    return value


def _assign(config: Config, key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{source}: '{key}' must be section.name, e.g. model.encoder_layers")
    section, name = parts
    if section not in _section_names():
        raise ConfigError(f"{source}: unknown section '{section}' in '{key}'")
    target = getattr(config, section)
    if name not in {f.name for f in fields(target)}:
        raise ConfigError(f"{source}: unknown option '{key}'")
    setattr(target, name, _coerce(value, _field_type(target, name), key, source))


def apply_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply ``section.name=value`` strings (values parsed as YAML scalars), returning a new config."""
    config = dataclasses.replace(
        config, **{f.name: dataclasses.replace(getattr(config, f.name)) for f in fields(config)}
    )
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.name=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        _assign(config, key.strip(), value, "--set")
    validate(config)
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply dotted overrides."""
    if path is None:
        config = Config()
    else:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
        config = Config.from_dict(data, str(path))
    return apply_overrides(config, overrides or [])


def validate(config: Config) -> None:
    """Reject values that cannot work, with the option's name."""
    m, t, f = config.model, config.train, config.features
    checks = [
        (
            m.attention in ATTENTION_TYPES,
            f"model.attention={m.attention!r}: expected one of {', '.join(ATTENTION_TYPES)}",
        ),
        (m.attention_dim >= 1, "model.attention_dim must be >= 1"),
        (
            m.normalization in NORMALIZATION_TYPES,
            f"model.normalization={m.normalization!r}: expected one of {', '.join(NORMALIZATION_TYPES)}",
        ),
        (m.stack_frames >= 1, "model.stack_frames must be >= 1"),
        (m.encoder_layers >= 1 and m.decoder_layers >= 1, "model layers must be >= 1"),
        (
            not m.pyramid or (len(m.pyramid) == m.encoder_layers - 1 and min(m.pyramid) >= 1),
            "model.pyramid must be empty or one factor >= 1 per encoder layer but the last",
        ),
        (
            t.schedule in ("cosine", "noam", "plateau", "constant"),
            "train.schedule must be cosine, noam, plateau or constant",
        ),
        (0.0 <= t.ctc_weight <= 1.0, "train.ctc_weight must be in [0, 1]"),
        # 1.0 trains the encoder with CTC alone: the decoder keeps its initial weights.
        (
            t.ctc_weight < 1.0 or config.decode.ctc_greedy or config.decode.ctc_weight == 1.0,
            "train.ctc_weight=1 trains no decoder: decode with decode.ctc_greedy=true or decode.ctc_weight=1",
        ),
        (0.0 <= t.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1)"),
        (f.n_mels > 0 and f.sample_rate > 0, "features.n_mels and features.sample_rate must be positive"),
        (f.win_length <= f.n_fft, "features.win_ms is longer than features.n_fft samples"),
        (f.hop_length >= 1, "features.hop_ms is shorter than one sample"),
        (
            min(m.encoder_hidden, m.decoder_hidden, m.embedding_dim) >= 1,
            "model.encoder_hidden, model.decoder_hidden and model.embedding_dim must be >= 1",
        ),
        (
            0.0 <= m.encoder_dropout < 1.0 and 0.0 <= m.decoder_dropout < 1.0,
            "model.encoder_dropout and model.decoder_dropout must be in [0, 1)",
        ),
        (t.epochs >= 1 and t.max_steps >= 0, "train.epochs must be >= 1 and train.max_steps >= 0"),
        # grad_clip=0 would scale every gradient to zero: training that silently learns nothing.
        (t.lr > 0 and t.grad_clip > 0, "train.lr and train.grad_clip must be positive"),
        (
            t.max_frames >= 1 and t.max_duration > 0,
            "train.max_frames and train.max_duration must be positive",
        ),
        (
            t.cache_features in ("auto", "true", "false"),
            f"train.cache_features={t.cache_features!r}: expected auto, true or false",
        ),
        (
            t.cache_max_hours >= 0 and t.stats_utterances >= 0,
            "train.cache_max_hours and train.stats_utterances must be >= 0",
        ),
        (
            t.log_every >= 1 and t.checkpoint_every >= 1,
            "train.log_every and train.checkpoint_every must be >= 1",
        ),
        (
            0.0 <= t.scheduled_sampling <= 1.0 and 0.0 <= t.token_dropout < 1.0,
            "train.scheduled_sampling must be in [0, 1] and train.token_dropout in [0, 1)",
        ),
        (config.decode.beam_size >= 1, "decode.beam_size must be >= 1"),
        (config.decode.batch_size >= 1, "decode.batch_size must be >= 1"),
        (config.decode.max_chunk_seconds >= 1.0, "decode.max_chunk_seconds must be >= 1"),
        (0.0 <= config.decode.ctc_weight <= 1.0, "decode.ctc_weight must be in [0, 1]"),
        (
            min(config.lm.embedding_dim, config.lm.hidden, config.lm.layers, config.lm.batch_chars) >= 1,
            "lm.embedding_dim, lm.hidden, lm.layers and lm.batch_chars must be >= 1",
        ),
        (
            config.lm.lr > 0 and config.lm.grad_clip > 0 and 0.0 <= config.lm.dropout < 1.0,
            "lm.lr and lm.grad_clip must be positive and lm.dropout in [0, 1)",
        ),
        (
            config.lm.epochs >= 1 and config.lm.max_steps >= 0 and config.lm.max_line_chars >= 1,
            "lm.epochs and lm.max_line_chars must be >= 1 and lm.max_steps >= 0",
        ),
        (
            min(config.lm.log_every, config.lm.eval_every, config.lm.checkpoint_every) >= 1,
            "lm.log_every, lm.eval_every and lm.checkpoint_every must be >= 1",
        ),
        (
            config.text.hyphens in HYPHEN_MODES,
            f"text.hyphens={config.text.hyphens!r}: expected one of {', '.join(HYPHEN_MODES)}",
        ),
        (
            config.text.punctuation in PUNCTUATION_MODES,
            f"text.punctuation={config.text.punctuation!r}: expected one of {', '.join(PUNCTUATION_MODES)}",
        ),
    ]
    checks += _augment_checks(config.augment, f.sample_rate)
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _augment_checks(a: AugmentConfig, sample_rate: int) -> list[tuple[bool, str]]:
    def span(values: list[float], low: float, high: float) -> bool:
        return len(values) == 2 and low <= values[0] <= values[1] <= high

    probs = ("speed_prob", "tempo_prob", "vtlp_prob", "noise_prob", "reverb_prob")
    return [
        *((0.0 <= getattr(a, name) <= 1.0, f"augment.{name} must be in [0, 1]") for name in probs),
        (
            bool(a.speed_factors) and all(0.5 <= x <= 2.0 for x in a.speed_factors),
            "augment.speed_factors must be a non-empty list of factors in [0.5, 2]",
        ),
        # torchaudio's speed resamples from int(factor * rate) Hz: the factor must give whole hertz.
        (
            all(abs(x * sample_rate - round(x * sample_rate)) < 1e-6 for x in a.speed_factors),
            "augment.speed_factors times features.sample_rate must be whole numbers of hertz",
        ),
        (
            bool(a.tempo_factors) and all(0.5 <= x <= 2.0 for x in a.tempo_factors),
            "augment.tempo_factors must be a non-empty list of factors in [0.5, 2]",
        ),
        (span(a.vtlp_alpha, 0.5, 2.0), "augment.vtlp_alpha must be [low, high] within [0.5, 2]"),
        (span(a.noise_snr_db, -30.0, 100.0), "augment.noise_snr_db must be [low, high] within [-30, 100] dB"),
        (
            all(c in NOISE_COLORS for c in a.noise_colors) and (bool(a.noise_colors) or bool(a.noise_files)),
            f"augment.noise_colors must be a list of {', '.join(NOISE_COLORS)} "
            "(empty only with augment.noise_files)",
        ),
        (span(a.reverb_rt60, 0.01, 3.0), "augment.reverb_rt60 must be [low, high] seconds within [0.01, 3]"),
        (
            a.specaug_start_step >= 0 and a.specaug_ramp_steps >= 0,
            "augment.specaug_start_step and augment.specaug_ramp_steps must be >= 0",
        ),
    ]


def save_config(config: Config, path: str | Path) -> None:
    """Write the config as YAML (plain values only)."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
