"""Run every benchmark (``make bench``), each in its own process, and gather their tables.

Writes ``<results>/summary.md`` (the tables in Markdown, with each script's command, load average
and targets) for BENCHMARKS.md. Exits non-zero when a script fails; a missed target is reported,
not a failure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchlib, when run from elsewhere

import benchlib  # noqa: E402

SCRIPTS = {
    "features": "bench_features.py",
    "training": "bench_training.py",
    "roofline": "bench_roofline.py",
    "inference": "bench_inference.py",
    "serve": "bench_serve.py",
    "memory": "bench_memory.py",
    "recipe": "bench_recipe.py",
    "peer": "bench_peer.py",
}
# Benchmarks against another toolkit run only where it is installed (pip install -e '.[bench]').
NEEDS = {"peer": "speechbrain"}


def skip_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (its peer toolkit is not importable), or None."""
    module = NEEDS.get(name)
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return f"skipped: {module} is not installed (pip install -e '.[bench]' installs it)"


def summary(
    names: list[str],
    results: Path,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    skipped: dict[str, str] | None = None,
) -> str:
    """Markdown of the result files of ``names``; ``skipped`` maps names that did not run to why."""
    skipped = skipped or {}
    reports = {
        n: json.loads(p.read_text(encoding="utf-8")) for n in names if (p := results / f"{n}.json").exists()
    }
    out = [
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load[0])}; "
        f"after: {', '.join(f'{x:.2f}' for x in load[1])}."
    ]
    if any(r["shared_machine"] for r in reports.values()):
        out.append("The machine was shared during the run: other processes were using the cores.")
    for name in names:
        out += ["", f"### {name}", ""]
        if name in skipped:
            out.append(f"({skipped[name]})")
            continue
        if name not in reports:
            out.append("(no result: the script failed)")
            continue
        r = reports[name]
        out.append(
            f"`{r['command']}` ({r['seconds']:.0f} s, 1-minute load {r['load_before'][0]:.2f} before, "
            f"{r['load_after'][0]:.2f} after)"
        )
        for t in r["tables"]:
            out += ["", benchlib.Table(t["title"], t["headers"], t["rows"]).markdown()]
        if r["targets"]:
            out += [""] + [f"- {t['text']}" for t in r["targets"]]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke-test sizes (passed to every script)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {', '.join(SCRIPTS)}"
    )
    p.add_argument("--results", type=Path, default=benchlib.RESULTS)
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    common = ["--device", args.device, "--threads", str(args.threads)]
    common += ["--results", str(args.results)] if args.results != benchlib.RESULTS else []
    common += ["--quick"] if args.quick else []
    load_before = os.getloadavg()
    failed, skipped = [], {}
    for name in names:
        # A previous run's file must not pass for this one's when the script fails.
        (args.results / f"{name}.json").unlink(missing_ok=True)
        reason = skip_reason(name)
        if reason is not None:
            skipped[name] = reason
            print(f"==== {name}: {reason}", flush=True)
            continue
        print(f"==== {name}", flush=True)
        began = time.time()
        code = subprocess.call([sys.executable, str(HERE / SCRIPTS[name]), *common])
        print(f"==== {name}: exit {code} after {time.time() - began:.0f} s", flush=True)
        if code:
            failed.append(name)
    text = summary(names, args.results, (load_before, os.getloadavg()), skipped)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.md").write_text(text, encoding="utf-8")
    print(f"\nwrote {os.path.relpath(args.results / 'summary.md')}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
