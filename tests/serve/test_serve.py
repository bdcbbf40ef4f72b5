"""The HTTP server on loopback (real uvicorn, real httpx) and RemoteReranker against it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.serve import RemoteReranker, RemoteRerankError, ServeLimits, create_app, uvicorn_config

QUERY = "How many people live in Lyon?"
DOCS = [
    "Lyon counted roughly 522,000 residents at the last census.",
    "Lyon is famous for its bouchons.",
    "The Rhône and the Saône meet in Lyon.",
    "Coffee brews best just off the boil.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """The app on loopback, configured as ``ce-rerank serve`` configures it."""

    def __init__(self, app, request_timeout: float = 30.0) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn_config(app, host="127.0.0.1", port=self.port, request_timeout=request_timeout)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path)


@pytest.fixture(scope="module")
def server(reranker) -> Iterator[_Server]:
    with _Server(create_app(reranker, limits=TEST_LIMITS)) as running:
        yield running


def test_served_results_equal_in_process_results(server, reranker):
    expected = reranker.rank(QUERY, DOCS)
    response = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "return_documents": True})
    assert response.status_code == 200
    body = response.json()
    assert [r["index"] for r in body["results"]] == [r.corpus_id for r in expected]
    for got, want in zip(body["results"], expected, strict=True):
        assert got["relevance_score"] == pytest.approx(want.score, abs=1e-5)
        assert got["document"] == {"text": DOCS[want.corpus_id]}
    assert body["usage"] == {"documents": 4} and body["model"] == Path(reranker.key.model).name  # not its path
    objects = [{"text": d, "id": i} for i, d in enumerate(DOCS)]
    top = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": objects, "top_n": 2}).json()
    assert [r["index"] for r in top["results"]] == [r.corpus_id for r in expected[:2]]
    assert "document" not in top["results"][0]


def test_remote_reranker_sync_async_and_predict(server, reranker):
    remote = RemoteReranker(server.url)
    expected = reranker.rank(QUERY, DOCS, top_n=3)
    got = remote.rank(QUERY, DOCS, top_n=3)
    assert [r.corpus_id for r in got] == [r.corpus_id for r in expected]
    assert [r.score for r in got] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert [r.corpus_id for r in asyncio.run(remote.arank(QUERY, DOCS, top_n=3))] == [r.corpus_id for r in expected]
    pairs = [(QUERY, DOCS[0]), ("coffee", DOCS[3]), (QUERY, DOCS[1])]
    assert remote.predict(pairs) == pytest.approx(reranker.predict(pairs), abs=1e-5)
    assert remote.rank(QUERY, []) == []
    with pytest.raises(TypeError, match="documents must be a list"):
        remote.rank(QUERY, "one string")
    with pytest.raises(ValueError, match="query is empty"):
        remote.rank("", DOCS)


def test_a_chunked_body_over_the_limit_is_refused_like_a_declared_one(server):
    """No content-length: the bytes are counted as they stream in, so the limit holds all the same."""
    # Within every other limit (64 documents of 190 characters, a 3,900-character query), but over 16,000 bytes.
    big = json.dumps({"query": "q" * 3900, "documents": ["x" * 190] * 64}).encode()
    assert len(big) > 16000

    def chunks():
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    streamed = httpx.post(f"{server.url}/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert "more than the limit of 16000 bytes" in streamed.json()["error"]["message"]
    small = json.dumps({"query": "q", "documents": ["a", "b"]}).encode()
    ok = httpx.post(f"{server.url}/v1/rerank", content=iter([small]), headers={"content-type": "application/json"})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2
    extra = httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": [{"text": "a", "vector": [1]}]})
    assert extra.status_code == 422 and "documents.0" in extra.json()["error"]["message"]
    with_id = httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": [{"text": "a", "id": 7}]})
    assert with_id.status_code == 200


def test_every_error_has_the_documented_shape(server):
    """404, 405, unparseable bytes and deep nesting answer {"error": {"status", "message"}}, never {"detail"}."""
    cases = [
        httpx.get(f"{server.url}/nowhere"),
        httpx.get(f"{server.url}/v1/rerank"),
        httpx.post(f"{server.url}/v1/rerank", content=b"\xff\xfe{", headers={"content-type": "application/json"}),
        httpx.post(f"{server.url}/v1/rerank", content=b"[" * 5000, headers={"content-type": "application/json"}),
        httpx.post(f"{server.url}/v1/rerank", json={"query": "q", "documents": ["a"], "model": "m" * 100_000}),
    ]
    for response in cases:
        body = response.json()
        assert 400 <= response.status_code < 500 and set(body) == {"error"}, (response.status_code, body)
        assert body["error"]["status"] == response.status_code and body["error"]["message"]
        assert len(response.content) < 2000, "a client's long string is not echoed back"
    assert [r.status_code for r in cases[:2]] == [404, 405]


def test_health_and_models(server, reranker):
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    assert httpx.get(f"{server.url}/v1/models").json()["data"][0]["id"] == Path(reranker.key.model).name


#: Each bad request, the status it gets and its message (also run against Ray Serve in test_ray_serve.py).
ERROR_CASES = [
    ({"documents": ["a"]}, 422, "query: Field required"),
    ({"query": "q", "documents": "abc"}, 422, "documents: Input should be a valid list"),
    ({"query": "q", "documents": [1]}, 422, "invalid request: documents.0"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n: Input should be greater than or equal to 1"),
    ({"query": "q", "documents": ["a"], "topn": 1}, 422, "topn: Extra inputs are not permitted"),
    ({"query": "q", "documents": ["a"], "model": "other/model"}, 422, "this server serves"),
    ({"query": "q\ud800", "documents": ["a"]}, 422, None),
    ({"query": " ", "documents": ["a"]}, 422, "query is empty"),
    ({"query": "q", "documents": ["a"] * 65}, 413, "65 documents, more than the limit of 64"),
    ({"query": "q", "documents": ["x" * 201]}, 413, r"documents\[0\] has 201 characters"),
    (
        {"query": "q", "documents": ["x" * 190] * 5, "pad": "z" * 16000},
        413,
        "more than the limit of 16000",
    ),
]
#: The limits the error cases are written for.
TEST_LIMITS = ServeLimits(max_documents=64, max_document_chars=200, max_body_bytes=16000)


def post_raw(url: str, payload: dict) -> httpx.Response:
    """POST ``payload`` as ASCII JSON (lone surrogates escaped, as a client in another language may send)."""
    import json as _json

    body = _json.dumps(payload, ensure_ascii=True)
    return httpx.post(f"{url}/v1/rerank", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(("payload", "status", "message"), ERROR_CASES)
def test_errors_and_limits_are_json_with_their_status(server, payload, status, message):
    import re

    response = post_raw(server.url, payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    if message:
        assert re.search(message, error["message"]), error["message"]


def test_503_while_loading_then_the_client_retries_until_ready(tiny_ce_path):
    gate = threading.Event()

    def slow_factory() -> CrossEncoderReranker:
        gate.wait(10)
        return CrossEncoderReranker(tiny_ce_path)

    with _Server(create_app(slow_factory)) as running:
        assert httpx.get(f"{running.url}/health").status_code == 503
        refused = httpx.post(f"{running.url}/v1/rerank", json={"query": "q", "documents": ["a"]})
        assert refused.status_code == 503 and "still loading" in refused.json()["error"]["message"]
        with pytest.raises(RemoteRerankError, match="answered 503: the model is still loading"):
            RemoteReranker(running.url, retries=1, backoff=0.01).rank("q", ["a"])
        threading.Timer(0.3, gate.set).start()
        assert len(RemoteReranker(running.url, retries=8, backoff=0.1).rank("q", ["a", "b"])) == 2


def test_a_failed_load_is_reported_not_hidden(tmp_path):
    def broken() -> CrossEncoderReranker:
        return CrossEncoderReranker(tmp_path / "no-model")

    with _Server(create_app(broken)) as running:
        deadline = time.monotonic() + 10
        while "still loading" in httpx.get(f"{running.url}/health").text and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(f"{running.url}/health")
        assert health.status_code == 503 and "failed to load" in health.json()["error"]["message"]


def test_a_timed_out_request_is_not_sent_again():
    """A slow server already computes the request: retrying a timeout would only multiply its work."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    calls = {"n": 0}
    slow = FastAPI()

    @slow.post("/v1/rerank")
    async def _rerank() -> JSONResponse:
        calls["n"] += 1
        await asyncio.sleep(1.0)
        return JSONResponse({"model": "m", "results": [{"index": 0, "relevance_score": 1.0}]})

    with _Server(slow) as running:
        remote = RemoteReranker(running.url, timeout=0.2, retries=3, backoff=0.01)
        with pytest.raises(RemoteRerankError, match=r"did not answer within timeout=0.2 s .*not retried"):
            remote.rank("q", ["a"])
        assert calls["n"] == 1
        with pytest.raises(RemoteRerankError, match="not retried"):
            asyncio.run(remote.arank("q", ["a"]))
        assert calls["n"] == 2
        remote.close()


