"""The same app on a real local Ray Serve (2 replicas, loopback HTTP): equality, errors, a replica killed."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.serve import RemoteReranker, RemoteRerankError
from tests.serve.test_serve import DOCS, ERROR_CASES, QUERY, TEST_LIMITS, _free_port, post_raw


@pytest.fixture(scope="module")
def ray_url(local_ray, tiny_ce_path) -> Iterator[str]:
    from ray import serve

    from ce_rerank_plugins.serve._ray import APP_NAME, RayServeSettings, ray_application, run_on_ray

    port = _free_port()
    settings = RayServeSettings(replicas=2, cpus_per_replica=0.5)
    app = ray_application(str(tiny_ce_path), precision="fp32", limits=TEST_LIMITS, settings=settings)
    run_on_ray(app, port=port)
    yield f"http://127.0.0.1:{port}"
    serve.delete(APP_NAME)
    serve.shutdown()


@pytest.fixture(scope="module")
def fp32_reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path, precision="fp32")


def _replica_states() -> dict[str, int]:
    from ray import serve

    from ce_rerank_plugins.serve._ray import APP_NAME

    return dict(serve.status().applications[APP_NAME].deployments[APP_NAME].replica_states)


def test_served_on_ray_equals_in_process(ray_url, fp32_reranker):
    assert _replica_states() == {"RUNNING": 2}
    expected = fp32_reranker.rank(QUERY, DOCS)
    body = httpx.post(f"{ray_url}/v1/rerank", json={"query": QUERY, "documents": DOCS}, timeout=30).json()
    assert [r["index"] for r in body["results"]] == [r.corpus_id for r in expected]
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx([r.score for r in expected], abs=1e-5)
    got = RemoteReranker(ray_url).rank(QUERY, DOCS, top_n=2)
    assert [r.corpus_id for r in got] == [r.corpus_id for r in expected[:2]]
    assert httpx.get(f"{ray_url}/health").json()["status"] == "ok"


def test_the_langchain_adapter_works_against_ray(ray_url, fp32_reranker):
    from langchain_core.documents import Document

    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor

    docs = [Document(page_content=t) for t in DOCS]
    local = CrossEncoderCompressor(reranker=fp32_reranker, top_n=3).compress_documents(docs, QUERY)
    served = CrossEncoderCompressor(reranker=RemoteReranker(ray_url), top_n=3).compress_documents(docs, QUERY)
    assert [d.page_content for d in served] == [d.page_content for d in local]


@pytest.mark.parametrize(("payload", "status", "message"), ERROR_CASES)
def test_errors_and_limits_through_the_ray_proxy(ray_url, payload, status, message):
    response = post_raw(ray_url, payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    if message:
        assert re.search(message, error["message"]), error["message"]


def test_a_replica_killed_mid_load_is_replaced_and_no_request_is_lost(ray_url, fp32_reranker, local_ray):
    docs = [f"{d} ({i})" for i in range(15) for d in DOCS]  # 60 candidates: requests are in flight at the kill
    expected = {i: [r.corpus_id for r in fp32_reranker.rank(f"{QUERY} {i}", docs)] for i in range(40)}
    outcomes: list[str] = []
    server_errors: list[int] = []
    lock = threading.Lock()
    started = threading.Event()

    def client() -> None:
        remote = RemoteReranker(ray_url, retries=6, backoff=0.1)
        remote._client.event_hooks["response"].append(
            lambda response: server_errors.append(response.status_code) if response.status_code >= 500 else None
        )
        for i in range(40):
            try:
                got = [r.corpus_id for r in remote.rank(f"{QUERY} {i}", docs)]
                outcome = "ok" if got == expected[i] else f"wrong order for request {i}: {got}"
            except RemoteRerankError as exc:  # failed loudly: acceptable, and counted
                outcome = f"loud: {exc}"
            with lock:
                outcomes.append(outcome)
            started.set()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(30)
    victim = next(a for a in local_ray.util.list_named_actors(all_namespaces=True) if "REPLICA" in a["name"])
    local_ray.kill(local_ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    for t in threads:
        t.join(120)
    assert len(outcomes) == 8 * 40, "a request neither returned nor failed"
    print(f"5xx answers seen and retried: {len(server_errors)}")
    assert not [o for o in outcomes if o.startswith("wrong")]
    # With retries on 5xx and on dropped connections, the surviving replica answers every request.
    assert outcomes.count("ok") == len(outcomes), [o for o in outcomes if o != "ok"][:3]
    names = {a["name"] for a in local_ray.util.list_named_actors(all_namespaces=True) if "REPLICA" in a["name"]}
    assert victim["name"] not in names
    deadline = time.monotonic() + 90
    while _replica_states() != {"RUNNING": 2} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _replica_states() == {"RUNNING": 2}, "the killed replica was not replaced"


def test_ray_settings_are_checked_and_translated():
    from ce_rerank_plugins.serve._ray import RayServeSettings

    fixed = RayServeSettings(replicas=3, cpus_per_replica=2).deployment_options()
    assert fixed["num_replicas"] == 3 and fixed["ray_actor_options"]["num_cpus"] == 2
    assert "autoscaling_config" not in fixed
    scaling = RayServeSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=4).deployment_options()
    assert scaling["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 4}
    assert "num_replicas" not in scaling
    with pytest.raises(ValueError, match="max_replicas"):
        RayServeSettings(min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError, match="replicas >= 1"):
        RayServeSettings(replicas=0)
    with pytest.raises(ValueError, match="cpus_per_replica"):
        RayServeSettings(cpus_per_replica=0)


def test_ray_application_checks_its_arguments_before_any_replica_starts(tmp_path, monkeypatch):
    from ce_rerank_plugins.serve._ray import ray_application

    with pytest.raises(ValueError, match="precision must be one of"):
        ray_application("m", precision="fp8")  # type: ignore[arg-type]
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    bound = ray_application("model")  # a relative local path becomes absolute for the replicas
    assert bound._bound_deployment.init_args[0] == str((tmp_path / "model").resolve())
    assert ray_application("org/hub-model")._bound_deployment.init_args[0] == "org/hub-model"


def test_autoscaling_settings_are_accepted_by_ray_serve():
    from ce_rerank_plugins.serve._ray import RayServeSettings, ray_application

    settings = RayServeSettings(min_replicas=1, max_replicas=4, target_ongoing_requests=4, cpus_per_replica=2)
    deployment = ray_application("m", settings=settings)._bound_deployment  # Ray validates the config here
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas, autoscaling.target_ongoing_requests) == (1, 4, 4.0)
    assert deployment.ray_actor_options["num_cpus"] == 2
    assert deployment.init_args[3] == 2  # the replica's torch threads follow its CPUs


def test_the_serve_command_on_ray_stops_cleanly_on_sigterm(tiny_ce_path):
    # A container stop or `kill` sends SIGTERM: the server shuts Serve down and exits 0, no crash dump.
    import os
    import signal
    import subprocess
    import sys

    port = _free_port()
    cli = [sys.executable, "-m", "ce_rerank_plugins.cli", "serve", "--ray", "--model", str(tiny_ce_path)]
    env = {**os.environ, "RAY_ADDRESS": ""}  # its own local Ray, not the test session's
    server = subprocess.Popen(
        [*cli, "--port", str(port), "--precision", "fp32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert reply.status_code == 200
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output[-3000:]
    assert "stopped" in output and "SIGTERM received" not in output
