"""The ``asr-s2s`` command: parses arguments, then calls library functions."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from asr_s2s import __version__
from asr_s2s.errors import AsrError

log = logging.getLogger("asr_s2s")


class _Parser(argparse.ArgumentParser):
    """Argument errors print one line (with a hint to ``--help``) instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    # Subcommands accept the flags too; SUPPRESS keeps them from resetting a flag given before the command.
    default = False if top else argparse.SUPPRESS
    p.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", default=default, help="only warnings; no progress bars")


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.NAME=VALUE",
        help="override one config value, e.g. --set model.encoder_layers=4 (repeatable)",
    )


def _add_search(p: argparse.ArgumentParser, chunking: bool = False) -> None:
    """The decoding flags of evaluate, transcribe and serve; ``chunking`` adds --max-chunk-seconds."""
    p.add_argument("--beam-size", type=int, help="beam width (default: the model's decode.beam_size)")
    if chunking:
        p.add_argument(
            "--max-chunk-seconds",
            type=float,
            help="longest piece decoded at once, split at silences (default: decode.max_chunk_seconds)",
        )
    p.add_argument("--ctc-weight", type=float, help="weight of the CTC prefix scores in beam search, 0 to 1")
    p.add_argument(
        "--lm",
        type=Path,
        help="LM for shallow fusion: a character LM (asr-s2s train-lm) or a word list with counts "
        "('word count' per line: a unigram word LM; decode.oov_penalty per unlisted word)",
    )
    p.add_argument("--lm-weight", type=float, help="weight of the LM's log-probabilities (with --lm)")
    p.add_argument("--length-bonus", type=float, help="score added per output character")


