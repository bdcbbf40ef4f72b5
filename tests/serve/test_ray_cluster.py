"""Serving and indexing on a real two-node Ray cluster (``ray.cluster_utils.Cluster``, 1 CPU a node).

The cluster is held by one subprocess (``tests/serve/cluster_holder.py``), which can take its worker
node away: that node's raylet and every process on it are killed, as when a machine is lost. Clients,
the CLI and the checks run here, outside Ray, as a user's would.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.retrieval import FaissIndex
from ce_rerank_plugins.serve import RemoteReranker, RemoteRerankError
from tests.serve.cluster_holder import ClusterHolder
from tests.serve.test_serve import DOCS, ERROR_CASES, QUERY, TEST_LIMITS, _free_port, post_raw

pytest.importorskip("ray", reason="the ray extra is part of the dev install")

pytestmark = pytest.mark.starts_ray

QUESTIONS = [
    "How many people live in Lyon?",
    "What water temperature should I use to brew coffee?",
    "Why does an afternoon coffee keep me awake at night?",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHolder]:
    holder = ClusterHolder()
    yield holder
    holder.close()


@pytest.fixture(scope="module")
def fp32_reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path, precision="fp32")


def _wait_for(cluster: ClusterHolder, done: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster.send("status")
        if done(status):
            return status
        if time.monotonic() > deadline:
            msg = f"the deployment did not reach the expected state within {timeout} s: {status}"
            raise AssertionError(msg)
        time.sleep(0.5)


class _Load:
    """Clients that each send ranked requests through ``RemoteReranker`` and check every answer."""

    def __init__(self, url: str, reranker: CrossEncoderReranker, clients: int, docs: list[str]) -> None:
        self.url, self.docs, self.clients = url, docs, clients
        self.expected = {i: [r.corpus_id for r in reranker.rank(f"{QUERY} {i}", docs)] for i in range(40)}
        self.answered = self.wrong = 0
        self.errors: list[str] = []
        self.retried: list[int] = []  # 5xx answers the client saw and retried
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def client(self, requests: int | None) -> None:
        remote = RemoteReranker(self.url, timeout=60, retries=8, backoff=0.25)
        remote._client.event_hooks["response"].append(
            lambda response: self.retried.append(response.status_code) if response.status_code >= 500 else None
        )
        sent = 0
        while (requests is None and not self.stop.is_set()) or (requests is not None and sent < requests):
            i = sent % len(self.expected)
            sent += 1
            try:
                got = [r.corpus_id for r in remote.rank(f"{QUERY} {i}", self.docs)]
            except RemoteRerankError as exc:
                with self.lock:
                    self.errors.append(str(exc))
                continue
            with self.lock:
                self.answered += 1
                self.wrong += got != self.expected[i]
        remote.close()

    def start(self, requests: int | None) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.client, args=(requests,)) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        return threads


@pytest.fixture(scope="module")
def two_node_url(cluster, tiny_ce_path) -> str:
    """Two replicas of 0.5 CPU on the two-node cluster, behind the head node's proxy."""
    port = _free_port()
    limits = dataclasses.asdict(TEST_LIMITS)
    deployed = cluster.send(
        "deploy",
        {"model": str(tiny_ce_path), "replicas": 2, "cpus_per_replica": 0.5, "port": port, "limits": limits},
    )
    assert deployed["states"] == {"RUNNING": 2}
    assert sorted(deployed["nodes"]) == sorted([cluster.head, cluster.worker]), "one replica on each node"
    return f"http://127.0.0.1:{port}"


