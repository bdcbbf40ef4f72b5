"""The shared reranker over HTTP: one ASGI app (FastAPI) in the widely used rerank request shape.

``POST /v1/rerank`` takes ``{"query", "documents": [str | {"text"}], "top_n"?, "return_documents"?,
"model"?}`` and answers ``{"model", "results": [{"index", "relevance_score", "document"?}], "usage"}``;
``GET /health`` and ``GET /v1/models`` report the state. The app holds one core
:class:`~ce_rerank_plugins.core.CrossEncoderReranker`; concurrent requests are micro-batched by the
core's worker, so the server does no batching of its own. Blocking work runs in a thread pool.

Needs the ``serve`` extra (``pip install 'ce-rerank-plugins[serve]'``). Run it with
``ce-rerank serve`` (uvicorn, configured by :func:`uvicorn_config`: each request must arrive within a
deadline) or mount :func:`create_app` in any ASGI server. The same app runs as a
Ray Serve deployment (:func:`ray_application`, :func:`run_on_ray`; the ``ray`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ce_rerank_plugins.serve._client import RemoteReranker, RemoteRerankError

if TYPE_CHECKING:
    from ce_rerank_plugins.serve._app import ServeLimits, create_app
    from ce_rerank_plugins.serve._http import uvicorn_config
    from ce_rerank_plugins.serve._ray import RayServeSettings, ray_application, run_on_ray

__all__ = [
    "RayServeSettings",
    "RemoteRerankError",
    "RemoteReranker",
    "ServeLimits",
    "create_app",
    "ray_application",
    "run_on_ray",
    "uvicorn_config",
]


def __getattr__(name: str) -> Any:
    # The server needs FastAPI (the serve extra), Ray Serve the ray extra; the client only httpx.
    # Import each on use.
    if name in ("ServeLimits", "create_app"):
        from ce_rerank_plugins.serve import _app

        return getattr(_app, name)
    if name == "uvicorn_config":
        from ce_rerank_plugins.serve import _http

        return _http.uvicorn_config
    if name in ("RayServeSettings", "ray_application", "run_on_ray"):
        from ce_rerank_plugins.serve import _ray

        return getattr(_ray, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
