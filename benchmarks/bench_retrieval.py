"""Retrieval quality and speed of FaissIndex on a BEIR-layout dataset.

    python benchmarks/bench_retrieval.py --data ../shared/data/scifact --out benchmarks/results/retrieval.json

Prints and writes: nDCG@10, MRR@10, Recall@100 of exact search (ranx); recall@100 of HNSW and IVF
relative to exact search with their median query latency; and embedding throughput of FaissIndex
relative to a bare SentenceTransformer.encode of the same texts, in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, peak_rss_mb, write_json

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import ranx_metrics
from ce_rerank_plugins.retrieval import Document, Embedder, FaissIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="BEIR-layout dataset directory")
    parser.add_argument("--out", type=Path, help="JSON output file")
    parser.add_argument("--throughput-docs", type=int, default=1000, help="documents timed for throughput")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of the throughput timing")
    args = parser.parse_args()

    dataset = load_beir(args.data, "test")
    ids = list(dataset.corpus)
    texts = [dataset.doc_text(i) for i in ids]
    embedder = Embedder()
    print(f"{dataset.name}: {len(ids)} documents, {len(dataset.queries)} judged test queries; embedder {embedder.id}")

    # Embedding throughput: our index's embedding path vs a bare SentenceTransformer.encode, alternated.
    sample = texts[: args.throughput_docs]
    ours_t, bare_t = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        bare = embedder.model.encode(sample, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        bare_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        mine = embedder.encode(sample, show_progress=False)
        ours_t.append(time.perf_counter() - start)
    assert np.allclose(bare, mine, atol=1e-5)
    throughput = {
        "docs": len(sample),
        "bare_st_docs_per_s": len(sample) / min(bare_t),
        "faiss_index_docs_per_s": len(sample) / min(ours_t),
        "ratio_vs_bare_encode": min(bare_t) / min(ours_t),
    }

    start = time.perf_counter()
    vectors = embedder.encode(texts)
    embed_seconds = time.perf_counter() - start
    qids = list(dataset.queries)
    qvecs = embedder.encode([dataset.queries[q] for q in qids], show_progress=False)
    docs = [Document(i, t) for i, t in zip(ids, texts, strict=True)]

    results = {}
    exact_top: dict[str, list[str]] = {}
    configurations = (
        ("flat", "flat", {}),
        ("hnsw ef=32", "hnsw", {"ef_search": 32}),
        ("hnsw ef=128", "hnsw", {"ef_search": 128}),
        ("ivf nprobe=4", "ivf", {"nprobe": 4}),
        ("ivf nprobe=16", "ivf", {"nprobe": 16}),
    )
    for name, index_type, kwargs in configurations:
        index = FaissIndex(embedder, index_type=index_type, **kwargs)  # type: ignore[arg-type]
        start = time.perf_counter()
        index.add_documents(docs, embeddings=vectors)
        build = time.perf_counter() - start
        latencies, run = [], {}
        for qid, qvec in zip(qids, qvecs, strict=True):
            start = time.perf_counter()
            hits = index.search_vectors(qvec[None, :], 100)[0]
            latencies.append((time.perf_counter() - start) * 1000)
            run[qid] = {h.id: h.score for h in hits}
        entry = {
            "build_seconds": build,
            "query_ms_median": statistics.median(latencies),
            **ranx_metrics(dataset.qrels, run),
        }
        if index_type == "flat":
            exact_top = {q: list(r) for q, r in run.items()}
            entry["recall@100_vs_exact"] = 1.0
        else:
            overlap = [len(set(run[q]) & set(exact_top[q])) / max(1, len(exact_top[q])) for q in qids]
            entry["recall@100_vs_exact"] = float(np.mean(overlap))
            entry["params"] = index.params
        results[name] = entry

    exact = results["flat"]
    print(
        f"\nexact (flat) search: nDCG@10 {exact['ndcg@10']:.4f}  MRR@10 {exact['mrr@10']:.4f}  "
        f"Recall@100 {exact['recall@100']:.4f}"
    )
    print(f"\n{'index':14} {'nDCG@10':>8} {'R@100':>7} {'R@100 vs exact':>15} {'query ms (median)':>18} {'build s':>8}")
    for name, r in results.items():
        print(
            f"{name:14} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['recall@100_vs_exact']:15.4f} "
            f"{r['query_ms_median']:18.3f} {r['build_seconds']:8.2f}"
        )
    print(
        f"\nembedding throughput on {throughput['docs']} docs: bare encode "
        f"{throughput['bare_st_docs_per_s']:.1f}/s, FaissIndex {throughput['faiss_index_docs_per_s']:.1f}/s, "
        f"ratio {throughput['ratio_vs_bare_encode']:.3f}"
    )
    write_json(
        args.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "dataset": dataset.name,
            "documents": len(ids),
            "queries": len(qids),
            "embedder": embedder.id,
            "ndcg@10": exact["ndcg@10"],
            "mrr@10": exact["mrr@10"],
            "recall@100": exact["recall@100"],
            "index_types": results,
            "embedding_throughput": throughput,
            "full_corpus_embed_seconds": embed_seconds,
            "peak_rss_mb": peak_rss_mb(),
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
