"""Dump the bi-encoder's top-100 candidate ids for SciFact test and MS MARCO (ids only, compact), and
the corpora gzipped, so a machine without FAISS can rerank and score them (used for model selection)."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import build_index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for directory in args.data:
        ds = load_beir(directory, "test")
        index = build_index(ds)
        qids = list(ds.queries)
        hits = index.search_many([ds.queries[q] for q in qids], k=args.k)
        record = {
            "queries": ds.queries,
            "qrels": ds.qrels,
            "candidates": {q: [[h.id, h.score] for h in row] for q, row in zip(qids, hits, strict=True)},
        }
        (args.out / f"{ds.name}_candidates.json").write_text(json.dumps(record))
        with (
            (directory / "corpus.jsonl").open("rb") as src,
            gzip.open(args.out / f"{ds.name}_corpus.jsonl.gz", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
        print(f"{ds.name}: {len(qids)} queries, top-{args.k} candidates written")


if __name__ == "__main__":
    main()
