#!/usr/bin/env bash
# Study (issue #9): WER by number of digits, final-state-only decoder vs attention (location, dot).
#
#   bash recipes/digits/study_length.sh [--stage N] [--stop-stage N] [--config FILE] [--exp DIR]
#        [--data DIR] [--max-digits N] [--seed N] [--modes "none location dot"]
#        [--prepare-args "--num-train 6000 ..."] [-- extra train args, given to every model]
#
# What RESULTS.md reports: bash recipes/digits/study_length.sh (all defaults).
#
# Stages: 0 prepare a corpus of 1..N digits per utterance (N = 15), 1 train one model per
# model.attention mode with otherwise identical settings (CONFIG, default conf/default.yaml, or the
# package defaults when that file is absent), 2 evaluate each on the test split (greedy), 3 write
# EXP/wer_by_length.{md,json,png}. Training resumes from EXP/MODE/last.pt.
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=3
config=recipes/digits/conf/default.yaml
exp=exp/study_length
data=data/digits15
fsdd=${FSDD_DIR:-../shared/data/fsdd/recordings}
max_digits=15
seed=0
modes="none location dot"
prepare_args="--num-train 6000"
# The study's settings on top of CONFIG: 60 ms encoder steps, because at 100 ms (conf/default.yaml)
# the character CTC aid is infeasible for the longest 15-digit utterances (more labels than frames);
# 6 epochs over the 6,000 utterances for both models. Extra arguments after -- come later and win.
study=(--set model.stack_frames=6 --set train.epochs=6)
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --max-digits) max_digits=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --prepare-args) prepare_args=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "study_length.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
asr=${ASR_S2S:-asr-s2s}
python=${PYTHON:-python}
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
config_args=()
if [ -f "$config" ]; then
  config_args=(--config "$config")
else
  echo "$config not found: training with the package defaults"
fi
SECONDS=0

if run 0; then
  echo "== stage 0: prepare 1..$max_digits-digit utterances in $data"
  if [ -f "$data/test.jsonl" ]; then
    echo "$data already prepared"
  else
    fsdd_args=()
    [ -d "$fsdd" ] && fsdd_args=(--fsdd-dir "$fsdd")  # otherwise prepare.py downloads FSDD
    # shellcheck disable=SC2086  # prepare_args is a list of options
    "$python" recipes/digits/prepare.py "${fsdd_args[@]}" --out "$data" --max-digits "$max_digits" $prepare_args
  fi
fi

for mode in $modes; do
  if run 1; then
    echo "== stage 1: train model.attention=$mode into $exp/$mode"
    # Last, so that an extra --set model.attention=... cannot override the mode under study.
    $asr train "${config_args[@]}" --train "$data/train.jsonl" --dev "$data/dev.jsonl" --out "$exp/$mode" \
      --resume --set train.seed="$seed" "${study[@]}" "${extra[@]}" --set model.attention="$mode"
  fi
  if run 2; then
    echo "== stage 2: evaluate $mode on the test split"
    $asr evaluate --model "$exp/$mode/model.pt" --manifest "$data/test.jsonl" --out "$exp/$mode/eval_test" \
      --beam-size 1
  fi
done

if run 3; then
  echo "== stage 3: WER by number of digits"
  # shellcheck disable=SC2086  # modes is a list
  "$python" - "$exp" $modes <<'EOF'
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from asr_s2s.checkpoint import load_bundle
from asr_s2s.report import wer_by_length

exp, modes = Path(sys.argv[1]), sys.argv[2:]
tables = {m: wer_by_length(exp / m / "eval_test" / "per_utterance.jsonl") for m in modes}
params = {m: sum(p.numel() for p in load_bundle(exp / m / "model.pt").model.parameters()) for m in modes}
lengths = sorted({n for table in tables.values() for n in table})

def cell(mode: str, n: int) -> str:
    row = tables[mode].get(n)
    return f"{100 * row['wer']:.1f}" if row else "-"

head = ["digits", "utterances", *(f"WER % {m} ({params[m] / 1e6:.2f}M params)" for m in modes)]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
for n in lengths:
    count = next(t[n]["utterances"] for t in tables.values() if n in t)
    lines.append("| " + " | ".join([str(n), str(count), *(cell(m, n) for m in modes)]) + " |")
(exp / "wer_by_length.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
(exp / "wer_by_length.json").write_text(
    json.dumps({"parameters": params, "wer_by_length": tables}, indent=2), encoding="utf-8"
)
fig, ax = plt.subplots(figsize=(7, 4))
for m in modes:
    ax.plot(list(tables[m]), [100 * v["wer"] for v in tables[m].values()], "o-", label=f"attention={m}")
ax.set(xlabel="digits in the utterance", ylabel="test WER (%)", title="WER by utterance length")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(exp / "wer_by_length.png", dpi=100)
print("\n".join(lines))
EOF
fi

echo "== done in ${SECONDS}s: $exp/wer_by_length.md, $exp/wer_by_length.png"
