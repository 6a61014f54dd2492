"""Shared pieces of the benchmark scripts: options, device set-up, timing, synthetic corpora, tables,
targets and the JSON result files.

Each ``bench_*.py`` script measures the project and its comparison in the same process, prints its
tables and writes ``benchmarks/results/<name>.json``; ``run_all.py`` runs them all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_s2s.config import Config, load_config
from asr_s2s.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_RATE = 16000
# Read speech runs at about 15 characters (letters and spaces) per second; LibriSpeech's transcripts do.
CHARS_PER_SECOND = 15.0
DIGIT_CHARS = "efghinorstuvwxz"  # the letters of "zero" ... "nine"
LIBRISPEECH_CHARS = "'abcdefghijklmnopqrstuvwxyz"
DIGITS_RECIPE = REPO / "recipes" / "digits" / "conf" / "default.yaml"


def parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="small sizes, few repeats: a smoke test, not a measurement"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs the models under bf16 autocast)")
    p.add_argument(
        "--threads", type=int, default=2, help="torch intra-op threads (default 2, the dev machine's cores)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the <name>.json result")
    return p


@dataclass
class Run:
    """One benchmark script's run: its options, device and the load average when it started."""

    name: str
    args: argparse.Namespace
    device: torch.device
    load_before: tuple[float, float, float]
    started: float = field(default_factory=time.time)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def start(name: str, args: argparse.Namespace) -> Run:
    """Fix threads and seeds, check the device; call before any measurement."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {args.device}: expected cpu or cuda")
    return Run(name, args, device, os.getloadavg())


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (as the trainer uses it); nothing on CPU, where the package runs float32."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds and this process's CPU seconds (all threads) of some work.

    The wall clock is the measure; the CPU time shows how much of it was this process working: on a
    machine shared with busier or higher-priority processes the wall clock grows, the CPU time not.
    """

    wall: float
    cpu: float

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def total(timings: Sequence[Timing]) -> Timing:
    """The sum of several timings."""
    return sum(timings, Timing(0.0, 0.0))


def best(timings: Sequence[Timing]) -> Timing:
    """The fastest of repeated identical runs: the one least disturbed by other processes."""
    return min(timings, key=lambda t: t.wall)


def timed(fn: Callable[[], Any], device: torch.device) -> Timing:
    """Wall and CPU time of one call of ``fn``, GPU work included."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def repeat(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[Timing]:
    """Timings of ``repeats`` calls after ``warmup`` untimed ones (first calls pay for allocation and
    kernel selection)."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device) for _ in range(repeats)]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- synthetic corpora -------------------------------------------------------------------------


def durations(kind: str, count: int, rng: np.random.Generator) -> np.ndarray:
    """Utterance lengths in seconds.

    ``digits``: 1-7 connected digits, uniform over 0.8-5 s. ``librispeech``: 2-16 s skewed long as
    LibriSpeech's training segments are (mean about 12 s, most between 10 and 16 s).
    """
    if kind == "digits":
        return rng.uniform(0.8, 5.0, count)
    if kind == "librispeech":
        return 2.0 + 14.0 * rng.beta(3.0, 1.2, count)
    raise ValueError(f"unknown corpus kind {kind!r}")


