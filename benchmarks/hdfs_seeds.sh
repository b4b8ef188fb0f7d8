#!/usr/bin/env bash
# Seed variance of the HDFS benchmark: trains MODEL with each SEED and evaluates on the dev split.
# Usage: benchmarks/hdfs_seeds.sh MODEL SEED...   -> runs/seeds/<model>-<seed>/{bundle,eval.json}
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets/hdfs}
model=$1; shift
for seed in "$@"; do
  out=runs/seeds/$model-$seed
  mkdir -p "$out"
  .venv/bin/otel-logbert train --model "$model" --train "$DATA/train_normal.txt" --out "$out/bundle" --seed "$seed" \
    --quiet > "$out/train.json"
  .venv/bin/otel-logbert eval --bundle "$out/bundle" --normal "$DATA/dev_normal.csv" --abnormal "$DATA/dev_abnormal.csv" \
    --json "$out/eval.json" | tail -1 | sed "s/^/$model seed $seed: /"
done
