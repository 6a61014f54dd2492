#!/usr/bin/env bash
# LibriSpeech recipe: download -> manifests -> feature statistics -> train -> average -> evaluate -> report.
#
#   bash recipes/librispeech/run.sh [--root DIR] [--train-subsets "train-clean-100 ..."] [--config FILE]
#        [--exp DIR] [--data DIR] [--stage N] [--stop-stage N] [--nproc N] [--no-download]
#        [--nnodes N --node-rank R --master-addr HOST [--master-port P]] [--average N]
#        [-- extra train args, e.g. --set train.epochs=2 --device cuda]
#
# Stages: 0 download the missing subsets (MD5-verified, resumable) into --root; 1 manifests (one per
# subset, the training subsets joined into DATA/train.jsonl); 2 feature statistics of a random sample
# of the training set (EXP/feature_stats.json); 3 train (torchrun with --nproc N processes per node);
# 4 average the N best epochs into EXP/model_avg.pt; 5 evaluate on every available dev-clean, dev-other,
# test-clean, test-other; 6 report (EXP/results.md and plots). Every stage skips work already done:
# re-running after an interruption continues where it stopped (training resumes from EXP/last.pt).
# On several nodes run stage 3 on every node (--stage 3 --stop-stage 3 --nnodes ... --node-rank ...),
# then stages 4-6 on one.
set -euo pipefail
cd "$(dirname "$0")/../.."

root=data/librispeech
train_subsets="train-clean-100"
config=recipes/librispeech/conf/train_100h.yaml
exp=exp/librispeech_100h
data=""
stage=0
stop_stage=6
nproc=1
nnodes=1
node_rank=0
master_addr=""
master_port=29500
average=5
download=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --train-subsets) train_subsets=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --nnodes) nnodes=$2; shift 2 ;;
    --node-rank) node_rank=$2; shift 2 ;;
    --master-addr) master_addr=$2; shift 2 ;;
    --master-port) master_port=$2; shift 2 ;;
    --average) average=$2; shift 2 ;;
    --no-download) download=0; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1 (see the top of $0)" >&2; exit 2 ;;
  esac
done
data=${data:-$exp/data}
asr=${ASR_S2S:-asr-s2s}
python=${PYTHON:-python}
eval_subsets="dev-clean dev-other test-clean test-other"
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# The LibriSpeech folder: --root may be the folder that holds LibriSpeech/ or LibriSpeech/ itself.
libri() { if [ -d "$root/LibriSpeech" ] || [ "$(basename "$root")" != LibriSpeech ]; then echo "$root/LibriSpeech"; else echo "$root"; fi; }
SECONDS=0

if run 0; then
  echo "== stage 0: download the missing subsets into $root"
  missing=()
  for s in $train_subsets $eval_subsets; do
    [ -d "$(libri)/$s" ] || missing+=("$s")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "all of $train_subsets $eval_subsets are in $(libri)"
  elif [ "$download" -eq 1 ]; then
    $python recipes/librispeech/prepare.py --download "$root" --subsets "${missing[@]}" --out "$data"
  else
    echo "--no-download: not fetching ${missing[*]}"
  fi
fi

