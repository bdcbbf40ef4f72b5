"""Choose the default first-stage mode and hybrid fusion on *training* queries only.

Queries: the 809 SciFact train claims with their train qrels, and web-style keyword pseudo-queries
over the MS MARCO corpus (``benchmarks/_pseudo_queries.pseudo_queries``; the source
passage is the one relevant document). No test query or judgement is read. Prints nDCG@10 per mode
and fusion, writes JSON.

    python benchmarks/bench_hybrid_default.py --scifact ../shared/data/scifact --msmarco ../shared/data/msmarco \\
        --out benchmarks/results/hybrid_default.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pseudo_queries import pseudo_queries

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import index_corpus, ranx_metrics

VARIANTS = [
    ("dense", None, None),
    ("bm25", None, None),
    ("hybrid", "weighted", 0.3),
    ("hybrid", "weighted", 0.5),
    ("hybrid", "weighted", 0.7),
    ("hybrid", "rrf", 0.5),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--msmarco", type=Path, required=True)
    parser.add_argument("--pseudo-queries", type=int, default=400)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sets = {}
    scifact = load_beir(args.scifact, "train")
    sets["scifact-train (809 claims)"] = (scifact.corpus, scifact.queries, scifact.qrels)
    msmarco = load_beir(args.msmarco, "test")  # corpus only
    made = pseudo_queries(msmarco.corpus, args.pseudo_queries, random.Random(5))
    sets[f"msmarco pseudo-queries ({len(made)})"] = (
        msmarco.corpus,
        {qid: q for qid, (q, _) in made.items()},
        {qid: {doc: 1} for qid, (_, doc) in made.items()},
    )
    table: dict[str, dict[str, float]] = {}
    for name, (corpus, queries, qrels) in sets.items():
        start = time.perf_counter()
        index = index_corpus(corpus, lexical=True)
        print(f"{name}: indexed in {time.perf_counter() - start:.0f} s")
        for mode, fusion, weight in VARIANTS:
            label = mode if fusion is None else f"hybrid {fusion} {weight}"
            if fusion is not None:
                index.hybrid_fusion, index.hybrid_weight = fusion, weight
            run = {q: {h.id: h.score for h in index.search(text, k=100, mode=mode)} for q, text in queries.items()}
            table.setdefault(label, {})[name] = round(ranx_metrics(qrels, run)["ndcg@10"], 4)
    print(f"{'first stage':<24}" + "".join(f"{n:>34}" for n in sets))
    for label, row in table.items():
        print(f"{label:<24}" + "".join(f"{row[n]:>34.4f}" for n in sets))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ndcg@10": table, "sets": list(sets)}, indent=2))


if __name__ == "__main__":
    main()
