"""Recipe v3's last step: a uniform weight average ("model soup") of cross-encoders fine-tuned from one start.

Averaging the weights of runs that share an initialisation and differ in seed and hyperparameters is
more robust out of domain than any single run (Wortsman et al., 2022, "Model soups"), and it needs no
choice among the runs: v3 has no validation set that stands for real web queries, so it does not pick
one. The soup is scored on the validation groups (for ``tune_fusion.py`` and the record), then saved
in fp16 like ``train_v2.py``'s output.

    python benchmarks/default_model/soup.py --data .devcarry/v3 --models /tmp/a/model /tmp/b/model --out /tmp/soup
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import torch
from train_v2 import read_validation, save_fp16, validate
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-max-length", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--val-depth", type=int, default=100)
    parser.add_argument(
        "--max-val", type=int, default=0, help="for a quick check: score only this many queries, half from each set"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    args.bf16 = args.device_type == "cuda"

    models = [AutoModelForSequenceClassification.from_pretrained(m, dtype=torch.float32) for m in args.models]
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        msg = "the models do not share one architecture"
        raise SystemExit(msg)
    soup = models[0]
    soup.load_state_dict(
        {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in states[0]}
    )
    soup.to(args.device)
    tok = AutoTokenizer.from_pretrained(args.models[0])
    val, texts = read_validation(args.data, args.max_val)
    record = validate(soup, tok, val, texts, args)
    print("soup", json.dumps(record["metrics"]), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    save_fp16(soup, args.out / "model")
    tok.save_pretrained(args.out / "model")
    ingredients = []
    for m in args.models:
        run = m.parent / "training_run.json"
        ingredients.append(json.loads(run.read_text()) if run.is_file() else {"path": str(m)})
    summary = {"soup_of": [str(m) for m in args.models], "validation": record["metrics"], "ingredients": ingredients}
    (args.out / "training_run.json").write_text(json.dumps(summary, indent=2))
    with gzip.open(args.out / "val_scores.json.gz", "wt") as fh:
        json.dump(record["scores"], fh)


if __name__ == "__main__":
    main()
