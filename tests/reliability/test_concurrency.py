"""Concurrency and soak: threads and gathered coroutines on one reranker, searches beside writers,
memory over 2,000 calls, and the micro-batcher's error path."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.core._microbatch import MicroBatcher
from ce_rerank_plugins.retrieval import FaissIndex

QUERY = "How many people live in Lyon?"
DOCS = [f"passage number {i} about Lyon, coffee or sleep" for i in range(12)]


@pytest.fixture(scope="module")
def reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path)


def test_threads_and_gathered_coroutines_get_the_sequential_results(reranker):
    queries = [f"{QUERY} {i}" for i in range(24)]
    expected = [reranker.rank(q, DOCS) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda q: reranker.rank(q, DOCS), queries))

    async def gathered():
        return await asyncio.gather(*(reranker.arank(q, DOCS) for q in queries))

    assert threaded == expected
    assert asyncio.run(gathered()) == expected


def test_the_torch_free_onnx_engine_gives_threads_the_sequential_results(tiny_ce_path, tmp_path, monkeypatch):
    import shutil

    from ce_rerank_plugins.core._onnx_engine import OnnxPairEngine

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(tiny_ce_path, model)  # its onnx/ cache is written here, not into the shared fixture
    CrossEncoderReranker(model, precision="onnx")  # exports and records
    from ce_rerank_plugins import SHARED_MODELS

    SHARED_MODELS.clear()
    reranker = CrossEncoderReranker(model, precision="onnx")
    assert isinstance(reranker.engine, OnnxPairEngine)
    queries = [f"{QUERY} {i}" for i in range(24)]
    expected = [reranker.rank(q, DOCS) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda q: reranker.rank(q, DOCS), queries)) == expected
    SHARED_MODELS.clear()


def test_searches_beside_a_writer_see_whole_operations(sample_index):
    index = FaissIndex(sample_index.embedder)
    permanent = {f"p{i}": f"Permanent passage {i} about the river Rhône." for i in range(20)}
    index.add(list(permanent.values()), ids=list(permanent))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                index.add([f"transient {n}"], ids=[f"t{n}"], metadatas=[{"n": n}])
                index.delete([f"t{n}"])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    def reader() -> int:
        checked = 0
        for _ in range(60):
            for hit in index.search("river Rhône passage", k=25):
                if hit.id.startswith("p"):
                    assert hit.text == permanent[hit.id]
                else:
                    assert hit.text == f"transient {hit.id[1:]}" and hit.metadata == {"n": int(hit.id[1:])}
                checked += 1
        return checked

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with ThreadPoolExecutor(3) as pool:
            checked = sum(pool.map(lambda _: reader(), range(3)))
    finally:
        stop.set()
        thread.join()
    assert not errors and checked > 0
    assert sorted(index.ids) == sorted(permanent)


def test_memory_is_flat_over_a_2000_call_soak(reranker):
    process = psutil.Process()
    for _ in range(200):  # warm up allocators and caches
        reranker.rank(QUERY, DOCS[:5])
    before = process.memory_info().rss
    for i in range(2000):
        reranker.rank(f"{QUERY} {i % 50}", DOCS[:5], top_n=3)
    grown_mb = (process.memory_info().rss - before) / 2**20
    assert grown_mb < 40, f"RSS grew {grown_mb:.1f} MiB over 2,000 calls"


def test_one_callers_failure_reaches_only_that_caller():
    gate = threading.Event()

    def score(pairs, batch_size):
        gate.wait(5)
        if any(b == "poison" for _, b in pairs):
            raise ValueError("cannot score 'poison'")
        return np.asarray([[float(len(b))] for _, b in pairs], dtype=np.float32)

    batcher = MicroBatcher(score, max_wait_ms=50)
    futures = [batcher.submit([("q", "x" * i)], 4) for i in range(1, 4)]
    poisoned = batcher.submit([("q", "poison")], 4)
    futures += [batcher.submit([("q", "y" * i)], 4) for i in range(4, 6)]
    gate.set()
    with pytest.raises(ValueError, match="cannot score 'poison'"):
        poisoned.result(10)
    assert [float(f.result(10)[0, 0]) for f in futures] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_two_processes_exporting_one_model_at_once_both_work(tiny_ce_path, tmp_path, monkeypatch):
    """Concurrent first uses write distinct temporary files; the cache they leave is verified and usable."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from ce_rerank_plugins.core import onnx_fast_start_ready

    model = tmp_path / "model"
    shutil.copytree(tiny_ce_path, model)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    script = (
        "import json, sys\nfrom ce_rerank_plugins import CrossEncoderReranker\n"
        "r = CrossEncoderReranker(sys.argv[1], precision='onnx')\n"
        "print(json.dumps(r.predict([('lyon population', 'About 522,000 people live in Lyon.')]).tolist()))"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(model)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    scores = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
    assert not list((model / "onnx").glob(".*.tmp")), "no temporary file is left behind"
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    assert onnx_fast_start_ready(str(model))
