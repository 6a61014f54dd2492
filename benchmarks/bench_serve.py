"""Load test of ``asr-s2s serve``: requests per second and p50/p99 latency for 1, 4 and 16 concurrent
clients sending FSDD-length (about 0.5 s) and 10 s files, with dynamic batching against
``--max-batch 1``, side by side in one run.

Each server is ``python -m asr_s2s serve`` in its own process on 127.0.0.1 (a free port, no other
address), one per batching setting, both up for the whole run and taking turns cell by cell (so
both see the same load from other processes). The clients are ``httpx.AsyncClient`` tasks in this
process, each sending one request after another (multipart ``file``, ``response_format=json``) and
timing it from send to answer; the server's CPU time per request comes from /proc. Every cell is
bounded: at most ``--requests`` requests (10 s files: ``--long-requests``) and no new request after
``--cell-seconds``. One request per server and file kind is sent first and not timed.

The model is the newest ``exp/digits*/model.pt`` when one exists. Otherwise it is an untrained
model of the digits recipe's shape whose decoder always emits ``e`` up to a length limit of 15
characters per second of audio (``bench_inference.forced_length_model``), so that decoding runs
as long as for a real transcript; the search is the config's (beam 5 for the digits recipe).
Short files are real FSDD recordings when ``../shared/data/fsdd`` is there, else synthetic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import benchlib
import httpx
import numpy as np
import soundfile as sf
import torch
from bench_inference import forced_decode_config, forced_length_model, write_waves

from asr_s2s.checkpoint import save_model
from asr_s2s.text import Vocabulary

FSDD = benchlib.REPO.parent / "shared" / "data" / "fsdd" / "recordings"
CONCURRENCY = (1, 4, 16)


def trained_model() -> Path | None:
    """The newest trained digits model under exp/, if any."""
    found = sorted(benchlib.REPO.glob("exp/digits*/model.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def forced_model(folder: Path, config_path: Path | None) -> tuple[Path, str]:
    """An untrained digits-shape bundle with the forced-length decoder, and a description."""
    config, source = benchlib.digits_config(config_path)
    vocab = Vocabulary.build([" ".join(benchlib.DIGIT_CHARS)])
    model = forced_length_model(config, vocab, torch.device("cpu"))
    decode = forced_decode_config(config, config.decode.beam_size, config.decode.batch_size)
    path = folder / "forced.pt"
    save_model(path, model, replace(config, decode=decode), vocab)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return path, (
        f"untrained model of the digits shape ({source}, {params:.1f} M parameters), decoder forced to "
        f"{benchlib.CHARS_PER_SECOND:.0f} characters per audio second, beam {config.decode.beam_size}"
    )


def short_files(folder: Path, count: int, seed: int) -> tuple[list[Path], str]:
    """FSDD recordings (the first ``count`` of a fixed shuffle), or synthetic 0.5 s files."""
    if FSDD.is_dir():
        files = sorted(FSDD.glob("*.wav"))
        if files:
            rng = np.random.default_rng(seed)
            chosen = [files[i] for i in rng.permutation(len(files))[:count]]
            return chosen, f"{len(chosen)} FSDD recordings"
    return write_waves(folder, [0.5] * count, seed, "short"), f"{count} synthetic 0.5 s files"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``asr-s2s serve`` in a subprocess on 127.0.0.1."""

    def __init__(self, model: Path, max_batch: int, max_wait_ms: float, threads: int, device: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "asr_s2s", "--quiet", "serve", "--model", str(model),
            "--host", "127.0.0.1", "--port", str(self.port), "--device", device,
            "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--max-queue", "256",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ASR_S2S_API_KEY": ""}
        self.log = tempfile.TemporaryFile("w+")  # not a pipe: a full pipe would stall the server
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"asr-s2s serve failed: {self.log.read()}")
            if time.monotonic() > deadline:
                raise SystemExit("asr-s2s serve did not start within 180 s")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux; NaN elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def health(self) -> dict:
        return httpx.get(f"{self.base}/health", timeout=10).json()

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def load(base: str, files: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent senders; returns latencies (s), errors and the wall time."""
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent, errors
        while sent < requests and time.monotonic() < stop:
            data = files[sent % len(files)]
            sent += 1
            began = time.perf_counter()
            response = await http.post(
                "/v1/audio/transcriptions", files={"file": ("a.wav", data)}, data={"model": "asr-s2s"}
            )
            if response.status_code == 200:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1

    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        began = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "wall": wall}


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=96, help="requests per cell, short files")
    p.add_argument("--long-requests", type=int, default=32, help="requests per cell, 10 s files")
    p.add_argument("--cell-seconds", type=float, default=40.0, help="no new request after this, per cell")
    p.add_argument("--max-batch", type=int, default=16, help="the batching server's --max-batch")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="the batching server's --max-wait-ms")
    p.add_argument("--model", type=Path, help="model to serve (default: exp/digits*/model.pt, else forced)")
    p.add_argument("--config", type=Path, help="config of the untrained model (default: the digits recipe's)")
    args = p.parse_args()
    if args.quick:
        args.requests, args.long_requests, args.cell_seconds = 16, 4, 10.0
    run = benchlib.start("serve", args)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        model = args.model or trained_model()
        if model is not None:
            inside = model.resolve().is_relative_to(benchlib.REPO)
            model_text = f"trained model {model.resolve().relative_to(benchlib.REPO) if inside else model}"
        else:
            model, model_text = forced_model(folder, args.config)
        shorts, short_text = short_files(folder, 32, args.seed)
        longs = write_waves(folder, [10.0] * 4, args.seed + 1, "long")
        kinds = {
            "FSDD ~0.5 s": [p.read_bytes() for p in shorts],
            "10 s": [p.read_bytes() for p in longs],
        }
        mean_short = float(np.mean([sf.info(str(p)).duration for p in shorts]))
        settings = {
            f"batching (max-batch {args.max_batch}, {args.max_wait_ms:g} ms)": args.max_batch,
            "max-batch 1": 1,
        }
        table = benchlib.Table(
            f"asr-s2s serve on 127.0.0.1, {model_text}; {run.device}, {args.threads} threads for the "
            f"server; short files: {short_text} (mean {mean_short:.2f} s)",
            [
                "file",
                "clients",
                "server",
                "requests",
                "errors",
                "req/s",
                "p50 ms",
                "p99 ms",
                "files/batch",
                "server CPU ms/req",
            ],
        )
        data: dict = {"model": model_text, "short_files": short_text, "cells": []}
        results: dict[tuple[str, int, str], dict] = {}
        with contextlib.ExitStack() as stack:
            # Both servers stay up and take turns cell by cell, so that both see the same load from
            # other processes; the idle one uses no CPU.
            servers = {
                name: stack.enter_context(Server(model, size, args.max_wait_ms, args.threads, args.device))
                for name, size in settings.items()
            }
            for kind, files in kinds.items():
                count = args.requests if kind.startswith("FSDD") else args.long_requests
                for server in servers.values():
                    asyncio.run(load(server.base, files[:1], 1, 1, 60.0))  # warm-up, not timed
                for clients in CONCURRENCY:
                    for name, server in servers.items():
                        before, cpu = server.health(), server.cpu_seconds()
                        cell = asyncio.run(load(server.base, files, clients, count, args.cell_seconds))
                        cell["cpu_s"] = server.cpu_seconds() - cpu
                        after = server.health()
                        batches = after["batches"] - before["batches"]
                        decoded = after["requests_decoded"] - before["requests_decoded"]
                        cell["files_per_batch"] = decoded / batches if batches else 0.0
                        results[(kind, clients, name)] = cell
                        print(
                            f"{kind:12s} {clients:2d} clients  {name}: {len(cell['latencies'])} done",
                            flush=True,
                        )
        for kind in kinds:
            for clients in CONCURRENCY:
                for name in settings:
                    cell = results[(kind, clients, name)]
                    lat = np.array(cell["latencies"]) * 1000
                    done = len(lat)
                    rps = done / cell["wall"] if cell["wall"] else 0.0
                    p50 = float(np.percentile(lat, 50)) if done else float("nan")
                    p99 = float(np.percentile(lat, 99)) if done else float("nan")
                    cpu_ms = 1000 * cell["cpu_s"] / done if done else float("nan")
                    table.add(
                        kind,
                        clients,
                        name,
                        done,
                        cell["errors"],
                        rps,
                        p50,
                        p99,
                        cell["files_per_batch"],
                        cpu_ms,
                    )
                    data["cells"].append(
                        {
                            "file": kind,
                            "clients": clients,
                            "server": name,
                            "requests": done,
                            "errors": cell["errors"],
                            "wall_s": cell["wall"],
                            "requests_per_s": rps,
                            "p50_ms": p50,
                            "p99_ms": p99,
                            "files_per_batch": cell["files_per_batch"],
                            "server_cpu_s": cell["cpu_s"],
                        }
                    )
    benchlib.finish(run, [table], [], data)


if __name__ == "__main__":
    main()
