#!/usr/bin/env bash
# Recipe v2 on a GPU machine (what ran on the lent H200; see README "Offline default model").
# Inputs, made on a CPU machine and carried in .devcarry/ (about 56 MB):
#   .devcarry/base16   the all-MiniLM-L6-v2 encoder, fp16 (export_base.py --out .devcarry/base16 --fp16)
#   .devcarry/v2       prepare_v2.py output (training groups, validation groups, passage texts)
# Needs only torch and transformers there. The checkpoint is chosen on held-out *training* queries;
# no test set is read. Outputs under $OUT: the model as a tarball split into 15 MB parts, the training
# record, the validation scores (for tune_fusion.py), and the log.
# Usage: bash benchmarks/default_model/device_train.sh [VARIANTS] [SECONDS]   (VARIANT = name:distill_weight:lr)
set -euo pipefail
variants=${1:-c:0.25:5e-5}
budget=${2:-320}
out=${OUT:?set OUT to the folder whose files come back}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
python3 benchmarks/default_model/train_v2.py --data .devcarry/v2 --base .devcarry/base16 --out /tmp/v2 \
  --variants "$variants" --epochs 3 --groups-per-step 16 --max-length 320 --time-budget "$budget" 2>&1 \
  | grep -v "it/s\]" | tee "$out/train.log"
cp /tmp/v2/training_run.json /tmp/v2/val_scores.json.gz "$out/"
tar -C /tmp/v2 -czf /tmp/model.tgz model
split -b 15M -d /tmp/model.tgz "$out/model.tgz.part"
