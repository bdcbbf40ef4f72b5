#!/usr/bin/env bash
# Train candidate offline default cross-encoders on a GPU machine and score them on the dumped
# bi-encoder candidates. Inputs (made on a CPU machine, see README "Offline default model"):
#   .devcarry/minilm16                 all-MiniLM-L6-v2 backbone (export_base.py --fp16)
#   .devcarry/train_pairs.jsonl.xz     `ce-rerank pairs` output (xz-compressed to travel)
#   .devcarry/cands/                   prepare_candidates.py output
# Usage: bash benchmarks/default_model/device_train.sh OUTDIR VARIANT...   (VARIANT = name:epochs:lr)
set -euo pipefail
out=${1:?output dir}; shift
work=${WORK:-/tmp/ce-train}
mkdir -p "$work" "$out"
python3 - <<'PY'
import gzip, lzma, shutil, torch
from transformers import AutoModel, AutoTokenizer
with lzma.open(".devcarry/train_pairs.jsonl.xz") as src, gzip.open("/tmp/ce-train/pairs.jsonl.gz", "wb") as dst:
    shutil.copyfileobj(src, dst)
AutoModel.from_pretrained(".devcarry/minilm16", dtype=torch.float32).save_pretrained("/tmp/ce-train/base")
AutoTokenizer.from_pretrained(".devcarry/minilm16").save_pretrained("/tmp/ce-train/base")
PY
models=()
for variant in "$@"; do
  IFS=: read -r name epochs lr <<<"$variant"
  python3 -m ce_rerank_plugins.cli train --pairs "$work/pairs.jsonl.gz" --base "$work/base" --out "$work/$name" \
    --epochs "$epochs" --lr "$lr" --batch-size 64 --max-length 256 --eval-steps 250 --patience 4 \
    --precision bf16 --device cuda --seed 12 2>&1 | grep -vE "it/s\]|s/it\]" | tail -n 15
  cp "$work/$name/training_run.json" "$out/${name}_run.json"
  models+=("$work/$name/final")
done
python3 benchmarks/default_model/rerank_candidates.py --candidates .devcarry/cands --model "${models[@]}" \
  --out "$out/selection.json"
# Export the best variant that beats the bi-encoder on SciFact and does not lower MS MARCO, in fp16,
# as a tarball split into parts small enough to travel back.
python3 - "$out" <<'PY'
import json, subprocess, sys
from pathlib import Path
from sentence_transformers import CrossEncoder
out = Path(sys.argv[1])
sel = json.loads((out / "selection.json").read_text())
base = sel.pop("bi-encoder")
ok = {m: r for m, r in sel.items() if r["scifact"] > base["scifact"] and r["msmarco"] >= base["msmarco"]}
print("bi-encoder", base, "\nqualifying:", json.dumps(ok, indent=1))
if not ok:
    sys.exit("no variant beats the bi-encoder on SciFact without lowering MS MARCO: nothing exported")
best = max(ok, key=lambda m: ok[m]["scifact"])
model = CrossEncoder(best, device="cpu")
model.half()
model.save("/tmp/ce-train/export/ce-minilm-l6-offline")
(out / "best.txt").write_text(best + "\n")
subprocess.run(f"tar -C /tmp/ce-train/export -czf /tmp/ce-train/model.tgz ce-minilm-l6-offline && split -b 15M -d /tmp/ce-train/model.tgz {out}/model.tgz.part", shell=True, check=True)
PY
