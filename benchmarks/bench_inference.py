"""Inference real-time factor: greedy and beam-5 search, one file and batched, plus peak memory.

Each run is ``asr_s2s.transcribe.Transcriber.iter_transcriptions`` over WAV files, as ``asr-s2s
transcribe`` runs it: reading, ``LogMel``, length-sorted batches of ``decode.batch_size``, greedy or
beam search, text. RTF = processing time / audio duration.

The model is an untrained digits-size ``Seq2Seq``. An untrained decoder would stop at once or run to
the length limit, so it is made to decode exactly as long as a real transcript: its output layer
always prefers the letter ``e`` (zero weights, bias 0 for ``e`` and -1e4 for every other token,
``<eos>`` included), and the length limit is 15 characters per audio second (``max_len_ratio`` per
encoder frame, ``max_len_offset`` 0). The search does the same work whatever the values, and the
length of the text counts the decoder steps.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import benchlib
import numpy as np
import soundfile as sf
import torch

from asr_s2s.checkpoint import ModelBundle
from asr_s2s.config import Config, DecodeConfig
from asr_s2s.errors import AsrError
from asr_s2s.model import Seq2Seq
from asr_s2s.text import Vocabulary
from asr_s2s.transcribe import Transcriber

TARGET_RTF = {1: 0.01, 5: 0.05}  # batched greedy, batched beam-5


def forced_length_model(config: Config, vocab: Vocabulary, device: torch.device) -> Seq2Seq:
    """An untrained model whose decoder emits ``e`` at every step, so it runs to the length limit."""
    model = Seq2Seq(config.model, config.features.n_mels, len(vocab)).to(device).eval()
    with torch.no_grad():
        model.decoder.output.weight.zero_()
        model.decoder.output.bias.fill_(-1e4)
        model.decoder.output.bias[vocab.encode("e")[0]] = 0.0
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


def forced_transcriber(config: Config, device: torch.device) -> Transcriber:
    """A :class:`Transcriber` of the forced-length digits-size model."""
    vocab = Vocabulary.build([" ".join(benchlib.DIGIT_CHARS)])
    model = forced_length_model(config, vocab, device)
    config = replace(config, decode=forced_decode_config(config, 1, config.decode.batch_size))
    return Transcriber(ModelBundle(model, config, vocab), device)


def time_transcription(
    transcriber: Transcriber, paths: list[Path], beam_size: int, batch_size: int, repeats: int
) -> tuple[list[benchlib.Timing], int]:
    """Timings of transcribing ``paths`` and the characters of text produced (one run's)."""
    chars = 0

    def once() -> None:
        nonlocal chars
        with benchlib.autocast(transcriber.device):
            results = list(transcriber.iter_transcriptions(paths, beam_size=beam_size, batch_size=batch_size))
        for result in results:
            if isinstance(result, AsrError):
                raise result
        chars = sum(len(r.text) for r in results)

    return benchlib.repeat(once, transcriber.device, repeats), chars


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
    p.add_argument(
        "--config", type=Path, default=None, help="model config YAML (default: the digits recipe's)"
    )
    args = p.parse_args()
    if args.quick:
        args.files, args.repeats, args.single_repeats = 16, 1, 2
    run = benchlib.start("inference", args)
    config, source = benchlib.digits_config(args.config)
    args.batch_size = args.batch_size or config.decode.batch_size
    transcriber = forced_transcriber(config, run.device)
    model = transcriber.model
    rss_model = benchlib.peak_rss_mb()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    table = benchlib.Table(
        f"Inference RTF, digits-size model ({params_m:.1f} M parameters), "
        f"{benchlib.CHARS_PER_SECOND:.0f} chars per audio second, {run.device}, {args.threads} threads, "
        f"best of {args.single_repeats} (1 file) or {args.repeats} ({args.files} files)",
        [
            "input",
            "search",
            "audio s",
            "time s",
            "CPU s",
            "RTF",
            "RTF (CPU s)",
            "chars per audio-s",
        ],
    )
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
                search = "greedy" if beam == 1 else f"beam {beam}"
                times, chars = time_transcription(transcriber, paths, beam, args.batch_size, repeats)
                fastest = benchlib.best(times)
                rtf = fastest.wall / audio_s
                table.add(
                    name,
                    search,
                    audio_s,
                    fastest.wall,
                    fastest.cpu,
                    rtf,
                    fastest.cpu / audio_s,
                    chars / audio_s,
                )
                run_info = {"input": name, "beam": beam, "audio_s": audio_s}
                data["runs"].append({**run_info, "times": times, "rtf": rtf, "chars": chars})
                if len(paths) > 1:
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
