"""Decoding cost of each beam-search scorer: decoder alone, + CTC prefix scores, + character LM, + both.

A trained model decodes real utterances of a manifest in length-sorted batches of
``decode.batch_size`` (as ``asr-s2s evaluate`` does). Log-mels are computed once beforehand, so the
timings cover the encoder and the search only. RTF = decoding time / audio duration. Without
``--lm`` an untrained LM of the default ``lm`` size is used: the cost does not depend on the weights.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import benchlib
import torch

from asr_s2s.audio import load_audio
from asr_s2s.checkpoint import load_bundle
from asr_s2s.config import DecodeConfig, LMConfig
from asr_s2s.decoding import decode
from asr_s2s.features import LogMel
from asr_s2s.lm import CharLM, load_lm


def main() -> None:
    p = benchlib.parser(__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="model bundle (with a CTC head)")
    p.add_argument("--manifest", type=Path, required=True, help="utterances to decode (a dev split)")
    p.add_argument("--lm", type=Path, help="character LM (default: an untrained one of the default size)")
    p.add_argument("--utts", type=int, default=200, help="utterances decoded (the manifest's first)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--ctc-weight", type=float, default=0.3)
    p.add_argument("--lm-weight", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    if args.quick:
        args.utts, args.repeats = 16, 1
    run = benchlib.start("scorers", args)
    bundle = load_bundle(args.model, run.device)
    model, config = bundle.model, bundle.config
    if args.lm:
        lm = load_lm(args.lm, run.device, vocab=bundle.vocab).lm
    else:
        lm = CharLM(LMConfig(), len(bundle.vocab)).to(run.device).eval()
    logmel = LogMel(config.features)
    root = args.manifest.parent
    feats, seconds = [], 0.0
    with args.manifest.open(encoding="utf-8") as handle:
        for line in list(handle)[: args.utts]:
            entry = json.loads(line)
            path = Path(entry["audio_filepath"])
            wave, _ = load_audio(path if path.is_absolute() else root / path, config.features.sample_rate)
            seconds += len(wave) / config.features.sample_rate
            feats.append(logmel(wave))
    feats.sort(key=len, reverse=True)
    size = config.decode.batch_size
    batches = []
    for start in range(0, len(feats), size):
        chunk = feats[start : start + size]
        lengths = torch.tensor([len(f) for f in chunk])
        padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        batches.append((padded.to(run.device), lengths.to(run.device)))
    settings = {
        "decoder": {},
        "decoder + CTC": {"ctc_weight": args.ctc_weight},
        "decoder + LM": {"lm_weight": args.lm_weight},
        "decoder + CTC + LM": {"ctc_weight": args.ctc_weight, "lm_weight": args.lm_weight},
    }
    table = benchlib.Table(
        f"Beam-{args.beam} decoding cost per scorer, {len(feats)} utterances ({seconds:.0f} s of audio) "
        f"of {args.manifest.name}, batches of {size}, {run.device}, {args.threads} threads, "
        f"best of {args.repeats}",
        ["scorers", "time s", "CPU s", "RTF", "x decoder alone"],
    )
    data: dict[str, object] = {"model": str(args.model), "manifest": str(args.manifest), "runs": []}
    base = None
    for name, weights in settings.items():
        cfg = dataclasses.replace(config.decode, beam_size=args.beam, **weights)

        def once(cfg: DecodeConfig = cfg) -> None:
            with benchlib.autocast(run.device):
                for padded, lengths in batches:
                    decode(model, padded, lengths, cfg, lm=lm)

        fastest = benchlib.best(benchlib.repeat(once, run.device, args.repeats))
        base = base or fastest.wall
        table.add(name, fastest.wall, fastest.cpu, fastest.wall / seconds, fastest.wall / base)
        data["runs"].append({"scorers": name, "wall": fastest.wall, "cpu": fastest.cpu, "audio_s": seconds})
    benchlib.finish(run, [table], [], data)


if __name__ == "__main__":
    main()
