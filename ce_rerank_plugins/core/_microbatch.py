"""Micro-batching: pairs from concurrent callers of one model are scored in shared batches.

Every existing reranker serves concurrent callers one by one. Here callers enqueue their pairs and a
single worker thread gathers what is waiting (bounded wait, bounded size), scores it as one
length-sorted batch run and hands each caller exactly its own slice. A single worker also means the
model and its tokenizer are only ever used from one thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ce_rerank_plugins.core._scores import FloatArray

logger = logging.getLogger(__name__)

Pair = tuple[str, str]


def length_sorted_batches(pairs: Sequence[Pair], batch_size: int) -> Iterator[np.ndarray[Any, np.dtype[np.intp]]]:
    """Positions of ``pairs`` in batches of ``batch_size``, longest first, so each batch pads little."""
    order = np.argsort([-(len(a) + len(b)) for a, b in pairs], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def token_windows(passage: str, offsets: Sequence[tuple[int, int]], budget: int, overlap: int) -> list[str]:
    """``passage`` cut into windows of at most ``budget`` tokens sharing ``overlap`` (character slices).

    ``offsets`` are the character spans of its tokens (no special tokens), from either tokenizer.
    """
    if len(offsets) <= budget:
        return [passage]
    step = max(1, budget - overlap)
    windows = []
    for start in range(0, len(offsets), step):
        stop = min(start + budget, len(offsets))
        windows.append(passage[offsets[start][0] : offsets[stop - 1][1]])
        if stop == len(offsets):
            break
    return windows


ScoreFn = Callable[[Sequence[Pair], int], FloatArray]


@dataclass
class _Request:
    pairs: Sequence[Pair]
    batch_size: int
    future: Future[FloatArray] = field(default_factory=Future)


@dataclass
class BatcherStats:
    """What the worker did: requests served, batch runs, and the largest gather."""

    requests: int = 0
    runs: int = 0
    max_requests_per_run: int = 0


class MicroBatcher:
    """Gathers scoring requests from many threads into shared runs of ``score_fn``.

    Args:
        score_fn: Scores a list of pairs with a given batch size, returning ``(n, num_labels)`` logits.
        max_wait_ms: How long the worker waits for more callers once it has seen concurrency.
            A lone caller never waits.
        max_pairs: Upper bound on the pairs gathered into one run.
    """

    def __init__(self, score_fn: ScoreFn, *, max_wait_ms: float = 5.0, max_pairs: int = 1024) -> None:
        if max_wait_ms < 0:
            msg = f"max_wait_ms must be >= 0, got {max_wait_ms}"
            raise ValueError(msg)
        if max_pairs < 1:
            msg = f"max_pairs must be >= 1, got {max_pairs}"
            raise ValueError(msg)
        self._score_fn = score_fn
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_pairs = max_pairs
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._saw_concurrency = False
        self.stats = BatcherStats()

    def submit(self, pairs: Sequence[Pair], batch_size: int) -> Future[FloatArray]:
        """Queue ``pairs`` for scoring; the future resolves to their logits, in their order."""
        request = _Request(list(pairs), batch_size)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ce-rerank-microbatch", daemon=True)
                self._thread.start()
            self._queue.append(request)
            self._cond.notify()
        return request.future

    def _gather(self) -> list[_Request]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            first = self._queue.popleft()
            gathered = [first]
            total = len(first.pairs)
            deadline = time.monotonic() + (self._max_wait_s if self._saw_concurrency else 0.0)
            while total < self._max_pairs:
                match = next((r for r in self._queue if r.batch_size == first.batch_size), None)
                if match is not None and total + len(match.pairs) <= self._max_pairs:
                    self._queue.remove(match)
                    gathered.append(match)
                    total += len(match.pairs)
                    continue
                if match is not None:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            # Remember whether callers overlap, so a lone caller is never made to wait.
            self._saw_concurrency = len(gathered) > 1 or bool(self._queue)
            return gathered

    def _run_alone(self, request: _Request) -> None:
        try:
            request.future.set_result(self._score_fn(request.pairs, request.batch_size))
        except BaseException as exc:  # this caller, and only this one, learns of its failure
            request.future.set_exception(exc)

    def _run(self) -> None:
        while True:
            gathered = self._gather()
            live = [r for r in gathered if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            pairs = [pair for request in live for pair in request.pairs]
            try:
                logits = self._score_fn(pairs, live[0].batch_size)
            except BaseException as exc:
                if len(live) == 1:
                    live[0].future.set_exception(exc)
                else:  # one caller's bad input must not fail the others: score each request alone
                    logger.debug("shared run of %d requests failed (%s); retrying them one by one", len(live), exc)
                    for request in live:
                        self._run_alone(request)
                continue
            offsets = np.cumsum([0] + [len(r.pairs) for r in live])
            for request, start, stop in zip(live, offsets[:-1], offsets[1:], strict=True):
                request.future.set_result(logits[start:stop].copy())
            self.stats.requests += len(live)
            self.stats.runs += 1
            self.stats.max_requests_per_run = max(self.stats.max_requests_per_run, len(live))
