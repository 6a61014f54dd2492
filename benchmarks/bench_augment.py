"""Cost of each training augmentation per utterance, next to the log-mel extraction it precedes.

Each method runs through ``asr_s2s.augment.Augmenter`` at probability 1, one utterance at a time in
one thread, as a DataLoader worker runs it; the time per utterance includes the log-mel (with the
VTLP filterbank for VTLP), so "extra" is the method's own cost. The waveforms are synthetic speech-like
signals (the operations do the same work whatever the samples) with lengths drawn from the digits
corpus's range, 1-6 s. ``torchaudio.functional.pitch_shift`` is timed once on a 1-second utterance to
record why it is not offered, and SpecAugment (run on the batch in the training process) per utterance.
"""

from __future__ import annotations

import benchlib
import numpy as np
import torch
import torchaudio

from asr_s2s.augment import Augmenter
from asr_s2s.config import AugmentConfig, FeatureConfig
from asr_s2s.features import LogMel, SpecAugment

METHODS: dict[str, dict[str, object]] = {
    "none (log-mel only)": {},
    "speed 0.9/1.1": {"speed_prob": 1.0, "speed_factors": [0.9, 1.1]},
    "tempo 0.9/1.1": {"tempo_prob": 1.0, "tempo_factors": [0.9, 1.1]},
    "VTLP 0.9-1.1": {"vtlp_prob": 1.0},
    "noise white/pink/brown": {"noise_prob": 1.0},
    "reverb RT60 0.2-0.8 s": {"reverb_prob": 1.0},
    "all five": {f"{m}_prob": 1.0 for m in ("speed", "tempo", "vtlp", "noise", "reverb")},
}


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--utterances", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-pitch-shift", action="store_true", help="skip the (slow) pitch_shift timing")
    p.set_defaults(threads=1)
    args = p.parse_args()
    if args.quick:
        args.utterances, args.repeats, args.no_pitch_shift = 8, 1, True
    run = benchlib.start("augment", args)
    cfg = FeatureConfig()
    extractor = LogMel(cfg)
    rng = np.random.default_rng(args.seed)
    seconds = rng.uniform(1.0, 6.0, args.utterances)
    waves = [torch.from_numpy(benchlib.synth_wave(s, rng, cfg.sample_rate)) for s in seconds]
    audio_s = float(seconds.sum())

    per_utt_ms: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    for name, values in METHODS.items():
        augment = Augmenter(AugmentConfig(**values), extractor, seed=args.seed)

        def epoch(augment: Augmenter = augment) -> None:
            for index, wave in enumerate(waves):
                augment(wave, 0, index)

        fastest = benchlib.best(benchlib.repeat(epoch, run.device, args.repeats))
        per_utt_ms[name] = fastest.wall * 1e3 / len(waves)
        cpu_ms[name] = fastest.cpu * 1e3 / len(waves)

    spec = SpecAugment(cfg)
    feats = [extractor(w)[None] for w in waves]

    def masks() -> None:
        for f in feats:
            spec(f, torch.tensor([f.shape[1]]))

    spec = benchlib.best(benchlib.repeat(masks, run.device, args.repeats))
    spec_ms, spec_cpu_ms = spec.wall * 1e3 / len(waves), spec.cpu * 1e3 / len(waves)

    base = per_utt_ms["none (log-mel only)"]
    mean_s = audio_s / len(waves)
    table = benchlib.Table(
        f"Augmentation cost per utterance: {len(waves)} utterances of 1-6 s (mean {mean_s:.1f} s), 16 kHz, "
        f"{cfg.n_mels} mels, {args.threads} thread, best of {args.repeats}",
        ["method (probability 1)", "ms / utt", "CPU ms", "extra ms", "x log-mel", "x real time (1 worker)"],
    )
    for name, ms in per_utt_ms.items():
        table.add(name, ms, cpu_ms[name], ms - base, ms / base, mean_s * 1e3 / ms)
    name = "SpecAugment (2+2 masks, in the trainer)"
    table.add(name, spec_ms, spec_cpu_ms, spec_ms, spec_ms / base, mean_s * 1e3 / spec_ms)

    pitch_s = None
    if not args.no_pitch_shift:
        one_second = waves[0][: cfg.sample_rate]
        pitch = benchlib.timed(
            lambda: torchaudio.functional.pitch_shift(one_second, cfg.sample_rate, 1), run.device
        )
        pitch_s, ms = pitch.wall, pitch.wall * 1e3
        name = "torchaudio pitch_shift +1 semitone (1 s)"
        table.add(name, ms, pitch.cpu * 1e3, ms, ms / base, 1.0 / pitch_s)

    benchlib.finish(
        run,
        [table],
        [],
        {
            "audio_seconds": audio_s,
            "ms_per_utterance": per_utt_ms,
            "cpu_ms_per_utterance": cpu_ms,
            "spec_augment_ms": spec_ms,
            "pitch_shift_s": pitch_s,
        },
    )


if __name__ == "__main__":
    main()
