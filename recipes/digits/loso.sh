#!/usr/bin/env bash
# Leave-one-speaker-out (LOSO) over the FSDD speakers: for each speaker, prepare a corpus with that
# speaker held out (prepare.py --test-speakers), train on the others, and score both the
# unseen-speaker test (all recordings of the held-out speaker) and the seen-speaker test_seen
# (the training speakers' recordings 0-4, never heard in training).
#
#   bash recipes/digits/loso.sh [--config FILE] [--exp DIR] [--data DIR] [--speakers a,b,...]
#                               [--seed N] [--prepare-args "--num-train 8000 ..."] [-- extra train args]
#
# Folds run one after the other; each resumes from EXP/<speaker>/last.pt and a scored fold is
# skipped, so re-running after an interruption continues. Writes EXP/loso.json and EXP/loso.md
# (recipes/digits/loso_report.py).
set -euo pipefail
cd "$(dirname "$0")/../.."

config=recipes/digits/conf/default.yaml
exp=exp/digits_loso
data=data/digits_loso
fsdd=${FSDD_DIR:-../shared/data/fsdd/recordings}
speakers=george,jackson,nicolas,yweweler
seed=0
prepare_args=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --config) config=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --speakers) speakers=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --prepare-args) prepare_args=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "loso.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
asr=${ASR_S2S:-asr-s2s}
python=${PYTHON:-python}

IFS=, read -r -a folds <<< "$speakers"
for spk in "${folds[@]}"; do
  d=$data/$spk
  e=$exp/$spk
  if [ ! -f "$d/test_seen.jsonl" ]; then
    echo "== $spk: prepare $d"
    fsdd_args=()
    [ -d "$fsdd" ] && fsdd_args=(--fsdd-dir "$fsdd")
    # shellcheck disable=SC2086  # prepare_args is a list of options
    $python recipes/digits/prepare.py "${fsdd_args[@]}" --out "$d" --test-speakers "$spk" $prepare_args
  fi
  if [ ! -f "$e/eval_seen/summary.json" ]; then
    echo "== $spk: train ($config) into $e"
    start=$SECONDS
    $asr train --config "$config" --train "$d/train.jsonl" --dev "$d/dev.jsonl" --out "$e" --resume \
      --set train.seed="$seed" "${extra[@]}"
    echo "$((SECONDS - start))" > "$e/train_seconds"
    $asr evaluate --model "$e/model.pt" --manifest "$d/test.jsonl" --out "$e/eval_unseen"
    $asr evaluate --model "$e/model.pt" --manifest "$d/test_seen.jsonl" --out "$e/eval_seen"
  fi
  $python recipes/digits/loso_report.py "$exp"
done
