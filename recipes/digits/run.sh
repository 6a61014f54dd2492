#!/usr/bin/env bash
# Connected-digits recipe: prepare -> train -> evaluate -> transcribe a sample -> report.
#
#   bash recipes/digits/run.sh [--stage N] [--stop-stage N] [--config FILE] [--exp DIR] [--data DIR]
#                              [--seed N] [--test-speaker NAME] [--prepare-args "--num-train 600 ..."]
#                              [-- extra train args]
#
# Trains on three of the four FSDD speakers of ../shared (george, jackson, nicolas, yweweler) and
# scores two tests: the held-out speaker (--test-speaker, all recordings: voices never heard) and
# the training speakers' recordings 0-4 (seen voices, unheard recordings).
# Stages: 0 prepare, 1 train, 2 evaluate, 3 transcribe a sample, 4 report. Training resumes from
# EXP/last.pt, so re-running after an interruption continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

stage=0
stop_stage=4
config=recipes/digits/conf/default.yaml
exp=exp/digits
data=data/digits
fsdd=${FSDD_DIR:-../shared/data/fsdd/recordings}
seed=0
speakers=george,jackson,nicolas,yweweler
test_speaker=nicolas
# The default config's data preparation (RESULTS.md): each training recording at its own random
# speed (0.85-1.15: tempo, pitch and formants, other voices); --prepare-args come after, to override.
default_prepare_args="--train-speed 0.85,1.15"
prepare_args=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --test-speaker) test_speaker=$2; shift 2 ;;
    --prepare-args) prepare_args=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
asr=${ASR_S2S:-asr-s2s}
run() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
SECONDS=0

if run 0; then
  echo "== stage 0: prepare the connected-digits corpus in $data"
  split_args=(--speakers "$speakers" --test-speakers "$test_speaker")
  if [ -f "$data/test_seen.jsonl" ]; then
    echo "$data already prepared"
  elif [ -d "$fsdd" ]; then
    # shellcheck disable=SC2086  # prepare_args is a list of options
    python recipes/digits/prepare.py --fsdd-dir "$fsdd" --out "$data" "${split_args[@]}" $default_prepare_args $prepare_args
  else
    echo "$fsdd not found: downloading the pinned FSDD release (every recording checked against its SHA-256)"
    # shellcheck disable=SC2086
    python recipes/digits/prepare.py --out "$data" "${split_args[@]}" $default_prepare_args $prepare_args
  fi
fi

if run 1; then
  # One process: on two free CPU cores, one process with two threads trains about 1.1x faster than
  # two single-threaded DDP processes at the same batch (RESULTS.md). NPROC=N launches N DDP
  # processes with torchrun instead (several GPUs); train.max_frames is then per process.
  nproc=${NPROC:-1}
  echo "== stage 1: train ($config) into $exp with $nproc process(es)"
  args=(train --config "$config" --train "$data/train.jsonl" --dev "$data/dev.jsonl" --out "$exp"
        --resume --set train.seed="$seed" "${extra[@]}")
  if [ "$nproc" -gt 1 ]; then
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} python -m torch.distributed.run --standalone --nproc_per_node "$nproc" -m asr_s2s "${args[@]}"
  else
    $asr "${args[@]}"
  fi
fi

if run 2; then
  echo "== stage 2: evaluate on the unseen speaker ($test_speaker) and on the seen speakers"
  $asr evaluate --model "$exp/model.pt" --manifest "$data/test.jsonl" --out "$exp/eval_test"
  $asr evaluate --model "$exp/model.pt" --manifest "$data/test_seen.jsonl" --out "$exp/eval_seen"
fi

sample=$(python -c "import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r['id'])" "$data/test.jsonl")
sample_audio=$(find "$data/LibriSpeech/test" -name "$sample.flac" | head -n 1)
reference=$(python -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['text'])" "$data/test.jsonl")
if run 3; then
  echo "== stage 3: transcribe one test file"
  echo "file:       $sample_audio"
  hypothesis=$($asr --quiet transcribe --model "$exp/model.pt" --format txt "$sample_audio")
  echo "hypothesis: $hypothesis"
  echo "reference:  $reference"
fi

if run 4; then
  echo "== stage 4: report"
  $asr report --exp "$exp" --eval "$exp/eval_test" --audio "$sample_audio" --reference "$reference" \
    --out "$exp/report"
fi

echo "== done in ${SECONDS}s"
if [ -f "$exp/eval_test/summary.json" ] && [ -f "$exp/eval_seen/summary.json" ]; then
  python - "$exp/eval_seen/summary.json" "$exp/eval_test/summary.json" "$test_speaker" <<'PY'
import json, sys
for path, what in ((sys.argv[1], "seen speakers, unheard recordings"), (sys.argv[2], f"unseen speaker {sys.argv[3]}")):
    s = json.load(open(path))
    print(f"test WER {100 * s['wer']:6.2f}%  CER {100 * s['cer']:6.2f}%  {what} "
          f"(S/D/I {s['substitutions']}/{s['deletions']}/{s['insertions']}, {s['ref_words']} words, {s['utterances']} utterances)")
PY
fi
echo "sample: $sample_audio"
[ -n "${hypothesis:-}" ] && echo "  hypothesis: $hypothesis"
echo "  reference:  $reference"
echo "model:  $exp/model.pt"
echo "report: $exp/report (training.png, wer_by_length.png, example.png on the unseen speaker)"
echo "scores: $exp/eval_seen/summary.json (seen speakers), $exp/eval_test/summary.json (unseen speaker)"
