"""Intra-op threads under load: rerank and query-encoding latency with 1, 2 and one-per-core torch threads,
on an idle machine and under a bounded competing CPU load that this script starts and stops itself.

The competing load is ``--load-procs`` processes (default: one and two per core, as two conditions)
spinning numpy matrix products, started before the loaded rows and killed right after them. Each row is the median of
``--repeats`` calls, in one process, with the same model, inputs and ``max_length``. Prints a table
and writes JSON.

    python benchmarks/bench_threads.py --out benchmarks/results/threads.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _spin(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    import numpy as np

    os.environ["OMP_NUM_THREADS"] = "1"
    a = np.random.default_rng(0).random((256, 256))
    while not stop.is_set():
        a = (a @ a) / 256.0


def measure(fn, repeats: int) -> float:
    fn()  # warm for this thread count
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline"))
    parser.add_argument("--k", type=int, default=50, help="passages per rerank call")
    parser.add_argument("--repeats", type=int, default=7)
    cores = os.cpu_count() or 2
    parser.add_argument("--load-procs", type=int, nargs="+", default=[cores, 2 * cores])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "threads.json")
    args = parser.parse_args()

    import torch

    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.core import default_threads
    from ce_rerank_plugins.retrieval import Embedder

    corpus = REPO.parent / "shared" / "data" / "msmarco" / "corpus.jsonl"
    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            passages = [json.loads(line)["text"] for _, line in zip(range(args.k), f, strict=False)]
    else:
        sample = REPO / "ce_rerank_plugins" / "data" / "sample_corpus.jsonl"
        passages = [json.loads(x)["text"] for x in sample.read_text(encoding="utf-8").splitlines() if x.strip()]
        passages = (passages * (args.k // len(passages) + 1))[: args.k]
    reranker = CrossEncoderReranker(args.model, cache=None, micro_batching=False)
    embedder = Embedder()
    question = "how long is the life cycle of a flea"
    counts = sorted({1, 2, cores})

    def rerank() -> None:
        reranker.rank(question, passages, top_n=5)

    def encode() -> None:
        embedder.encode([question], show_progress=False)

    results: dict[str, dict[str, dict[str, float]]] = {}
    conditions = {"idle": 0} | {f"{n} busy processes": n for n in args.load_procs}
    for condition, procs in conditions.items():
        stop = mp.Event()
        spinners = []
        if procs:
            spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(procs)]
            for p in spinners:
                p.start()
            time.sleep(1.0)
        try:
            for n in counts:
                torch.set_num_threads(n)
                label = f"{n} thread{'s' if n > 1 else ''}" + (" (one per core)" if n == cores else "")
                results.setdefault(label, {})[condition] = {
                    "rerank_ms": measure(rerank, args.repeats),
                    "query_encode_ms": measure(encode, max(args.repeats, 20)),
                }
        finally:
            stop.set()
            for p in spinners:
                p.join(5)
                if p.is_alive():
                    p.kill()
    record = {
        "model": os.path.relpath(args.model, REPO) if args.model.startswith(str(REPO)) else args.model,
        "precision": reranker.precision,
        "k": args.k,
        "repeats": args.repeats,
        "competing_load": "N processes spinning 256x256 numpy matmuls (1 thread each), N per condition",
        "default_threads": default_threads(),
        "machine": {"cpus": cores, "python": platform.python_version(), "torch": torch.__version__},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"rerank of {args.k} passages ({reranker.precision}) / one query encoding, median ms")
    print(f"{'threads':<26} " + " ".join(f"{c:>22}" for c in conditions))
    for label, r in results.items():
        cells = [f"{r[c]['rerank_ms']:>10} / {r[c]['query_encode_ms']:>9}" for c in conditions]
        print(f"{label:<26} " + " ".join(f"{cell:>22}" for cell in cells))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
