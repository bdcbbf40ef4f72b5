"""Choose the bundled model's fusion (method and cross-encoder weight) on held-out *training* queries.

Reads ``prepare_v2.py``'s validation groups (held-out SciFact train claims, held-out MS MARCO
pseudo-queries, each with the dense first stage's top-100) and ``train_v2.py``'s cross-encoder logits
for them, applies the model's own activation (sigmoid, as ``rank`` does by default), and grid-searches
the fusion with the package's own ``fuse_scores``. No test query or judgement is read.

The choice is made on real held-out queries only (``--select-on scifact-val``): the MS MARCO
validation queries are pseudo-queries generated like the training ones, on which the cross-encoder
is in its own distribution and always looks best (weight 1.0), which is no guide for real queries.

    python benchmarks/default_model/tune_fusion.py --data .devcarry/v3 \\
        --scores benchmarks/default_model/gpu_run_v3/val_scores.json.gz \\
        --out benchmarks/default_model/gpu_run_v3/fusion_tuning.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
from pathlib import Path

import numpy as np

from ce_rerank_plugins.core._fusion import fuse_scores


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    return dcg / sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mode", default="dense", help="first stage whose candidates are reranked")
    parser.add_argument(
        "--select-on",
        default="scifact-val",
        help="validation sets the choice is made on, comma-separated (default: the real held-out queries only; "
        "msmarco-val holds pseudo-queries made like the training ones, which favour the cross-encoder)",
    )
    args = parser.parse_args()
    with gzip.open(args.data / "val_groups.jsonl.gz", "rt") as fh:
        val = [json.loads(line) for line in fh]
    with gzip.open(args.scores, "rt") as fh:
        logits = json.load(fh)
    grid = [round(w, 2) for w in np.arange(0.0, 1.01, 0.1)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for depth in (20, 50, 100):
        for method in ("weighted", "rrf"):
            for w in grid:
                per_set: dict[str, list[float]] = {}
                for entry in val:
                    cands = entry[args.mode][:depth]
                    keys = [k for k, _ in cands]
                    first = np.asarray([s for _, s in cands], dtype=np.float64)
                    ce = 1.0 / (1.0 + np.exp(-np.asarray(logits[entry["qid"]][args.mode][:depth], dtype=np.float64)))
                    fused = fuse_scores(ce, first, fusion=method, weight=w)  # type: ignore[arg-type]
                    ranked = [keys[i] for i in np.argsort(-fused, kind="stable")]
                    per_set.setdefault(entry["set"], []).append(ndcg10(ranked, entry["rel"]))
                means = {k: round(float(np.mean(v)), 4) for k, v in sorted(per_set.items())}
                means["mean"] = round(float(np.mean(list(means.values()))), 4)
                results.setdefault(f"depth{depth}", {})[f"{method}:{w}"] = means
    # The choice: best nDCG@10 on the selection sets, averaged over depths (robust to the depth).
    chosen_sets = args.select_on.split(",")
    keys = list(results["depth100"])
    score = {k: float(np.mean([results[d][k][s] for d in results for s in chosen_sets])) for k in keys}
    best = max(keys, key=lambda k: (score[k], -abs(float(k.split(":")[1]) - 0.5)))
    method, weight = best.split(":")
    record = {
        "chosen": {"fusion": method, "fusion_weight": float(weight)},
        "criterion": (
            f"mean nDCG@10 on {chosen_sets}, averaged over depths 20/50/100; ties go to the weight nearest 0.5"
        ),
        "first_stage_only": {d: results[d]["weighted:0.0"] for d in results},
        "cross_encoder_only": {d: results[d]["weighted:1.0"] for d in results},
        "chosen_scores": {d: results[d][best] for d in results},
        "grid": results,
    }
    args.out.write_text(json.dumps(record, indent=2))
    shown = ("chosen", "first_stage_only", "cross_encoder_only", "chosen_scores")
    print(json.dumps({k: record[k] for k in shown}, indent=1))


if __name__ == "__main__":
    main()
