#!/usr/bin/env bash
# Recipe v3 on a GPU machine: three fine-tunes of the v2 model run side by side on one GPU, then their
# uniform weight average (soup.py) is the result. No run is chosen over another, so no validation set
# decides anything; validation is recorded for the fusion tuning (tune_fusion.py) and the record.
# Inputs: the recipe-v2 model as BASE (default benchmarks/default_model/gpu_run_v2/model; it left the tree when
#   v3 shipped: `git checkout 269c0d8 -- benchmarks/default_model/gpu_run_v2/model` restores it) and .devcarry/v3, the output of
#   prepare_v2.py --msmarco-teacher dense --web-queries 4000 --out .devcarry/v3   (carried, ~15 MB)
# Needs only torch and transformers there. Outputs under $OUT: train.log, soup.log, records.tgz
# (each run's record, the soup's record and validation scores) and the soup as a tarball in 15 MB parts.
# Usage: bash benchmarks/default_model/device_train_v3.sh [SECONDS]   (training seconds per run)
set -euo pipefail
budget=${1:-270}
out=${OUT:?set OUT to the folder whose files come back}
here=benchmarks/default_model
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
common=(--data .devcarry/v3 --base "${BASE:-$here/gpu_run_v2/model}" --epochs 2 --groups-per-step 16 --max-length 320
  --time-budget "$budget" --keep last --no-initial-validation)
# shellcheck disable=SC2206  # a dry run on CPU: EXTRA="--max-groups 48 --max-val 10 --device cpu"
common+=(${EXTRA:-})
# name:distill_weight:lr:kd_weight:seed, fixed before any run.
for v in a:0.25:2e-5:1.0:31 b:0.25:3e-5:2.0:32 c:0.5:2e-5:1.0:33; do
  IFS=: read -r name distill lr kd seed <<<"$v"
  python3 "$here/train_v2.py" "${common[@]}" --out "/tmp/v3$name" --variants "$name:$distill:$lr" \
    --kd-weight "$kd" --seed "$seed" 2>&1 | grep --line-buffered -v "it/s\]" | sed -u "s/^/[$name] /" >>"$out/train.log" &
done
wait
ls /tmp/v3a/model /tmp/v3b/model /tmp/v3c/model >/dev/null
python3 "$here/soup.py" --data .devcarry/v3 ${SOUP_EXTRA:-} --models /tmp/v3a/model /tmp/v3b/model /tmp/v3c/model --out /tmp/soup \
  2>&1 | tee "$out/soup.log"
mkdir -p /tmp/records
for n in a b c; do cp "/tmp/v3$n/training_run.json" "/tmp/records/run_$n.json"; done
cp /tmp/soup/training_run.json /tmp/soup/val_scores.json.gz /tmp/records/
tar -C /tmp -czf "$out/records.tgz" records
tar -C /tmp/soup -czf /tmp/model.tgz model
split -b 15M -d /tmp/model.tgz "$out/model.tgz.part"