def synth_wave(seconds: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like float32 audio: a gliding harmonic tone under a syllable-rate envelope, plus noise.

    Feature extraction and the models do the same work whatever the signal; this only keeps values
    in the range real audio gives (no silence-only or clipped input).
    """
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    pitch = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 9))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 2 * np.pi)))
    wave = 0.2 * voiced * envelope + 0.01 * rng.standard_normal(n)
    return wave.astype(np.float32)


def synth_text(seconds: float, letters: str, rng: np.random.Generator) -> str:
    """Words of random ``letters`` at :data:`CHARS_PER_SECOND` characters (spaces included)."""
    target = max(1, int(round(CHARS_PER_SECOND * seconds)))
    words: list[str] = []
    length = -1
    while length < target:
        word = "".join(rng.choice(list(letters), int(rng.integers(2, 8))))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:target].strip()


def digits_config(path: Path | None = None) -> tuple[Config, str]:
    """The config at ``path``; by default the digits recipe's when the recipe ships one, else the
    documented default digits model."""
    if path is not None:
        try:
            return load_config(path), str(path)
        except ConfigError as err:  # a user's path: one line, as for --device
            raise SystemExit(str(err)) from None
    if DIGITS_RECIPE.exists():
        return load_config(DIGITS_RECIPE), str(DIGITS_RECIPE.relative_to(REPO))
    config = Config()
    m = config.model
    m.stack_frames, m.encoder_hidden, m.encoder_layers, m.decoder_hidden = 4, 128, 2, 256
    return (
        config,
        "ModelConfig defaults with stack_frames=4, encoder_hidden=128, encoder_layers=2, decoder_hidden=256",
    )


def librispeech_config() -> tuple[Config, str]:
    """A LibriSpeech-size model: 4x512 bidirectional encoder, 3x stacking, 2x512 decoder, 80 mels.

    Without attention, as the tutorial reference it is compared with; the LibriSpeech recipe's own
    models are ``recipes/librispeech/conf/*.yaml``, measured by ``bench_recipe.py``.
    """
    config = Config()
    m = config.model
    m.stack_frames, m.encoder_hidden, m.encoder_layers, m.bidirectional = 3, 512, 4, True
    m.decoder_hidden, m.decoder_layers = 512, 2
    config.features.n_mels = 80
    return config, "4x512 biLSTM encoder, stack 3, 2x512 decoder, 80 mels; other settings default"


# ---- reporting ---------------------------------------------------------------------------------


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        self.rows.append([fmt(c) for c in cells])

    def text(self) -> str:
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths))
        out = [self.title, line, "-" * len(line)]
        out += [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in self.rows
        ]
        return "\n".join(out)

    def markdown(self) -> str:
        numeric = [all(_is_number(r[i]) for r in self.rows) for i in range(len(self.headers))]
        out = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |"]
        out.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(out)


def _is_number(cell: str) -> bool:
    """Whether a formatted cell is a number (or empty): such columns are right-aligned."""
    try:
        float(cell.replace(",", "") or 0)
    except ValueError:
        return False
    return True


def fmt(value: Any) -> str:
    """Three significant digits for floats (ratios and rates span orders of magnitude)."""
    if isinstance(value, float):
        if value == 0 or not np.isfinite(value):
            return str(value)
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


@dataclass
class Target:
    """A goal from the issue: ``value`` against ``goal``, higher or lower being better."""

    what: str
    value: float
    goal: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def text(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        head = f"{self.what}: {fmt(self.value)} (target {sign} {fmt(self.goal)})"
        if self.met:
            return f"MET     {head}"
        factor = self.goal / self.value if self.higher_is_better else self.value / self.goal
        return f"MISSED  {head}: short by {factor:.2f}x"


def is_shared(before: Sequence[float], after: Sequence[float], threads: int) -> bool:
    """Whether other processes used the cores: the 1-minute load average above the core count
    before the run, or above the core count plus this run's own threads after it."""
    cores = os.cpu_count() or 1
    return before[0] > cores or after[0] > cores + threads


def command_line() -> str:
    """The command as typed from the repository root, for the record."""
    python = os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return shlex.join([python, script, *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def finish(run: Run, tables: Sequence[Table], targets: Sequence[Target], data: dict[str, Any]) -> Path:
    """Print the tables and targets, write ``<results>/<name>.json`` and return its path."""
    load_after = os.getloadavg()
    shared = is_shared(run.load_before, load_after, run.args.threads)
    print()
    for table in tables:
        print(table.text(), end="\n\n")
    for target in targets:
        print(target.text())
    print(f"load average before {run.load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)")
    if shared:
        print("note: the machine was shared during this run (other processes were using the cores)")
    payload = {
        "name": run.name,
        "command": command_line(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started)),
        "seconds": round(time.time() - run.started, 1),
        "device": str(run.device),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.args).items()},
        "machine": machine(),
        "load_before": run.load_before,
        "load_after": load_after,
        "shared_machine": shared,
        "tables": [asdict(t) for t in tables],
        "targets": [{**asdict(t), "met": t.met, "text": t.text()} for t in targets],
        "data": data,
    }
    run.args.results.mkdir(parents=True, exist_ok=True)
    path = run.args.results / f"{run.name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    print(f"wrote {os.path.relpath(path)}")
    return path


def _plain(value: Any) -> Any:
    """JSON form of the dataclasses and NumPy scalars in results."""
    if isinstance(value, Timing):
        return asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``size`` items (the last may be shorter)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
