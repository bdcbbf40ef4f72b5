"""uvicorn, with a deadline for each request to arrive.

uvicorn times a connection out only while it idles *between* requests: a client that connects and
sends nothing, sends half its headers, or drips its body a byte at a time holds a connection (and a
file descriptor) forever, and a few hundred such clients exhaust a server. So a connection must
deliver each whole request (headers and body) within ``request_timeout`` seconds of opening or of its
previous response, or it is closed. Once a request has arrived, computing its answer takes as long as
it takes: the deadline covers the client's side only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_seconds

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 30.0


def _deadline_protocol(request_timeout: float) -> type[Any]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadlineProtocol(H11Protocol):
        """uvicorn's h11 protocol, closing a connection whose request does not arrive in time."""

        _request_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_request_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_request_deadline()  # a kept-alive connection owes its next request in time too

        def connection_lost(self, exc: Exception | None) -> None:
            if self._request_deadline is not None:
                self._request_deadline.cancel()
                self._request_deadline = None
            super().connection_lost(exc)

        def _arm_request_deadline(self) -> None:
            if self._request_deadline is not None:
                self._request_deadline.cancel()
            if not self.transport.is_closing():
                self._request_deadline = self.loop.call_later(request_timeout, self._request_deadline_passed)

        def _request_deadline_passed(self) -> None:
            self._request_deadline = None
            # IDLE: no whole request line and headers yet; SEND_BODY: its body is still arriving.
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.warning(
                "closed the connection of %s: no whole request within %g s (--request-timeout)",
                client,
                request_timeout,
            )
            self.transport.close()

    return RequestDeadlineProtocol


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    log_level: str = "warning",
    **kwargs: Any,
) -> Any:
    """A ``uvicorn.Config`` for ``app`` whose connections must deliver each request within ``request_timeout`` s.

    ``request_timeout=None`` means the default (30 s). Run it with ``uvicorn.Server(config).run()``;
    ``ce-rerank serve`` does. Other keyword arguments go to ``uvicorn.Config``. The connection speaks
    HTTP/1.1 through h11.

    Raises:
        ValueError: ``request_timeout`` is not a positive number of seconds.
        ImportError: uvicorn is not installed (the ``serve`` extra).
    """
    deadline = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else check_seconds(request_timeout, "request_timeout")
    uvicorn = require("uvicorn", "serve", purpose="ce-rerank serve")
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=_deadline_protocol(deadline),
        **kwargs,
    )
