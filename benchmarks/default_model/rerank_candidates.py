"""Rerank dumped top-100 candidates with one or more cross-encoders and report nDCG@10 (model selection).

Runs where FAISS and ranx are absent (a GPU machine); the published figures come from
`ce-rerank eval`, which uses ranx. nDCG here is scikit-learn's, with unretrieved relevant
documents appended at the bottom so the ideal DCG counts them, as trec_eval does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import ndcg_score

from ce_rerank_plugins import CrossEncoderReranker


def ndcg10(qrels: dict[str, int], ranked: list[str]) -> float:
    relevant_missing = [d for d in qrels if d not in ranked]
    docs = ranked + relevant_missing
    y_true = np.asarray([[qrels.get(d, 0) for d in docs]], dtype=float)
    y_score = np.asarray([[len(docs) - i for i in range(len(docs))]], dtype=float)
    y_score[0, len(ranked) :] = -1e9
    return float(ndcg_score(y_true, y_score, k=10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=Path, required=True, help="folder from prepare_candidates.py")
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", default=["scifact", "msmarco"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--limit", type=int, help="score only the first N queries of each set (quick checks)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, dict[str, float]] = {}
    for name in args.datasets:
        record = json.loads((args.candidates / f"{name}_candidates.json").read_text())
        with gzip.open(args.candidates / f"{name}_corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
            corpus = {}
            for line in fh:
                row = json.loads(line)
                corpus[str(row["_id"])] = f"{row.get('title') or ''} {row['text']}".strip()
        candidates = dict(list(record["candidates"].items())[: args.limit])
        base = [ndcg10(record["qrels"][q], [d for d, _ in c]) for q, c in candidates.items()]
        report.setdefault("bi-encoder", {})[name] = float(np.mean(base))
        for model in args.model:
            reranker = CrossEncoderReranker(model, precision=args.precision, batch_size=32, max_length=args.max_length)
            scores = []
            start = time.perf_counter()
            for q, cands in candidates.items():
                ids = [d for d, _ in cands]
                ranked = reranker.rank(record["queries"][q], [corpus[d] for d in ids])
                scores.append(ndcg10(record["qrels"][q], [ids[r.corpus_id] for r in ranked]))
            report.setdefault(model, {})[name] = float(np.mean(scores))
            report[model][f"{name}_seconds"] = time.perf_counter() - start
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