def test_served_across_two_nodes_equals_in_process(two_node_url, fp32_reranker):
    expected = fp32_reranker.rank(QUERY, DOCS)
    for _ in range(4):  # requests reach both replicas
        body = httpx.post(f"{two_node_url}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30).json()
        assert [r["index"] for r in body["results"]] == [r.corpus_id for r in expected]
        assert [r["relevance_score"] for r in body["results"]] == pytest.approx([r.score for r in expected], abs=1e-5)
    got = RemoteReranker(two_node_url).rank(QUERY, DOCS, top_n=2)
    assert [r.corpus_id for r in got] == [r.corpus_id for r in expected[:2]]
    assert httpx.get(f"{two_node_url}/health").json()["status"] == "ok"


def test_the_langchain_adapter_works_against_the_cluster(two_node_url, fp32_reranker):
    from langchain_core.documents import Document

    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor

    docs = [Document(page_content=t) for t in DOCS]
    local = CrossEncoderCompressor(reranker=fp32_reranker, top_n=3).compress_documents(docs, QUERY)
    served = CrossEncoderCompressor(reranker=RemoteReranker(two_node_url), top_n=3).compress_documents(docs, QUERY)
    assert [d.page_content for d in served] == [d.page_content for d in local]


@pytest.mark.parametrize(("payload", "status", "message"), ERROR_CASES)
def test_errors_and_limits_through_the_ray_proxy(two_node_url, payload, status, message):
    response = post_raw(two_node_url, payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    if message:
        assert re.search(message, error["message"]), error["message"]


def test_losing_a_node_under_load_loses_no_request_and_gives_no_wrong_answer(cluster, two_node_url, fp32_reranker):
    """Last of the two-node tests: it takes the worker node (and the replica on it) away mid-load."""
    load = _Load(two_node_url, fp32_reranker, clients=8, docs=[f"{d} ({i})" for i in range(5) for d in DOCS])
    threads = load.start(requests=40)
    while load.answered < 40:  # mid-load: some answered, most still to come
        time.sleep(0.05)
    try:
        cluster.send("remove-worker")
        lost_at = time.monotonic()
        for thread in threads:
            thread.join(300)
        recovered = _wait_for(
            cluster, lambda s: s["states"] == {"RUNNING": 2} and set(s["nodes"]) == {cluster.head}, timeout=120
        )
        print(
            f"node loss: {load.answered} answered, {len(load.errors)} errors, {load.wrong} wrong, "
            f"{len(load.retried)} 5xx answers retried; back to 2 replicas {time.monotonic() - lost_at:.1f} s after"
        )
        assert load.errors == [] and load.wrong == 0 and load.answered == 8 * 40
        assert recovered["app"].endswith("RUNNING")
    finally:  # the next tests need both nodes, whatever happened here
        cluster.worker = cluster.send("add-worker")["worker"]


def test_autoscaling_adds_a_replica_under_a_burst_and_removes_it_in_the_quiet(cluster, tiny_ce_path, fp32_reranker):
    port = _free_port()
    deployed = cluster.send(
        "deploy",
        {
            "model": str(tiny_ce_path),
            "replicas": 1,
            "max_replicas": 2,
            "cpus_per_replica": 0.5,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 1,
            "downscale_delay_s": 2,
            "autoscaling": {"look_back_period_s": 2},
            "port": port,
        },
    )
    assert deployed["states"] == {"RUNNING": 1}
    docs = [f"{d} ({i})" for i in range(5) for d in DOCS]
    load = _Load(f"http://127.0.0.1:{port}", fp32_reranker, clients=6, docs=docs)
    threads = load.start(requests=None)  # a burst until Serve scales up
    try:
        _wait_for(cluster, lambda s: s["states"] == {"RUNNING": 2}, timeout=90)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(120)
    burst = load.answered
    _wait_for(cluster, lambda s: s["states"] == {"RUNNING": 1}, timeout=90)  # the quiet scales down
    assert load.errors == [] and load.wrong == 0 and burst > 0
    # Traffic during and after the scale-down is answered too.
    quiet = _Load(f"http://127.0.0.1:{port}", fp32_reranker, clients=2, docs=DOCS)
    for thread in quiet.start(requests=5):
        thread.join(60)
    assert quiet.errors == [] and quiet.wrong == 0 and quiet.answered == 10


def _corpus(tmp_path: Path, sample_records: list[dict[str, Any]], copies: int) -> Path:
    """The sample corpus, ``copies`` times over (each copy its own files): a run long enough to lose a node in."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for copy in range(copies):
        for r in sample_records:
            (corpus / f"{r['id']}-{copy}.txt").write_text(f"{r['text']} ({copy})", encoding="utf-8")
    return corpus


def _index(corpus: Path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ce_rerank_plugins.cli", "index", str(corpus), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _same_index(a: Path, b: Path) -> None:
    one, other = FaissIndex.load(a), FaissIndex.load(b)
    assert one.ids == other.ids
    for question in QUESTIONS:
        assert [h.id for h in one.search(question, k=10)] == [h.id for h in other.search(question, k=10)]


def test_index_on_the_cluster_equals_one_process_and_a_lost_node_leaves_no_partial_index(
    cluster, tmp_path, sample_records
):
    assert cluster.send("add-worker")["worker"] == cluster.worker  # the worker is there: nothing is added
    # The pool's two actors take a CPU each: the whole cluster, so no Serve replica of an earlier test may
    # hold part of one (an actor left waiting for room stalls the run on a busy machine).
    assert cluster.send("undeploy")["states"] == {}
    corpus = _corpus(tmp_path, sample_records, copies=10)
    assert _index(corpus, tmp_path / "local").returncode == 0
    on_cluster = _index(corpus, tmp_path / "cluster", "--ray", "--address", cluster.address, "--actors", "2")
    assert on_cluster.returncode == 0, on_cluster.stderr
    _same_index(tmp_path / "local", tmp_path / "cluster")

    # The worker node goes away while the run embeds on it: the run completes correctly, or fails with a
    # one-line error and leaves no index behind; never a partial or duplicated one, and it never hangs
    # (Ray restarts the lost actor, which waits for a CPU this cluster no longer has).
    out = tmp_path / "lost"
    command = ["index", str(corpus), "--out", str(out), "--ray", "--address", cluster.address, "--actors", "2"]
    command += ["--stall-timeout", "30"]
    # Ray Data starts handing out batches as soon as one pool actor is up; on a busy machine the head's
    # actor could embed everything before the worker's had loaded its model, and no node would be lost
    # mid-run. Here the pool starts work only once both actors are up, so the worker's actor embeds.
    run = subprocess.Popen(
        [sys.executable, "-m", "ce_rerank_plugins.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "120"},
    )
    try:
        removed = cluster.send("remove-worker-once-it-embeds")
        _, stderr = run.communicate(timeout=300)
        assert removed["removed"] == cluster.worker, f"no actor ever ran on the worker node: {stderr[-2000:]}"
        print(f"index --ray with its worker node lost: exit {run.returncode}; {stderr.strip()[-300:]}")
        if run.returncode == 0:
            _same_index(tmp_path / "local", out)
        else:
            assert not out.exists(), "a failed run must leave no index"
            assert "Traceback" not in stderr and "no batch finished for 30 s" in stderr, stderr
    finally:
        run.kill()  # a no-op once it has exited
        cluster.worker = cluster.send("add-worker")["worker"]
