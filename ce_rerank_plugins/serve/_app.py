"""The FastAPI app: validation, limits, JSON errors, and the shared core reranker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ce_rerank_plugins._optional import require

require("fastapi", "serve", purpose="ce_rerank_plugins.serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from ce_rerank_plugins.core import CrossEncoderReranker  # noqa: E402


def served_name(model: str) -> str:
    """The model's name as clients see it: a local model's folder name, not where it lies on the server's disk."""
    path = Path(model)
    return path.name if path.is_absolute() and path.is_dir() else model


@dataclass(frozen=True)
class ServeLimits:
    """What one request may carry; larger requests get 413 with the limit named."""

    max_documents: int = 1000
    max_document_chars: int = 20_000
    max_query_chars: int = 4_000
    max_body_bytes: int = 8 * 2**20


class DocumentObject(BaseModel):
    """A document given as an object (the other accepted shape is a bare string): its text and an optional id."""

    model_config = ConfigDict(extra="forbid")
    text: str
    id: str | int | None = None


class RerankRequest(BaseModel):
    """The rerank request shape of Cohere, Jina, TEI and Infinity style servers."""

    model_config = ConfigDict(extra="forbid")
    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    model: str | None = None


class _Unavailable(Exception):
    pass


class _BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes``, whether declared (``content-length``) or streamed.

    A chunked upload declares no length, so the bytes are counted as they arrive; past the limit the
    rest is never buffered and the app's answer is replaced by the 413.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the request body has {declared} bytes, more than the limit of {self.max_bytes}")
            return
        seen = {"bytes": 0, "over": False, "answered": False}

        async def counted() -> dict[str, Any]:
            if seen["over"]:  # the app reads on: tell it the client is gone instead of buffering more
                return {"type": "http.disconnect"}
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    seen["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict[str, Any]) -> None:
            if seen["over"]:
                if not seen["answered"]:
                    seen["answered"] = True
                    await self._refuse(send, f"the request body is more than the limit of {self.max_bytes} bytes")
                return
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not seen["over"]:
                raise
        if seen["over"] and not seen["answered"]:
            seen["answered"] = True
            await self._refuse(send, f"the request body is more than the limit of {self.max_bytes} bytes")

    @staticmethod
    async def _refuse(send: Any, message: str) -> None:
        body = json.dumps({"error": {"status": 413, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(
    reranker: CrossEncoderReranker | Callable[[], CrossEncoderReranker] | None = None,
    *,
    limits: ServeLimits | None = None,
) -> FastAPI:
    """The ASGI app serving ``reranker`` (or one built by a factory, or the default model, on first use).

    Args:
        reranker: A core reranker, a zero-argument factory (called once, in the background, at
            start-up; requests get 503 until it is ready), or None for the default model.
        limits: Request limits (documents, characters, body size).
    """
    limits = limits or ServeLimits()
    state: dict[str, Any] = {"reranker": reranker if isinstance(reranker, CrossEncoderReranker) else None}
    ready = threading.Event()
    failure: list[BaseException] = []
    if state["reranker"] is not None:
        ready.set()

    def load() -> None:
        try:
            if callable(reranker):
                state["reranker"] = reranker()
            else:
                from ce_rerank_plugins.core import default_model

                state["reranker"] = CrossEncoderReranker(default_model())
        except BaseException as exc:  # reported by /health and every request
            failure.append(exc)
        finally:
            ready.set()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not ready.is_set():  # load in the background: /health says 503 until the model is ready
            threading.Thread(target=load, name="ce-rerank-load", daemon=True).start()
        yield

    app = FastAPI(title="ce-rerank", version="1", lifespan=lifespan)

    def current() -> CrossEncoderReranker:
        if failure:
            msg = f"the model failed to load: {failure[0]}"
            raise _Unavailable(msg)
        if not ready.is_set() or state["reranker"] is None:
            msg = "the model is still loading; retry shortly"
            raise _Unavailable(msg)
        loaded: CrossEncoderReranker = state["reranker"]
        return loaded

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(422, f"invalid request: {where or 'body'}: {first.get('msg', 'bad value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404, 405, and bodies FastAPI cannot parse: the same {"error": ...} shape as every other error.
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(_Unavailable)
    async def _unavailable(_: Request, exc: _Unavailable) -> JSONResponse:
        return error(503, str(exc))

    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)

    @app.get("/health")
    async def health() -> JSONResponse:
        try:
            model = current()
        except _Unavailable as exc:
            return error(503, str(exc))
        return JSONResponse({"status": "ok", "model": served_name(model.key.model), "precision": model.precision})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = current()
        # The fusion the model recommends, so a remote client fuses exactly as the local reranker does.
        fusion = {"method": model.fusion, "weight": model.fusion_weight}
        return {"object": "list", "data": [{"id": served_name(model.key.model), "object": "model", "fusion": fusion}]}

    @app.post("/v1/rerank")
    async def rerank(body: RerankRequest) -> Any:
        model = current()
        name = served_name(model.key.model)
        if body.model not in (None, name, model.key.model):
            return error(422, f"this server serves {name!r}, not {body.model!r:.100}")
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        if len(texts) > limits.max_documents:
            return error(413, f"{len(texts)} documents, more than the limit of {limits.max_documents}")
        if len(body.query) > limits.max_query_chars:
            return error(413, f"the query has {len(body.query)} characters, more than {limits.max_query_chars}")
        for i, text in enumerate(texts):
            if len(text) > limits.max_document_chars:
                return error(413, f"documents[{i}] has {len(text)} characters, more than {limits.max_document_chars}")
        try:
            # Plain cross-encoder scores, the meaning every rerank API gives relevance_score; a client
            # fuses with its own first-stage scores (RemoteReranker does).
            ranked = await asyncio.to_thread(model.rank, body.query, texts, body.top_n, fusion="none")
        except (TypeError, ValueError) as exc:
            return error(422, str(exc))
        results = []
        for r in ranked:
            item: dict[str, Any] = {"index": r.corpus_id, "relevance_score": r.score}
            if body.return_documents:
                item["document"] = {"text": texts[r.corpus_id]}
            results.append(item)
        return {"model": name, "results": results, "usage": {"documents": len(texts)}}

    return app
