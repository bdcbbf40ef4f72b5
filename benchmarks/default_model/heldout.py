"""Score any cross-encoder on a recipe run's held-out training questions, as the recipe's validation does.

    python benchmarks/default_model/heldout.py --model ce_rerank_plugins/models/ce-minilm-l6-offline \
        --data runs/v5/data --out benchmarks/default_model/cpu_run_v5/v3_heldout.json

Prints nDCG@10 per held-out set for the first stage, the cross-encoder alone and each fusion weight,
and writes them as JSON: the figures ``training_run.json`` records for the model a run trains, for a
model it did not (the starting model of another run, a model from elsewhere).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ce_rerank_plugins.training.recipe import FUSION_GRID, held_out_metrics, read_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Cross-encoder folder or name.")
    parser.add_argument("--data", required=True, type=Path, help="A recipe run's data folder (OUT/data).")
    parser.add_argument("--max-length", type=int, default=192, help="Token budget of a pair (the run's).")
    parser.add_argument("--out", type=Path, help="Where to write the JSON.")
    args = parser.parse_args()
    val, texts = read_validation(args.data)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    metrics = held_out_metrics(model, tokenizer, val, texts, max_length=args.max_length)
    sets = [*sorted({e["set"] for e in val}), "mean"]
    labels = ["first", "ce", *(f"fused{w:g}" for w in FUSION_GRID[:-1])]
    print("set".ljust(28) + "".join(label.rjust(10) for label in labels))
    for name in sets:
        print(name.ljust(28) + "".join(f"{metrics[f'{name}/{label}/ndcg@10']:10.4f}" for label in labels))
    if args.out:
        record = {"model": args.model, "data": str(args.data), "max_length": args.max_length, "metrics": metrics}
        args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
