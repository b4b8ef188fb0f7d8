#!/usr/bin/env bash
# The model benchmark of issue 2: train every model (and the ablations) on HDFS train_normal.txt,
# evaluate on dev_normal.csv + dev_abnormal.csv, write runs/hdfs/<name>/{bundle,eval.json,scores.png}.
# eval measures the new-event and counts-pca baselines beside each model (eval.json: "baselines").
# BERT-LogAnom's ablations: without DTPM = the static rows, without GR-BiLSTM = loganom-no-grbilstm,
# without both = loganom-no-grbilstm's static row.
# Usage: benchmarks/hdfs_models.sh [SEED]   (about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${DATA:-../shared/datasets/hdfs}
SEED=${1:-0}
OUT=runs/hdfs/seed$SEED
mkdir -p "$OUT"
run() {  # name model [extra train args...] ; eval with static threshold, and DTPM
  local name=$1 model=$2; shift 2
  local t0=$(date +%s)
  $BIN/otel-logbert train --model "$model" --train "$DATA/train_normal.txt" --out "$OUT/$name/bundle" \
    --seed "$SEED" --quiet "$@" > "$OUT/$name/train.json"
  echo "$name: trained in $(( $(date +%s) - t0 )) s (incl. export)"
  $BIN/otel-logbert eval --bundle "$OUT/$name/bundle" --normal "$DATA/dev_normal.csv" --abnormal "$DATA/dev_abnormal.csv" \
    --json "$OUT/$name/eval.json" --plot "$OUT/$name/scores.png" | tail -1
  $BIN/otel-logbert eval --bundle "$OUT/$name/bundle" --normal "$DATA/dev_normal.csv" --abnormal "$DATA/dev_abnormal.csv" \
    --threshold dtpm --no-save --json "$OUT/$name/eval-dtpm.json" | tail -1
}
for spec in "fastlogad fastlogad" "fastlogad-paper-ops fastlogad --set generated_ops=[replace]" \
            "fastlogad-random fastlogad --set generator=random" "logbert logbert" \
            "loganom loganom" "loganom-max loganom --set score=max" "loganom-paper-mean loganom --set score=mean" \
            "loganom-no-grbilstm loganom --set use_bilstm=false"; do
  set -- $spec
  mkdir -p "$OUT/$1"
  run "$@"
done
$BIN/python benchmarks/summarize_hdfs.py "$OUT"