def test_a_connection_that_does_not_deliver_its_request_in_time_is_closed(reranker, caplog):
    """Half-open clients (silent, half a header, a dripping body) are closed; slow answers are not cut."""
    from fastapi.responses import JSONResponse

    app = create_app(reranker)

    @app.post("/slow")
    async def _slow() -> JSONResponse:
        await asyncio.sleep(1.5)  # computing longer than the deadline: the client's side is done
        return JSONResponse({"done": True})

    body = json.dumps({"query": QUERY, "documents": DOCS}).encode()
    head = (
        f"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with _Server(app, request_timeout=0.5) as running, caplog.at_level("WARNING", logger="ce_rerank_plugins.serve"):
        attempts = {
            "silent": b"",
            "half a header": b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\n",
            "a dripping body": head.encode() + body[:10],
        }
        started = time.monotonic()
        sockets = {}
        for name, sent in attempts.items():
            sockets[name] = socket.create_connection(("127.0.0.1", running.port))
            sockets[name].sendall(sent)
        for name, sock in sockets.items():
            sock.settimeout(10)
            assert sock.recv(1024) == b"", f"{name}: the server must close the connection"
            sock.close()
        assert time.monotonic() - started < 5
        assert caplog.text.count("no whole request within 0.5 s") == 3

        # A whole request, then a kept-alive connection that owes its next one: answered, then closed.
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            sock.settimeout(10)
            sock.sendall(head.encode() + body)
            answer = b""
            while b"relevance_score" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            sock.sendall(b"GET /hea")  # one byte resets uvicorn's keep-alive timer; the deadline still holds
            assert sock.recv(1024) == b""
        # An answer that takes longer than the deadline to compute is not cut.
        slow = httpx.post(f"{running.url}/slow", timeout=10)
        assert slow.status_code == 200 and slow.json() == {"done": True}


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "30"])
def test_the_request_deadline_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="request_timeout must be a positive, finite number"):
        uvicorn_config(object(), request_timeout=bad)