if run 1; then
  echo "== stage 1: manifests in $data"
  present=()
  for s in $train_subsets; do
    [ -d "$(libri)/$s" ] || { echo "run.sh: training subset $s is not in $(libri)" >&2; exit 1; }
    present+=("$s")
  done
  for s in $eval_subsets; do
    [ -d "$(libri)/$s" ] && present+=("$s")
  done
  todo=()
  for s in "${present[@]}"; do
    [ -f "$data/$s.jsonl" ] || todo+=("$s")
  done
  if [ ${#todo[@]} -gt 0 ]; then
    $python recipes/librispeech/prepare.py --root "$root" --subsets "${todo[@]}" --out "$data"
  fi
  [ -f "$data/dev-clean.jsonl" ] || { echo "run.sh: dev-clean is needed to score training epochs" >&2; exit 1; }
  # The training subsets as one manifest (paths are relative to $data, so they stay valid).
  # shellcheck disable=SC2086  # a list of subsets
  parts=$(for s in $train_subsets; do echo "$data/$s.jsonl"; done)
  # shellcheck disable=SC2086
  cat $parts > "$data/train.jsonl.tmp" && mv "$data/train.jsonl.tmp" "$data/train.jsonl"
  echo "train.jsonl: $(wc -l < "$data/train.jsonl") utterances from $train_subsets"
fi

if run 2; then
  echo "== stage 2: feature statistics of a sample of the training set"
  if [ -f "$exp/feature_stats.json" ]; then
    echo "$exp/feature_stats.json exists"
  else
    mkdir -p "$exp"
    $asr stats --config "$config" --manifest "$data/train.jsonl" --out "$exp/feature_stats.json" \
      --workers "${STATS_WORKERS:-4}"
  fi
fi

if run 3; then
  echo "== stage 3: train ($config) into $exp, $nproc process(es) per node on $nnodes node(s)"
  args=(train --config "$config" --train "$data/train.jsonl" --dev "$data/dev-clean.jsonl" --out "$exp"
        --resume --set train.stats_file="$exp/feature_stats.json" "${extra[@]}")
  if [ "$nproc" -gt 1 ] || [ "$nnodes" -gt 1 ]; then
    if [ "$nnodes" -gt 1 ]; then
      [ -n "$master_addr" ] || { echo "run.sh: --nnodes > 1 needs --master-addr" >&2; exit 2; }
      launch=(--nnodes "$nnodes" --node_rank "$node_rank" --master_addr "$master_addr" --master_port "$master_port")
    else
      launch=(--standalone)
    fi
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $python -m torch.distributed.run "${launch[@]}" \
      --nproc_per_node "$nproc" -m asr_s2s "${args[@]}"
  else
    $asr "${args[@]}"
  fi
fi

model=$exp/model.pt
if run 4; then
  echo "== stage 4: average the $average best epochs"
  # The trainer keeps the train.average_best best epochs (by dev WER) in $exp/epochs.
  mapfile -t epochs < <(find "$exp/epochs" -name 'epoch-*.pt' 2>/dev/null | sort)
  newest=$(ls -t "${epochs[@]}" 2>/dev/null | head -n 1)
  if [ -f "$exp/model_avg.pt" ] && [ "$exp/model_avg.pt" -nt "$newest" ]; then
    echo "$exp/model_avg.pt is newer than every kept epoch"
  elif [ ${#epochs[@]} -ge 2 ] && [ "$average" -ge 2 ]; then
    best=$($python - "$exp/last.pt" "$average" <<'PY'
import sys, torch
best = torch.load(sys.argv[1], map_location="cpu", weights_only=False)["best"]
print(" ".join(b["path"] for b in best[: int(sys.argv[2])]))
PY
)
    # shellcheck disable=SC2086  # a list of paths relative to $exp
    $asr average "$exp/model_avg.pt" $(for p in $best; do echo "$exp/$p"; done)
  else
    echo "fewer than 2 kept epochs (train.average_best): evaluating $exp/model.pt"
  fi
fi
[ -f "$exp/model_avg.pt" ] && model=$exp/model_avg.pt

if run 5; then
  echo "== stage 5: evaluate $model"
  for s in $eval_subsets; do
    if [ ! -f "$data/$s.jsonl" ]; then
      echo "$s: not available, skipped"
    elif [ -f "$exp/eval_$s/summary.json" ] && [ "$exp/eval_$s/summary.json" -nt "$model" ]; then
      echo "$s: already scored"
    else
      $asr evaluate --model "$model" --manifest "$data/$s.jsonl" --out "$exp/eval_$s" ${EVAL_ARGS:-}
    fi
  done
fi

if run 6; then
  echo "== stage 6: report"
  $python - "$exp" "$model" $eval_subsets > "$exp/results.md" <<'PY'
import json, sys
from pathlib import Path
exp, model, subsets = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
print(f"# {exp.name}\n\nModel: `{model}`\n")
print("| subset | WER | CER | utterances | words | failed |")
print("|---|---:|---:|---:|---:|---:|")
for s in subsets:
    p = exp / f"eval_{s}" / "summary.json"
    if p.exists():
        r = json.loads(p.read_text())
        print(f"| {s} | {100 * r['wer']:.2f} % | {100 * r['cer']:.2f} % | {r['utterances']} | "
              f"{r['ref_words']} | {r.get('failed_utterances', 0)} |")
PY
  cat "$exp/results.md"
  for s in test-clean dev-clean; do
    if [ -f "$exp/eval_$s/summary.json" ]; then
      $asr report --exp "$exp" --eval "$exp/eval_$s" --out "$exp/report"
      break
    fi
  done
fi
echo "== done in ${SECONDS}s"
