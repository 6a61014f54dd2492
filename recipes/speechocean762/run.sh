#!/usr/bin/env bash
# speechocean762 recipe: prepare -> train -> evaluate dev (and test) -> transcribe a sample -> report.
#
#   bash recipes/speechocean762/run.sh [--corpus DIR] [--stage N] [--stop-stage N] [--config FILE]
#                                      [--exp DIR] [--data DIR] [--seed N] [--prepare-args "..."]
#                                      [-- extra train args]
#
# --corpus is the folder holding train/ (and optionally test/), Kaldi data directories whose wav.scp
# paths are relative to it (default ../shared/data/speechocean762). Stages: 0 prepare, 1 train,
# 2 evaluate dev (and test when the corpus has it), 3 transcribe a sample, 4 report. Training
# resumes from EXP/last.pt, so re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

corpus=../shared/data/speechocean762
stage=0
stop_stage=4
config=recipes/speechocean762/conf/default.yaml
exp=exp/speechocean762
data=data/speechocean762
seed=0
prepare_args=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus) corpus=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --prepare-args) prepare_args=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
asr=${ASR_S2S:-asr-s2s}
python=${PYTHON:-python}
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
SECONDS=0

if run 0; then
  echo "== stage 0: prepare $corpus into $data"
  # shellcheck disable=SC2086  # prepare_args is a list of options
  $python recipes/speechocean762/prepare.py --corpus "$corpus" --out "$data" $prepare_args
fi

if run 1; then
  echo "== stage 1: train ($config) into $exp"
  $asr train --config "$config" --train "$data/train.jsonl" --dev "$data/dev.jsonl" --out "$exp" \
    --resume --set train.seed="$seed" "${extra[@]}"
fi

splits=(dev)
[ -f "$data/test.jsonl" ] && splits+=(test)
if run 2; then
  for split in "${splits[@]}"; do
    echo "== stage 2: evaluate on $split"
    $asr evaluate --model "$exp/model.pt" --manifest "$data/$split.jsonl" --out "$exp/eval_$split"
  done
fi

last=${splits[-1]}
read -r sample_audio reference < <($python -c "
import json, sys
from pathlib import Path
m = Path(sys.argv[1]); r = json.loads(m.open().readline())
p = Path(r['audio_filepath']); p = p if p.is_absolute() else m.parent / p
print(p, r['text'])" "$data/$last.jsonl")
if run 3; then
  echo "== stage 3: transcribe one $last file"
  echo "file:       $sample_audio"
  hypothesis=$($asr --quiet transcribe --model "$exp/model.pt" --format txt "$sample_audio")
  echo "hypothesis: $hypothesis"
  echo "reference:  $reference"
fi

if run 4; then
  echo "== stage 4: report"
  $asr report --exp "$exp" --eval "$exp/eval_$last" --audio "$sample_audio" --reference "$reference" \
    --out "$exp/report"
fi

echo "== done in ${SECONDS}s"
for split in "${splits[@]}"; do
  if [ -f "$exp/eval_$split/summary.json" ]; then
    $python - "$exp/eval_$split/summary.json" "$split" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]} WER {100 * s['wer']:.2f}%  CER {100 * s['cer']:.2f}%  "
      f"(S/D/I {s['substitutions']}/{s['deletions']}/{s['insertions']}, {s['ref_words']} words, "
      f"{s['utterances']} utterances)")
PY
  fi
done
echo "model:  $exp/model.pt"
echo "report: $exp/report (training.png, wer_by_length.png, example.png)"
