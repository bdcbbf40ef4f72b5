"""Serving throughput on loopback: the same load in-process, through uvicorn, and through Ray Serve.

16 concurrent clients x 200 requests of 20-100 candidates each (by default), loopback only, bounded
in count. Records requests/s, p50/p95/p99 latency and the error count per configuration: in-process,
uvicorn (raw httpx and RemoteReranker), Ray Serve with 1 replica (2 CPUs) and 2 replicas (1 CPU each).
Then Ray Data embedding throughput (2 actors x 1 CPU) against single-process ``encode`` on the same
texts, in the same run. Prints a table and writes JSON. ``--cluster-only`` runs (and adds to the JSON)
only the two-node rows: a real ``ray.cluster_utils.Cluster`` that loses its worker node under load;
``--serve-batch-only`` only Ray Serve's ``@serve.batch`` against the core's micro-batcher.

The default model is a small BERT cross-encoder built on disk (as the tests do), so the figures show
the serving overhead (HTTP, JSON, threads) rather than model compute; ``--model PATH`` uses another.

    python benchmarks/bench_serve.py --out benchmarks/results/serve.json
    python benchmarks/bench_serve.py --cluster-only --out benchmarks/results/serve.json
    python benchmarks/bench_serve.py --serve-batch-only --requests 60 --out benchmarks/results/serve.json
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
    parser.add_argument(
        "--corpus",
        type=Path,
        default=REPO.parent / "shared" / "data" / "msmarco" / "corpus.jsonl",
        help="JSONL with 'text' for the embedding comparison (the sample corpus, repeated, if absent)",
    )
    parser.add_argument("--embed-texts", type=int, default=2000)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Serve and Ray Data rows")
    parser.add_argument(
        "--serve-batch-only",
        action="store_true",
        help="run only Ray Serve's @serve.batch against the core's micro-batcher and add it to --out",
    )
    parser.add_argument(
        "--cluster-only",
        action="store_true",
        help="run only the two-node cluster rows (node loss under load) and add them to --out",
    )
    args = parser.parse_args()
    if args.serve_batch_only:
        record = json.loads(args.out.read_text()) if args.out.is_file() else {}
        record["serve_batch_vs_core_micro_batcher"] = serve_batch_rows(
            args.model, workload(args.clients, args.requests)
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        print(json.dumps(record["serve_batch_vs_core_micro_batcher"], indent=1))
        print(f"wrote {args.out}")
        return
    if args.cluster_only:
        record = json.loads(args.out.read_text()) if args.out.is_file() else {}
        record["two_node_cluster"] = two_node_cluster_rows(args.model)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        print(json.dumps(record["two_node_cluster"], indent=1))
        print(f"wrote {args.out}")
        return
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
    results["uvicorn, 1 process (httpx keep-alive clients)"] = run(load, http_caller(f"{url}/v1/rerank"))
    remote = RemoteReranker(url)
    results["uvicorn via RemoteReranker (pooled connections)"] = run(load, lambda q, d: remote.rank(q, d, top_n=5))
    server.should_exit = True
    thread.join(10)
    embedding: dict[str, object] = {}
    if not args.no_ray:
        results.update(ray_serve_rows(model, load))
        embedding = ray_data_embedding(args.corpus, args.embed_texts)

    record = {
        "model": "tiny 2-layer BERT built on disk" if args.model is None else args.model,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "candidates_per_request": "20-100",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "results": results,
        "embedding": embedding,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{'configuration':<56} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:<56} {r['requests_per_s']:>8} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['p99_ms']:>8} {r['errors']:>7}"
        )
    if embedding:
        print(f"\n{'embedding ' + str(embedding['texts']) + ' texts':<56} {'texts/s':>8} {'seconds':>8} {'ratio':>8}")
        for name, r in embedding["results"].items():  # type: ignore[union-attr]
            print(f"{name:<56} {r['texts_per_s']:>8} {r['seconds']:>8} {r['ratio']:>8}")
        print(f"max |ray - single-process| = {embedding['max_abs_diff']:.2e}")
    print(f"wrote {args.out}")


def http_caller(endpoint: str) -> Callable[[str, list[str]], object]:
    """A rerank call over HTTP to ``endpoint``, one keep-alive httpx client per client thread."""
    import httpx

    local = threading.local()

    def call(query: str, docs: list[str]) -> object:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        response = local.client.post(endpoint, json={"query": query, "documents": docs, "top_n": 5})
        response.raise_for_status()
        return response.json()

    return call


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_serve_rows(model: str, load: list[list[tuple[str, list[str]]]]) -> dict[str, dict[str, float]]:
    """The same load through Ray Serve's HTTP proxy, with 1 replica of 2 CPUs and 2 replicas of 1 CPU."""
    from ray import serve

    from ce_rerank_plugins import ray_data
    from ce_rerank_plugins.serve._ray import APP_NAME, RayServeSettings, ray_application, run_on_ray

    ray_data.connect(num_cpus=os.cpu_count() or 2)
    rows = {}
    cpus = float(os.cpu_count() or 2)
    port = _free_port()
    for replicas in (1, 2):
        settings = RayServeSettings(replicas=replicas, cpus_per_replica=cpus / replicas, max_ongoing_requests=64)
        run_on_ray(ray_application(model, settings=settings), port=port)
        over_ray = http_caller(f"http://127.0.0.1:{port}/v1/rerank")
        label = f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''} x {cpus / replicas:g} CPU (httpx clients)"
        rows[label] = run(load, over_ray)
        serve.delete(APP_NAME)
    serve.shutdown()
    return rows