def test_a_500_is_retried_and_a_persistent_one_fails_loudly():
    # Ray Serve answers 500 for the requests in flight on a replica that dies; reranking is a pure
    # function of the request, so the client retries any 5xx.
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    calls = {"n": 0}
    flaky = FastAPI()

    @flaky.post("/v1/rerank")
    async def _rerank() -> JSONResponse:
        calls["n"] += 1
        if calls["n"] <= 2:
            return JSONResponse({"error": "replica died"}, status_code=500)
        return JSONResponse(
            {"model": "m", "results": [{"index": 1, "relevance_score": 2.0}, {"index": 0, "relevance_score": 1.0}]}
        )

    with _Server(flaky) as running:
        assert [r.corpus_id for r in RemoteReranker(running.url, retries=2, backoff=0.01).rank("q", ["a", "b"])] == [
            1,
            0,
        ]
        assert calls["n"] == 3
        calls["n"] = -10
        with pytest.raises(RemoteRerankError, match="500"):
            RemoteReranker(running.url, retries=1, backoff=0.01).rank("q", ["a", "b"])
        assert calls["n"] == -8


def test_local_and_remote_fuse_alike_by_default(tiny_ce_path, tmp_path):
    """One argument to switch: the client reads the served model's recommended fusion and applies it."""
    import json
    import shutil

    from langchain_core.documents import Document

    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor

    model_dir = tmp_path / "recommends-fusion"
    shutil.copytree(tiny_ce_path, model_dir)
    (model_dir / "ce_rerank.json").write_text(json.dumps({"fusion": "weighted", "fusion_weight": 0.4}))
    local = CrossEncoderReranker(model_dir)
    assert (local.fusion, local.fusion_weight) == ("weighted", 0.4)
    plain = [r.corpus_id for r in local.rank(QUERY, DOCS, fusion="none")]
    # Retrieval scores that disagree with the cross-encoder, so fusing changes the order.
    first = [0.0] * len(DOCS)
    for position, index in enumerate(plain):
        first[index] = float(position)
    docs = [Document(page_content=t, metadata={"retrieval_score": s}) for t, s in zip(DOCS, first, strict=True)]
    with _Server(create_app(local, limits=TEST_LIMITS)) as running:
        remote = RemoteReranker(running.url)
        assert remote.recommended_fusion() == ("weighted", 0.4)
        here = CrossEncoderCompressor(reranker=local, top_n=4).compress_documents(docs, QUERY)
        there = CrossEncoderCompressor(reranker=remote, top_n=4).compress_documents(docs, QUERY)
        assert [d.page_content for d in there] == [d.page_content for d in here]
        assert [d.page_content for d in here] != [DOCS[i] for i in plain]  # fusion did change the order
        ranked = remote.rank(QUERY, DOCS, first_stage_scores=first)
        assert {r.fusion for r in ranked} == {"weighted"}
        assert {r.fusion for r in remote.rank(QUERY, DOCS)} == {"none"}


