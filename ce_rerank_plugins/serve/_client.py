"""``RemoteReranker``: the core's ``rank`` / ``arank`` / ``predict`` over HTTP (httpx), with retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_query, check_sequence, check_text
from ce_rerank_plugins.core import (
    Fusion,
    RankedResult,
    applied_fusion,
    check_first_stage,
    check_fusion,
    check_rank_options,
    fuse_scores,
    select_results,
)
from ce_rerank_plugins.errors import CERerankError

#: Status codes worth another try: any 5xx (the server is loading, overloaded, restarting, or a replica
#: died mid-request). Reranking is a pure function of the request, so a retry can never apply twice.
RETRY_STATUSES = frozenset(range(500, 600))


def _checked(query: object, documents: object, top_n: object) -> list[str]:
    check_query(query)
    docs = [check_text(d, f"documents[{i}]") for i, d in enumerate(check_sequence(documents, "documents"))]
    check_rank_options(top_n, None, 0)
    return docs


@dataclass(frozen=True)
class _Plan:
    """How a rank call turns the server's plain scores into results (the core's own selection)."""

    top_n: int | None
    return_documents: bool
    threshold: float | None
    min_keep: int
    first_stage: np.ndarray[Any, Any] | None
    fusion: Fusion
    weight: float

    def select(self, scores: np.ndarray[Any, Any], docs: list[str]) -> list[RankedResult]:
        fused = (
            None
            if self.fusion == "none"
            else fuse_scores(scores, self.first_stage, fusion=self.fusion, weight=self.weight)
        )
        return select_results(
            scores,
            docs if self.return_documents else None,
            top_n=self.top_n,
            threshold=self.threshold,
            min_keep=self.min_keep,
            fused=fused,
            first_stage=self.first_stage,
            fusion=applied_fusion(self.fusion, self.first_stage),
        )


class RemoteRerankError(CERerankError):
    """The server refused the request (4xx), or kept failing after the retries (5xx, connection)."""


class RemoteReranker:
    """A reranker served by ``ce-rerank serve`` (or any server of the same request shape).

    Args:
        url: The server's base URL, e.g. ``"http://127.0.0.1:8080"``.
        model: The model to ask for (None: the server's).
        timeout: Seconds per attempt.
        retries: Further attempts after a connection error or a 5xx (a 4xx or a timed-out request is
            never retried).
        backoff: Seconds before the first retry; doubled each time.

    Example:
        >>> reranker = RemoteReranker("http://127.0.0.1:8080")  # doctest: +SKIP
        >>> reranker.rank("How many people live in Lyon?", passages, top_n=3)  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self._httpx = require("httpx", "serve", purpose="RemoteReranker")
        if retries < 0 or timeout <= 0 or backoff < 0:
            msg = "retries and backoff must be >= 0 and timeout > 0"
            raise ValueError(msg)
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # One pooled client (thread-safe), so connections are kept alive between calls.
        self._client = self._httpx.Client(timeout=timeout)
        self._fusion: tuple[Fusion, float] | None = None

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def __enter__(self) -> RemoteReranker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _payload(self, query: str, documents: Sequence[str]) -> dict[str, Any]:
        # Every score is fetched: top_n, thresholds and fusion are applied here, exactly as the core does.
        payload: dict[str, Any] = {"query": query, "documents": list(documents)}
        if self.model is not None:
            payload["model"] = self.model
        return payload

    @staticmethod
    def _scores(response: Any, n: int) -> np.ndarray[Any, Any]:
        scores = np.full(n, np.nan, dtype=np.float64)
        for r in response.json()["results"]:
            scores[int(r["index"])] = float(r["relevance_score"])
        if np.isnan(scores).any():
            msg = f"the server returned {int((~np.isnan(scores)).sum())} scores for {n} documents"
            raise RemoteRerankError(msg)
        return scores

    def recommended_fusion(self) -> tuple[Fusion, float]:
        """The served model's recommended (fusion, weight), fetched once; ``("none", 0.5)`` if it names none."""
        if self._fusion is None:
            try:
                response = self._client.get(f"{self.url}/v1/models")
                response.raise_for_status()
                entry = response.json()["data"][0].get("fusion") or {}
                method, weight = check_fusion(entry.get("method", "none"), entry.get("weight", 0.5))
            except self._httpx.HTTPError as exc:
                msg = f"cannot read the model's fusion from {self.url}/v1/models: {exc}"
                raise RemoteRerankError(msg) from exc
            except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                msg = f"{self.url}/v1/models names no valid fusion: {exc}"
                raise RemoteRerankError(msg) from exc
            self._fusion = (method, weight)
        return self._fusion

    @property
    def model_name(self) -> str:
        """The model asked for, or the server's URL."""
        return self.model or self.url

    def _refused(self, response: Any) -> RemoteRerankError:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        return RemoteRerankError(f"{self.url} answered {response.status_code}: {message}")

    def _request(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None,
        options: dict[str, Any],
    ) -> tuple[list[str], _Plan]:
        """Validate a rank call before any network use; what the reply will be turned into."""
        docs = _checked(query, documents, top_n)
        check_rank_options(top_n, options["score_threshold"], options["min_keep"], options["fusion_weight"])
        first = check_first_stage(options["first_stage_scores"], len(docs))
        fusion, weight_given = options["fusion"], options["fusion_weight"]
        if fusion == "auto":
            # Without first-stage scores nothing is fused, so the server need not be asked.
            fusion, recommended = self.recommended_fusion() if first is not None else ("none", 0.5)
            weight_given = recommended if weight_given is None else weight_given
        method, weight = check_fusion(fusion, 0.5 if weight_given is None else weight_given)
        plan = _Plan(
            top_n, options["return_documents"], options["score_threshold"], options["min_keep"], first, method, weight
        )
        return docs, plan

    def _answer(self, response: Any, docs: list[str], plan: _Plan, attempt: int) -> list[RankedResult] | None:
        """The results of a reply, None to retry it, or the refusal raised."""
        if response.status_code == 200:
            return plan.select(self._scores(response, len(docs)), docs)
        if response.status_code not in RETRY_STATUSES or attempt == self.retries:
            raise self._refused(response)
        return None

    def _unreachable(self, attempt: int, exc: Exception) -> None:
        """Retry a connection that failed; raise at once on a request that was sent but not answered in time.

        A timed-out request reached a slow (not a dead) server, which computes it anyway: sending it
        again would only pile abandoned work onto that server.
        """
        if isinstance(exc, self._httpx.TimeoutException) and not isinstance(exc, self._httpx.ConnectTimeout):
            msg = (
                f"{self.url} did not answer within timeout={self.timeout:g} s ({type(exc).__name__}); not retried, "
                "since the server is still computing the request. Raise timeout= or send fewer documents."
            )
            raise RemoteRerankError(msg) from exc
        if attempt == self.retries:
            msg = f"cannot reach {self.url} after {attempt + 1} attempts: {exc}"
            raise RemoteRerankError(msg) from exc

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
        score_threshold: float | None = None,
        min_keep: int = 0,
        first_stage_scores: Sequence[float] | None = None,
        fusion: Fusion | Literal["auto"] = "auto",
        fusion_weight: float | None = None,
    ) -> list[RankedResult]:
        """Rank ``documents`` for ``query`` on the server; the options mean what they mean in the core's ``rank``.

        ``fusion="auto"`` fuses as the served model recommends (read once from the server's
        ``/v1/models``), so the same call gives the same order here as on a local reranker. As in the
        core, fusion runs only with ``first_stage_scores``.
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "query", "documents", "top_n")}  # the kwargs
        docs, plan = self._request(query, documents, top_n, options)
        if not docs:
            return []
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                response = self._client.post(f"{self.url}/v1/rerank", json=self._payload(query, docs))
            except self._httpx.TransportError as exc:
                self._unreachable(attempt, exc)
            else:
                answer = self._answer(response, docs, plan, attempt)
                if answer is not None:
                    return answer
            time.sleep(delay)
            delay *= 2
        msg = "unreachable"
        raise AssertionError(msg)  # pragma: no cover

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
        score_threshold: float | None = None,
        min_keep: int = 0,
        first_stage_scores: Sequence[float] | None = None,
        fusion: Fusion | Literal["auto"] = "auto",
        fusion_weight: float | None = None,
    ) -> list[RankedResult]:
        """Async :meth:`rank` (httpx's async client), retried the same way."""
        options = {k: v for k, v in locals().items() if k not in ("self", "query", "documents", "top_n")}  # the kwargs
        docs, plan = self._request(query, documents, top_n, options)
        if not docs:
            return []
        delay = self.backoff
        async with self._httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(self.retries + 1):
                try:
                    response = await client.post(f"{self.url}/v1/rerank", json=self._payload(query, docs))
                except self._httpx.TransportError as exc:
                    self._unreachable(attempt, exc)
                else:
                    answer = self._answer(response, docs, plan, attempt)
                    if answer is not None:
                        return answer
                await asyncio.sleep(delay)
                delay *= 2
        msg = "unreachable"
        raise AssertionError(msg)  # pragma: no cover

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray[Any, Any]:
        """Scores of (query, passage) pairs, one request per distinct query, in input order."""
        checked = []
        for i, pair in enumerate(check_sequence(pairs, "pairs")):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                msg = f"pairs[{i}] must be a (text_a, text_b) pair, got {pair!r:.80}"
                raise TypeError(msg)
            checked.append((check_text(pair[0], f"pairs[{i}][0]"), check_text(pair[1], f"pairs[{i}][1]")))
        scores = np.zeros(len(checked), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for i, (q, _) in enumerate(checked):
            by_query.setdefault(q, []).append(i)
        for q, positions in by_query.items():
            for r in self.rank(q, [checked[i][1] for i in positions]):
                scores[positions[r.corpus_id]] = r.score
        return scores

    def __repr__(self) -> str:
        return f"RemoteReranker(url={self.url!r}, model={self.model!r})"