def serve_batch_rows(model: str | None, load: list[list[tuple[str, list[str]]]], rounds: int = 2) -> dict[str, object]:
    """Ray Serve's request batching (``@serve.batch``: up to 8 requests, 10 ms wait, one ``predict`` over
    all their pairs, core micro-batching off) against our deployment (the core's micro-batcher merges
    a replica's concurrent requests). Both 2 replicas, the CPUs split between them, the same load,
    ``rounds`` runs each taking turns; each keeps its best run."""
    import asyncio

    from ray import serve
    from starlette.requests import Request

    from ce_rerank_plugins import ray_data
    from ce_rerank_plugins.serve._ray import APP_NAME, RayServeSettings, ray_application, run_on_ray
    from tests.conftest import build_tiny_cross_encoder

    model = model or str(build_tiny_cross_encoder(Path(tempfile.mkdtemp())))
    ray_data.connect(num_cpus=os.cpu_count() or 2)
    cpus = float(os.cpu_count() or 2)
    threads = max(1, int(cpus // 2))

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": cpus / 2}, max_ongoing_requests=64)
    class ServeBatched:
        def __init__(self, model: str, threads: int) -> None:
            from ce_rerank_plugins.core import CrossEncoderReranker, set_threads

            set_threads(threads)
            self.reranker = CrossEncoderReranker(model, micro_batching=False, fusion="none")

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def score(self, requests: list[tuple[str, list[str]]]) -> list[list[float]]:
            pairs = [(query, doc) for query, docs in requests for doc in docs]
            scores = await asyncio.to_thread(self.reranker.predict, pairs)
            out, start = [], 0
            for _, docs in requests:
                out.append([float(x) for x in scores[start : start + len(docs)]])
                start += len(docs)
            return out

        async def __call__(self, request: Request) -> dict[str, object]:
            body = await request.json()
            scores = await self.score((body["query"], body["documents"]))
            top = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[: body.get("top_n") or None]
            return {"results": [{"index": i, "relevance_score": scores[i]} for i in top]}

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = RayServeSettings(replicas=2, cpus_per_replica=cpus / 2, max_ongoing_requests=64)
    configurations = {
        "core micro-batcher (our deployment)": (ray_application(model, settings=settings), "/v1/rerank"),
        "@serve.batch (8 requests, 10 ms), core micro-batching off": (ServeBatched.bind(model, threads), "/"),
    }
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in configurations}
    for _ in range(rounds):
        for name, (application, path) in configurations.items():
            run_on_ray(application, port=port)
            rows[name].append(run(load, http_caller(f"{url}{path}")))
            serve.delete(APP_NAME)
    serve.shutdown()
    best = {name: max(runs, key=lambda r: r["requests_per_s"]) for name, runs in rows.items()}
    core, batched = best.values()
    return {
        "setup": f"2 replicas x {cpus / 2:g} CPU, {len(load)} clients x {len(load[0])} requests, best of {rounds}",
        "results": best,
        "all_runs": rows,
        "serve_batch_vs_core_requests_per_s": round(batched["requests_per_s"] / core["requests_per_s"], 3),
    }


def two_node_cluster_rows(model: str | None, clients: int = 8, requests: int = 40) -> dict[str, object]:
    """Ray Serve on a two-node ``Cluster`` (1 CPU a node, 2 replicas of 0.5 CPU, one on each node): the
    worker node is removed once 1/8 of the requests are answered, under ``clients`` x ``requests``.
    Every answer is checked against the in-process order; recovery is timed until Serve reports both
    replicas running again (on the surviving node)."""
    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.serve import RemoteReranker, RemoteRerankError
    from tests.conftest import build_tiny_cross_encoder
    from tests.serve.cluster_holder import ClusterHolder

    model = model or str(build_tiny_cross_encoder(Path(tempfile.mkdtemp())))
    reranker = CrossEncoderReranker(model, precision="fp32")
    docs = [f"{w} {v} passage {i}" for i, (w, v) in enumerate(zip(WORDS * 4, WORDS[3:] * 5, strict=False))][:60]
    questions = [f"{WORDS[i % len(WORDS)]} question {i}" for i in range(requests)]
    expected = {i: [r.corpus_id for r in reranker.rank(q, docs)] for i, q in enumerate(questions)}
    holder = ClusterHolder()
    try:
        port = _free_port()
        deployed = holder.send("deploy", {"model": model, "replicas": 2, "cpus_per_replica": 0.5, "port": port})
        placement = sorted(deployed["nodes"]) == sorted([holder.head, holder.worker])
        url = f"http://127.0.0.1:{port}"
        lock = threading.Lock()
        outcome = {"answered": 0, "wrong": 0, "errors": 0}
        latencies: list[float] = []

        def client() -> None:
            remote = RemoteReranker(url, timeout=60, retries=8, backoff=0.25)
            for i in range(requests):
                started = time.perf_counter()
                try:
                    got = [r.corpus_id for r in remote.rank(questions[i], docs)]
                except RemoteRerankError:
                    with lock:
                        outcome["errors"] += 1
                    continue
                with lock:
                    latencies.append(time.perf_counter() - started)
                    outcome["answered"] += 1
                    outcome["wrong"] += got != expected[i]

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        while outcome["answered"] < clients * requests // 8:
            time.sleep(0.05)
        holder.send("remove-worker")
        lost_at = time.perf_counter()
        for thread in threads:
            thread.join()
        finished = time.perf_counter()
        while True:
            status = holder.send("status")
            if status["states"] == {"RUNNING": 2} and set(status["nodes"]) == {holder.head}:
                break
            if time.perf_counter() - lost_at > 300:
                break
            time.sleep(0.5)
        recovered = time.perf_counter() - lost_at
    finally:
        holder.close()
    latencies.sort()
    return {
        "setup": "ray.cluster_utils.Cluster: head + worker on loopback, 1 CPU each; 2 replicas x 0.5 CPU",
        "replicas_on_both_nodes_before": placement,
        "requests": clients * requests,
        "clients": clients,
        **outcome,
        "worker_node_removed_after_answers": clients * requests // 8,
        "recovery_seconds_to_2_running_replicas": round(recovered, 1),
        "recovered_state": status["states"],
        "seconds": round(finished - started, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
    }


def ray_data_embedding(corpus: Path, n: int) -> dict[str, object]:
    """Ray Data (2 actors x 1 CPU, actor start included) against one process's encode, same texts."""
    import numpy as np

    from ce_rerank_plugins import ray_data
    from ce_rerank_plugins.retrieval import Embedder

    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]
        source = str(corpus.relative_to(REPO.parent)) if corpus.is_relative_to(REPO.parent) else str(corpus)
    else:
        sample = REPO / "ce_rerank_plugins" / "data" / "sample_corpus.jsonl"
        base = [json.loads(line)["text"] for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
        texts = [f"{t} ({i})" for i, t in enumerate(base * (n // len(base) + 1))][:n]
        source = "bundled sample corpus, repeated"
    embedder = Embedder()
    embedder.encode(texts[:32])  # warm: the single-process path is timed without its load
    start = time.perf_counter()
    single = embedder.encode(texts, show_progress=False)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    distributed = ray_data.embed_texts(texts, actors=2, cpus_per_actor=1.0)
    ray_s = time.perf_counter() - start
    return {
        "texts": len(texts),
        "source": source,
        "max_abs_diff": float(np.abs(single - distributed).max()),
        "results": {
            "single process encode (torch default threads)": {
                "seconds": round(single_s, 2),
                "texts_per_s": round(len(texts) / single_s, 1),
                "ratio": 1.0,
            },
            "Ray Data, 2 actors x 1 CPU (actor start and model load included)": {
                "seconds": round(ray_s, 2),
                "texts_per_s": round(len(texts) / ray_s, 1),
                "ratio": round(single_s / ray_s, 2),
            },
        },
    }


if __name__ == "__main__":
    main()