def _search_options(args: argparse.Namespace) -> dict[str, object]:
    return {
        "lm": args.lm,
        "ctc_weight": args.ctc_weight,
        "lm_weight": args.lm_weight,
        "length_bonus": args.length_bonus,
    }


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subcommand per job."""
    parser = _Parser(
        prog="asr-s2s",
        description="Speech recognition: log-mel, stacked LSTM encoder, final states, character decoder.",
    )
    parser.add_argument("--version", action="version", version=f"asr-s2s {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("train", help="train a model on JSONL manifests", description="Train a model.")
    p.add_argument("--config", type=Path, help="YAML config (defaults when omitted)")
    p.add_argument("--train", type=Path, required=True, help="training manifest (JSONL)")
    p.add_argument("--dev", type=Path, required=True, help="dev manifest (JSONL), scored every epoch")
    p.add_argument(
        "--out", type=Path, required=True, help="experiment directory (checkpoints, logs, model.pt)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt when it exists")
    p.add_argument("--strict", action="store_true", help="stop at the first bad manifest line or audio file")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_set(p)
    _add_common(p)

    p = sub.add_parser(
        "evaluate", help="WER/CER of a model on a manifest", description="Score a model on a manifest."
    )
    p.add_argument("--model", type=Path, required=True, help="model bundle or checkpoint")
    p.add_argument("--manifest", type=Path, required=True, help="manifest with reference texts")
    p.add_argument("--out", type=Path, required=True, help="folder for the report files")
    _add_search(p)
    p.add_argument("--batch-size", type=int, help="utterances decoded together")
    p.add_argument(
        "--num-workers", type=int, default=2, help="processes reading audio and features (default 2)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    _add_common(p)

    p = sub.add_parser(
        "transcribe", help="transcribe audio files or folders", description="Transcribe audio."
    )
    p.add_argument("--model", type=Path, required=True, help="model bundle or checkpoint")
    p.add_argument("inputs", nargs="+", type=Path, help="audio files or folders (searched recursively)")
    p.add_argument(
        "--format", choices=["txt", "json", "jsonl", "srt", "vtt"], default="txt", help="output format"
    )
    p.add_argument("--output-dir", type=Path, help="write one file per input here (default: print to stdout)")
    _add_search(p, chunking=True)
    p.add_argument("--batch-size", type=int, help="segments decoded together")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    _add_common(p)

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP with OpenAI's transcription API",
        description="Serve POST /v1/audio/transcriptions (OpenAI's API), GET /v1/models and GET /health.",
    )
    p.add_argument("--model", type=Path, required=True, help="model bundle or checkpoint")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: env ASR_S2S_API_KEY)")
    p.add_argument("--max-batch", type=int, default=16, help="utterances decoded together (default: 16)")
    p.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="how long a request waits for others (default: 10)"
    )
    p.add_argument("--max-queue", type=int, default=64, help="requests in progress before 503 (default: 64)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload, else 413 (default: 25)")
    p.add_argument("--model-name", default="asr-s2s", help="the model id clients see (default: asr-s2s)")
    _add_search(p, chunking=True)
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    _add_common(p)

    p = sub.add_parser(
        "export",
        help="write a one-file model bundle from a checkpoint",
        description="Strip a training checkpoint down to a model bundle.",
    )
    p.add_argument("checkpoint", type=Path, help="training checkpoint (last.pt, best.pt, ...)")
    p.add_argument("output", type=Path, help="model file to write")
    _add_common(p)

    p = sub.add_parser(
        "average",
        help="average the weights of several model files into one",
        description="Write a model bundle whose weights are the mean of the given epochs' (one run).",
    )
    p.add_argument("output", type=Path, help="model file to write")
    p.add_argument("models", nargs="+", type=Path, help="model bundles or checkpoints of one run")
    _add_common(p)

    p = sub.add_parser(
        "stats",
        help="feature normalization statistics of a manifest (train.stats_file)",
        description="Per-bin log-mel mean and std over a random sample of a manifest's utterances.",
    )
    p.add_argument("--config", type=Path, help="YAML config (features.*, train.stats_utterances, train.seed)")
    p.add_argument("--manifest", type=Path, required=True, help="training manifest (JSONL)")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding the audio")
    _add_set(p)
    _add_common(p)

    p = sub.add_parser(
        "report",
        help="plots of an experiment: curves, WER by length, an example",
        description="Plot training curves, WER by utterance length and one example with its transcript.",
    )
    p.add_argument("--exp", type=Path, required=True, help="experiment directory written by train")
    p.add_argument("--eval", type=Path, help="folder written by evaluate (for WER by length)")
    p.add_argument("--audio", type=Path, help="an audio file to show with its hypothesis")
    p.add_argument("--reference", help="the reference text of --audio")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    _add_common(p)

    p = sub.add_parser(
        "import-kaldi",
        help="write a manifest from a Kaldi data directory",
        description="Read wav.scp, text and optional utt2spk and segments; write a JSONL manifest.",
    )
    p.add_argument("data_dir", type=Path, help="Kaldi data directory (wav.scp, text, ...)")
    p.add_argument("--out", type=Path, required=True, help="manifest to write (JSONL)")
    p.add_argument(
        "--audio-root",
        type=Path,
        help="folder that relative wav.scp paths start from (default: the current directory, as Kaldi)",
    )
    _add_common(p)

    p = sub.add_parser(
        "train-lm",
        help="train a character LM on plain text (for --lm)",
        description="Train a character LSTM LM on text files, one sentence per line.",
    )
    p.add_argument("--text", type=Path, nargs="+", required=True, help="training text files (UTF-8)")
    p.add_argument("--out", type=Path, required=True, help="LM file to write (checkpoint: OUT.ckpt)")
    p.add_argument("--dev", type=Path, nargs="+", default=[], help="held-out text for perplexity")
    p.add_argument(
        "--model",
        type=Path,
        help="speech model whose vocabulary the LM uses (default: the characters of the text)",
    )
    p.add_argument("--config", type=Path, help="YAML config; its lm section is used")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt when it exists")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    _add_set(p)
    _add_common(p)

    p = sub.add_parser(
        "config",
        help="print the resolved configuration as YAML",
        description="Show the configuration that a config file and overrides resolve to.",
    )
    p.add_argument("--config", type=Path, help="YAML config")
    _add_set(p)
    _add_common(p)
    return parser


def _setup_logging(debug: bool, quiet: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if debug else "%(message)s")


def _run(args: argparse.Namespace) -> int:
    progress = not args.quiet
    if args.command == "train":
        from asr_s2s.config import load_config
        from asr_s2s.train import train

        config = load_config(args.config, args.overrides)
        result = train(
            config,
            args.train,
            args.dev,
            args.out,
            resume=args.resume,
            strict=args.strict,
            device=args.device,
            progress=progress,
        )
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone has the scores
            print(f"best dev WER {100 * result.best_wer:.2f}%  model: {result.model_path}")
    elif args.command == "evaluate":
        from asr_s2s.device import resolve_device
        from asr_s2s.evaluate import evaluate_manifest
        from asr_s2s.transcribe import load_model

        model = load_model(args.model, device=resolve_device(args.device), **_search_options(args))
        report = evaluate_manifest(
            model,
            args.manifest,
            args.out,
            beam_size=args.beam_size,
            batch_size=args.batch_size,
            progress=progress,
            num_workers=args.num_workers,
        )
        print(report.table())
    elif args.command == "transcribe":
        from asr_s2s.device import resolve_device
        from asr_s2s.transcribe import load_model
        from asr_s2s.writers import transcribe_files

        model = load_model(
            args.model,
            device=resolve_device(args.device),
            max_chunk_seconds=args.max_chunk_seconds,
            **_search_options(args),
        )
        transcribe_files(
            model,
            args.inputs,
            output_format=args.format,
            output_dir=args.output_dir,
            beam_size=args.beam_size,
            batch_size=args.batch_size,
            progress=progress,
        )
    elif args.command == "serve":
        from asr_s2s.device import resolve_device
        from asr_s2s.serve import API_KEY_ENV, ServeConfig, serve
        from asr_s2s.transcribe import load_model

        config = ServeConfig(
            host=args.host,
            port=args.port,
            api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            max_upload_mb=args.max_upload_mb,
            model_name=args.model_name,
            beam_size=args.beam_size,
        )
        config.check()
        model = load_model(
            args.model,
            device=resolve_device(args.device),
            max_chunk_seconds=args.max_chunk_seconds,
            **_search_options(args),
        )
        serve(model, config, log_level="warning" if args.quiet else "debug" if args.debug else "info")
    elif args.command == "export":
        from asr_s2s.checkpoint import export_model

        export_model(args.checkpoint, args.output)
        print(f"wrote {args.output}")
    elif args.command == "average":
        from asr_s2s.checkpoint import average_models

        average_models(args.models, args.output)
        print(f"wrote {args.output} (mean of {len(args.models)} models)")
    elif args.command == "stats":
        from asr_s2s.config import load_config
        from asr_s2s.data import manifest_stats
        from asr_s2s.features import write_stats

        config = load_config(args.config, args.overrides)
        t = config.train
        mean, std, count = manifest_stats(
            args.manifest, config.features, t.stats_utterances, t.seed, args.workers
        )
        write_stats(args.out, mean, std, utterances=count, manifest=str(args.manifest))
        print(f"wrote {args.out} (statistics of {count} utterances of {args.manifest})")
    elif args.command == "report":
        from asr_s2s.report import write_report

        for name, path in write_report(args.exp, args.eval, args.out, args.audio, args.reference).items():
            print(f"{name}: {path}")
    elif args.command == "import-kaldi":
        from asr_s2s.kaldi import import_kaldi

        result = import_kaldi(args.data_dir, args.out, args.audio_root)
        for problem in result.problems[:20]:
            log.warning("skipped: %s", problem)
        if len(result.problems) > 20:
            log.warning("... and %d more problems", len(result.problems) - 20)
        print(f"wrote {args.out}: {result.summary()}")
    elif args.command == "train-lm":
        from asr_s2s.config import load_config
        from asr_s2s.device import resolve_device
        from asr_s2s.lm import train_lm

        config = load_config(args.config, args.overrides)
        device = resolve_device(args.device)
        vocab = None
        if args.model is not None:
            from asr_s2s.checkpoint import load_bundle

            vocab = load_bundle(args.model).vocab
        result = train_lm(
            config, args.text, args.out, args.dev, vocab, args.resume, device, progress=progress
        )
        print(f"dev perplexity {result.dev_perplexity:.3f}  LM: {result.path}  ({result.steps} steps)")
    elif args.command == "config":
        import yaml

        from asr_s2s.config import load_config

        print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``asr-s2s`` and ``python -m asr_s2s``; returns the exit status."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    try:
        return _run(args)
    except AsrError as err:
        if args.debug:
            raise
        from asr_s2s.train import Interrupted

        print(f"asr-s2s: {'stopped' if isinstance(err, Interrupted) else 'error'}: {err}", file=sys.stderr)
        return 130 if isinstance(err, Interrupted) else 1
    except OSError as err:
        # A file-system failure that no library function turned into an AsrError (disk full, no
        # permission, a path that is a file): the environment's fault, so one line, not a traceback.
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"asr-s2s: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("asr-s2s: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
