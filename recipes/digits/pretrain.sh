#!/usr/bin/env bash
# The starting point of conf/best.yaml: a model trained on speechocean762's 125 voices reading English
# (conf/so762_pretrain.yaml: the digits' 8 kHz front end, per-utterance normalization), about an hour
# on one CPU core. Its dev split (12 speakers) only picks the epochs to average; no digits data enters.
#
#   bash recipes/digits/pretrain.sh [--corpus DIR] [--exp DIR] [-- extra train args]
#   bash recipes/digits/run.sh --config recipes/digits/conf/best.yaml --exp exp/digits_best
set -euo pipefail
cd "$(dirname "$0")/../.."

corpus=../shared/data/speechocean762
exp=exp/so762_pre8k
data=data/speechocean762
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --corpus) corpus=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "pretrain.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
asr=${ASR_S2S:-asr-s2s}

[ -f "$data/dev.jsonl" ] || python recipes/speechocean762/prepare.py --corpus "$corpus" --out "$data"
$asr train --config recipes/digits/conf/so762_pretrain.yaml --train "$data/train.jsonl" --dev "$data/dev.jsonl" \
  --out "$exp" --resume "${extra[@]}"
echo "pretrained model: $exp/model.pt (train.init_from of conf/best.yaml)"
