#!/usr/bin/env bash
# Seed variance of the HDFS benchmark: trains MODEL with each SEED and evaluates on the dev split.
# Usage: [CALIBRATION=pot|quantile|max] benchmarks/hdfs_seeds.sh MODEL SEED...
#   -> runs/seeds/<model>-<calibration>-<seed>/{bundle,train.json,eval.json,wall_seconds}
# The calibration defaults to the config's (pot); train.json's train_seconds is the time in training loops
# (all fold models and the served model), wall_seconds the whole `train` command (export included).
# Summary table: benchmarks/summarize_seeds.py runs/seeds
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/hdfs}
CALIBRATION=${CALIBRATION:-pot}
model=$1; shift
for seed in "$@"; do
  out=runs/seeds/$model-$CALIBRATION-$seed
  mkdir -p "$out"
  t0=$(date +%s)
  .venv/bin/otel-logbert train --model "$model" --train "$DATA/train_normal.txt" --out "$out/bundle" --seed "$seed" \
    --calibration "$CALIBRATION" --quiet > "$out/train.json"
  echo $(( $(date +%s) - t0 )) > "$out/wall_seconds"
  .venv/bin/otel-logbert eval --bundle "$out/bundle" --normal "$DATA/dev_normal.csv" --abnormal "$DATA/dev_abnormal.csv" \
    --baseline none --json "$out/eval.json" | tail -1 | sed "s/^/$model $CALIBRATION seed $seed: /"
done