def test_an_unreachable_server_is_a_clear_error_after_the_retries():
    port = _free_port()
    with pytest.raises(RemoteRerankError, match=r"cannot reach http://127.0.0.1:\d+ after 3 attempts"):
        RemoteReranker(f"http://127.0.0.1:{port}", retries=2, backoff=0.01, timeout=1).rank("q", ["a"])


def test_the_adapters_take_a_remote_reranker_in_place_of_the_local_model(server, reranker, tiny_ce_path):
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor
    from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

    remote = RemoteReranker(server.url)
    docs = [Document(page_content=t, metadata={"retrieval_score": 1.0 - i / 10}) for i, t in enumerate(DOCS)]
    for fusion in ("none", "weighted"):
        local = CrossEncoderCompressor(reranker=reranker, top_n=3, fusion=fusion).compress_documents(docs, QUERY)
        served = CrossEncoderCompressor(reranker=remote, top_n=3, fusion=fusion).compress_documents(docs, QUERY)
        assert [d.page_content for d in served] == [d.page_content for d in local]
        assert [d.metadata["relevance_score"] for d in served] == pytest.approx(
            [d.metadata["relevance_score"] for d in local], abs=1e-5
        )
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0 - i / 10) for i, t in enumerate(DOCS)]
    local_nodes = CrossEncoderNodePostprocessor(reranker=reranker, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    served_nodes = CrossEncoderNodePostprocessor(reranker=remote, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.get_content() for n in served_nodes] == [n.node.get_content() for n in local_nodes]
    with pytest.raises(ValueError, match="Input should be an instance of Reranker"):
        CrossEncoderCompressor(reranker="http://not-a-reranker")
