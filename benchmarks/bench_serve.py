"""Serving throughput on loopback: the same load in-process and through the HTTP server (uvicorn).

16 concurrent clients x 200 requests of 20-100 candidates each (by default), loopback only, bounded
in count. Records requests/s, p50/p95/p99 latency and the error count per configuration, prints a
table and writes JSON. Ray Serve is not measured yet (see the README's "Scaling out").

The default model is a small BERT cross-encoder built on disk (as the tests do), so the figures show
the serving overhead (HTTP, JSON, threads) rather than model compute; ``--model PATH`` uses another.

    python benchmarks/bench_serve.py --out benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "lyon",
    "coffee",
    "sleep",
    "river",
    "tower",
    "wine",
    "cell",
    "energy",
    "nap",
    "census",
    "water",
    "brew",
    "people",
    "night",
    "city",
]


def workload(clients: int, requests: int, seed: int = 3) -> list[list[tuple[str, list[str]]]]:
    rng = random.Random(seed)

    def passage() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))

    return [
        [
            (" ".join(rng.choice(WORDS) for _ in range(6)), [passage() for _ in range(rng.randint(20, 100))])
            for _ in range(requests)
        ]
        for _ in range(clients)
    ]


def run(load: list[list[tuple[str, list[str]]]], call: Callable[[str, list[str]], object]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(requests: list[tuple[str, list[str]]]) -> None:
        nonlocal errors
        for query, docs in requests:
            start = time.perf_counter()
            try:
                call(query, docs)
            except Exception:
                with lock:
                    errors += 1
                continue
            with lock:
                latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(len(load)) as pool:
        list(pool.map(client, load))
    seconds = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    total = sum(len(r) for r in load)
    return {
        "requests": total,
        "seconds": round(seconds, 2),
        "requests_per_s": round(total / seconds, 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(pct(0.95), 1),
        "p99_ms": round(pct(0.99), 1),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()
    import httpx
    import uvicorn

    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.serve import RemoteReranker, create_app
    from tests.conftest import build_tiny_cross_encoder

    model = args.model or str(build_tiny_cross_encoder(Path(tempfile.mkdtemp())))
    reranker = CrossEncoderReranker(model, fusion="none")
    load = workload(args.clients, args.requests)
    results = {"in-process (core rank, micro-batched)": run(load, lambda q, d: reranker.rank(q, d, top_n=5))}

    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(reranker), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    local = threading.local()

    def over_http(query: str, docs: list[str]) -> object:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        response = local.client.post(f"{url}/v1/rerank", json={"query": query, "documents": docs, "top_n": 5})
        response.raise_for_status()
        return response.json()

    results["uvicorn, 1 process (httpx keep-alive clients)"] = run(load, over_http)
    remote = RemoteReranker(url)
    results["uvicorn via RemoteReranker (pooled connections)"] = run(load, lambda q, d: remote.rank(q, d, top_n=5))
    server.should_exit = True
    thread.join(10)

    record = {
        "model": "tiny 2-layer BERT built on disk" if args.model is None else args.model,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "candidates_per_request": "20-100",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{'configuration':<56} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:<56} {r['requests_per_s']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
