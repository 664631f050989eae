#!/usr/bin/env bash
# `make demo`: the main job end to end on generated data, on CPU, in a few minutes:
# generate ListOps, train a tiny linear-attention model with a profiler trace, evaluate,
# export a reusable SavedModel, reload it in a fresh process and predict a raw expression.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-demo_out}
BIN=.venv/bin
export TF_CPP_MIN_LOG_LEVEL=2
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/3 Generating ListOps (short sequences: 10-120 tokens) into $OUT/data"
"$BIN/lra-data" listops --out "$OUT/data" --num_train 6000 --num_val 500 --num_test 500 \
    --seed 0 --min_length 10 --max_length 120

echo "== 2/3 Training a tiny linear-attention model (profiler trace over steps 20-25)"
"$BIN/lra-train" --task listops --attention linear --preset tiny --data_dir "$OUT/data" \
    --model_dir "$OUT/run" --num_train_steps 5000 --eval_every 1000 --profile_steps 20,25 \
    --set max_length=128 --set num_eval_steps=null --verbose 2 2>&1 \
    | grep -v -E "^(WARNING|I0000|W0000)|signature_serialization|functional_saver|builder_impl|fingerprinting"

echo "== 3/3 Reloading the export in a fresh process and predicting a raw expression"
TF_CPP_MIN_LOG_LEVEL=3 "$BIN/python" scripts/demo_predict.py "$OUT/run/export" \
    "[MAX 2 9 [MIN 4 7 ] 0 ]" "[SM 5 6 [MED 1 2 3 ] ]" 2>&1 | grep -v -E "^(WARNING|I0000|E0000)"
echo "Profiler trace and scalars: tensorboard --logdir $OUT/run/logs"
echo "Demo wall time: $(( $(date +%s) - start )) s"
