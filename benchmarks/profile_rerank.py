"""Where the default path's time goes when it reranks 100 passages (issue #11: the profile behind the 4x gap).

Runs ``CrossEncoderReranker.predict`` (precision ``auto``: bf16 with the head in fp32 on a CPU with
native bf16) under ``torch.profiler`` on real MS MARCO passages, and sorts every operator's *self* CPU
time into GEMMs, attention, LayerNorm, GELU, dtype casts and other tensor ops. Tokenisation is timed
on its own, on the same pairs in the same batches. What is left of the wall time (the Python of
sentence-transformers, transformers and ours, between operators) is reported as overhead. Prints a
table and writes JSON.

    CE_RERANK_THREADS=1 python benchmarks/profile_rerank.py --out benchmarks/results/rerank_profile.json
"""

from __future__ import annotations

import json
import os
import time

from _common import machine, model_and_inputs_parser, msmarco_inputs

CATEGORIES = {
    "GEMMs (linear layers)": ("addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "mkldnn"),
    "attention (SDPA kernels, softmax)": (
        "scaled_dot_product",
        "flash_attention",
        "aten::_softmax",
        "efficient_attention",
    ),
    "LayerNorm": ("layer_norm",),
    "GELU": ("gelu",),
    "dtype casts and copies": ("aten::to", "aten::_to_copy", "aten::copy_", "aten::contiguous", "aten::clone"),
}


def category(op: str) -> str:
    for name, keys in CATEGORIES.items():
        if any(k in op for k in keys):
            return name
    return "other tensor ops (embeddings, add, views, masks)"


def main() -> None:
    parser = model_and_inputs_parser(__doc__, "rerank_profile.json")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from ce_rerank_plugins import CrossEncoderReranker

    # Scored on the calling thread (the profiler sees only it); the micro-batching worker runs the same ops.
    reranker = CrossEncoderReranker(args.model, device="cpu", batch_size=args.batch_size, micro_batching=False)
    queries, docs = msmarco_inputs(args.data, args.queries)
    pairs = [(q, d) for q in queries for d in docs]
    reranker.predict(pairs[:100])  # warm-up, outside the measurement

    tokenizer = reranker.model.tokenizer
    ordered = sorted(pairs, key=lambda p: -(len(p[0]) + len(p[1])))  # the engine's length-sorted batches
    start = time.perf_counter()
    for i in range(0, len(ordered), args.batch_size):
        chunk = ordered[i : i + args.batch_size]
        tokenizer(
            [a for a, _ in chunk],
            [b for _, b in chunk],
            truncation="longest_first",
            padding=True,
            max_length=reranker.model.max_seq_length,
            return_tensors="pt",
        )
    tokenize_s = time.perf_counter() - start

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        reranker.predict(pairs)
        wall_s = time.perf_counter() - start
    by_category: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::") or "mkldnn" in event.key or "onednn" in event.key:
            by_category[category(event.key)] = (
                by_category.get(category(event.key), 0.0) + event.self_cpu_time_total / 1e6
            )
    ops_s = sum(by_category.values())
    rows = dict(sorted(by_category.items(), key=lambda kv: -kv[1]))
    rows["tokenisation (timed alone)"] = tokenize_s
    rows["Python and framework overhead (the rest)"] = max(0.0, wall_s - ops_s - tokenize_s)
    record = {
        "model": args.model,
        "precision": reranker.precision,
        "threads": torch.get_num_threads(),
        "pairs": len(pairs),
        "batch_size": args.batch_size,
        "wall_seconds_profiled": round(wall_s, 3),
        "note": "the profiler adds overhead of its own; shares are of the profiled wall time",
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "seconds": {k: round(v, 4) for k, v in rows.items()},
        "share": {k: round(v / wall_s, 4) for k, v in rows.items()},
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{len(pairs)} pairs, precision {reranker.precision}, {torch.get_num_threads()} thread(s), {wall_s:.2f} s")
    print("| where | s | share |\n|---|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {v:.3f} | {v / wall_s:.1%} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
