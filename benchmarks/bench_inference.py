"""Inference real-time factor: greedy and beam-5 search, one file and batched, plus peak memory.

Each run goes from WAV files to character ids: ``load_audio``, ``LogMel``, length-sorted batches of
``DecodeConfig.batch_size`` padded by ``pad_features``, then ``asr_s2s.decoding``'s greedy or beam
search (``asr_s2s.transcribe`` was being written when this was, so the pipeline is assembled here
from the package's parts). RTF = processing time / audio duration.

The model is an untrained digits-size ``Seq2Seq``. An untrained decoder would stop at once or run to
the length limit, so the decoder is made to run as long as a real transcript: ``<eos>`` is given a
logit of -1e4 and the length limit is set to 15 characters per audio second (``max_len_ratio`` per
encoder frame, ``max_len_offset`` 0). Every utterance thus decodes exactly that many steps.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import replace
from pathlib import Path

import benchlib
import numpy as np
import soundfile as sf
import torch
from proposed import prototypes

from asr_s2s.audio import load_audio
from asr_s2s.config import Config, DecodeConfig
from asr_s2s.data import pad_features
from asr_s2s.decoding import beam_search, greedy_search
from asr_s2s.features import LogMel
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary

TARGET_RTF = {1: 0.01, 5: 0.05}  # batched greedy, batched beam-5


def forced_length_model(config: Config, vocab_size: int, device: torch.device) -> Seq2Seq:
    """An untrained model whose decoder never emits ``<eos>``, so it runs to the length limit."""
    model = Seq2Seq(config.model, config.features.n_mels, vocab_size).to(device).eval()
    with torch.no_grad():
        model.decoder.output.weight[Vocabulary.eos_id] = 0.0
        model.decoder.output.bias[Vocabulary.eos_id] = -1e4
    return model


def forced_decode_config(config: Config, beam_size: int, batch_size: int) -> DecodeConfig:
    """A length limit of :data:`benchlib.CHARS_PER_SECOND` characters per second of audio."""
    frame_s = config.features.hop_ms / 1000 * config.model.stack_frames  # one encoder frame
    return replace(
        config.decode,
        beam_size=beam_size,
        batch_size=batch_size,
        max_len_ratio=benchlib.CHARS_PER_SECOND * frame_s,
        max_len_offset=0,
    )


def transcribe(
    model: Seq2Seq, extractor: LogMel, paths: list[Path], cfg: DecodeConfig, device: torch.device
) -> int:
    """Decode the files; returns the number of characters produced (to check the forced length)."""
    feats = [extractor(load_audio(p, extractor.cfg.sample_rate)[0].to(device)) for p in paths]
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0], reverse=True)
    search = greedy_search if cfg.beam_size == 1 else beam_search
    chars = 0
    for idx in benchlib.chunks(order, cfg.batch_size):
        x, lengths = pad_features([feats[i] for i in idx])
        with benchlib.autocast(device):
            chars += sum(len(h) for h in search(model, x, lengths.to(device), cfg))
    return chars


def time_transcription(
    model: Seq2Seq,
    extractor: LogMel,
    paths: list[Path],
    cfg: DecodeConfig,
    device: torch.device,
    repeats: int,
) -> tuple[list[benchlib.Timing], int]:
    """Timings of :func:`transcribe` over ``paths`` and the characters it produced."""
    chars = 0

    def once() -> None:
        nonlocal chars
        chars = transcribe(model, extractor, paths, cfg, device)

    return benchlib.repeat(once, device, repeats), chars


def write_waves(folder: Path, seconds: list[float], seed: int, prefix: str) -> list[Path]:
    """Synthetic 16-bit WAV files of the given durations."""
    rng = np.random.default_rng(seed)
    paths = []
    for i, s in enumerate(seconds):
        paths.append(folder / f"{prefix}{i:04d}.wav")
        sf.write(paths[-1], benchlib.synth_wave(s, rng), benchlib.SAMPLE_RATE, subtype="PCM_16")
    return paths


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=64, help="files in the batched runs")
    p.add_argument("--single-seconds", type=float, default=3.0, help="length of the single file")
    p.add_argument(
        "--batch-size", type=int, default=0, help="utterances per search batch (default: the config's)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs over the batch of files")
    p.add_argument("--single-repeats", type=int, default=10, help="timed runs of the single file")
    args = p.parse_args()
    if args.quick:
        args.files, args.repeats, args.single_repeats = 16, 1, 2
    run = benchlib.start("inference", args)
    config, source = benchlib.digits_config()
    args.batch_size = args.batch_size or config.decode.batch_size
    vocab_size = len(Vocabulary.build([" ".join(benchlib.DIGIT_CHARS)]))
    model = forced_length_model(config, vocab_size, run.device)
    extractor = LogMel(config.features).to(run.device)
    rss_model = benchlib.peak_rss_mb()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    table = benchlib.Table(
        f"Inference RTF, digits-size model ({params_m:.1f} M parameters), "
        f"{benchlib.CHARS_PER_SECOND:.0f} chars per audio second, {run.device}, {args.threads} threads, "
        f"best of {args.single_repeats} (1 file) or {args.repeats} ({args.files} files)",
        [
            "input",
            "search",
            "model code",
            "audio s",
            "time s",
            "CPU s",
            "RTF",
            "RTF (CPU s)",
            "chars per audio-s",
        ],
    )
    variants = {"ours": contextlib.nullcontext}
    if not run.cuda:  # the prototypes change the CPU path only
        variants["+ CellStepDecoder"] = lambda: prototypes(model, encoder=False)
        variants["+ CellStepDecoder + SegmentedEncoder"] = lambda: prototypes(model)
    targets, data = [], {"config_source": source, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        rng = np.random.default_rng(args.seed)
        single = write_waves(Path(tmp), [args.single_seconds], args.seed, "single")
        lengths = [float(s) for s in benchlib.durations("digits", args.files, rng)]
        many = write_waves(Path(tmp), lengths, args.seed + 1, "batch")
        for name, paths in (("1 file", single), (f"{args.files} files", many)):
            audio_s = sum(sf.info(str(p)).duration for p in paths)
            repeats = args.single_repeats if len(paths) == 1 else args.repeats
            for beam in (1, 5):
                cfg = forced_decode_config(config, beam, args.batch_size)
                search = "greedy" if beam == 1 else f"beam {beam}"
                for variant, context in variants.items():
                    with context():
                        times, chars = time_transcription(model, extractor, paths, cfg, run.device, repeats)
                    fastest = benchlib.best(times)
                    rtf = fastest.wall / audio_s
                    table.add(
                        name,
                        search,
                        variant,
                        audio_s,
                        fastest.wall,
                        fastest.cpu,
                        rtf,
                        fastest.cpu / audio_s,
                        chars / audio_s,
                    )
                    run_info = {"input": name, "beam": beam, "variant": variant, "audio_s": audio_s}
                    data["runs"].append({**run_info, "times": times, "rtf": rtf, "chars": chars})
                    if len(paths) > 1 and variant == "ours":
                        target = benchlib.Target(f"batched {search} RTF", rtf, TARGET_RTF[beam], False)
                        targets.append(target)
    peak = benchlib.peak_rss_mb()
    memory = benchlib.Table("Memory", ["measure", "MiB"])
    memory.add("peak RSS after building the model", rss_model)
    memory.add("peak RSS after all runs", peak)
    data.update(peak_rss_mb=peak, rss_after_model_mb=rss_model)
    benchlib.finish(run, [table, memory], targets, data)


if __name__ == "__main__":
    main()
