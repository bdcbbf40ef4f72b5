"""Big corpora on Ray Data: embed a corpus, or rerank (query, candidates) rows, over a pool of actors.

Each actor loads its model once (the bi-encoder, or the core cross-encoder) and takes batches with
``map_batches``; Ray schedules them on a local Ray or on a cluster. The results equal the
single-process path: the same vectors (within float rounding) in input order, and the same rankings.

Needs the ``ray`` extra (``pip install 'ce-rerank-plugins[ray]'``).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from ce_rerank_plugins._files import portable_model_name
from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_query, check_seconds, check_sequence, check_text

__all__ = ["DEFAULT_STALL_TIMEOUT", "RayDataStalledError", "connect", "embed_texts", "rerank_rows"]

DEFAULT_STALL_TIMEOUT = 600.0
"""Seconds without a finished batch before a run is given up (``stall_timeout``)."""

_Item = TypeVar("_Item")


class RayDataStalledError(RuntimeError):
    """No batch finished for ``stall_timeout`` seconds: the run was given up and returned nothing.

    Ray restarts the actors of a lost node and retries their batches, which finishes the run once there
    is room for them again (an autoscaling cluster adds a node). On a cluster that cannot make room,
    the run would wait forever; this error ends it instead.
    """


def _watched(items: Iterable[_Item], stall_timeout: float, what: str) -> Iterator[_Item]:
    """``items``, or :class:`RayDataStalledError` once none arrives for ``stall_timeout`` seconds."""
    arrived: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def offer(entry: tuple[str, Any]) -> bool:
        """Queue ``entry`` unless the caller stopped listening (then nobody would take it)."""
        while not stop.is_set():
            try:
                arrived.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as exc:  # handed to the caller's thread, raised there
            offer(("error", exc))

    threading.Thread(target=pull, name="ce-rerank-ray-data", daemon=True).start()
    try:
        while True:
            try:
                kind, value = arrived.get(timeout=stall_timeout)
            except queue.Empty:
                msg = (
                    f"{what}: no batch finished for {stall_timeout:g} s, so the run was given up and returned "
                    "nothing. A node may have been lost and its actors cannot be placed again on the "
                    "remaining resources; add capacity (or fewer --actors) and run it again"
                )
                raise RayDataStalledError(msg) from None
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


def _ray() -> Any:
    return require("ray", "ray", purpose="ce_rerank_plugins.ray_data")


def connect(address: str | None = None, *, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` (``"auto"``, ``"ray://head:10001"``), or start a local Ray.

    Does nothing when Ray is already initialised in this process.
    """
    ray = _ray()
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)


def _quiet_ray_data() -> None:
    ray = _ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def _check_pool(actors: object, cpus_per_actor: object, batch_size: object) -> None:
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        msg = f"actors must be a positive integer, got {actors!r}"
        raise ValueError(msg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        msg = f"batch_size must be a positive integer, got {batch_size!r}"
        raise ValueError(msg)
    if not isinstance(cpus_per_actor, (int, float)) or not cpus_per_actor > 0:
        msg = f"cpus_per_actor must be a positive number, got {cpus_per_actor!r}"
        raise ValueError(msg)


def _map_on_actors(
    items: list[dict[str, Any]],
    actor: type,
    constructor_kwargs: dict[str, Any],
    *,
    actors: int,
    cpus_per_actor: float,
    rows_per_call: int,
    rows_per_block: int,
) -> Any:
    """``items`` as a Ray Dataset mapped by a pool of ``actors`` instances of ``actor``.

    Each actor loads its model once, with as many torch threads as the CPUs it reserves. Starts a local
    Ray when none is running.
    """
    ray = _ray()
    connect()
    _quiet_ray_data()
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // rows_per_block, 8 * actors)))
    return dataset.map_batches(
        actor,
        fn_constructor_kwargs={**constructor_kwargs, "threads": max(1, math.floor(cpus_per_actor))},
        batch_size=rows_per_call,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
    )


class _EmbedActor:
    """Loads the bi-encoder once; embeds one batch of (position, text) rows per call."""

    def __init__(self, embedder: str | None, batch_size: int, threads: int) -> None:
        from ce_rerank_plugins.core import set_threads
        from ce_rerank_plugins.retrieval import Embedder

        set_threads(threads)
        self.embedder = Embedder(embedder, batch_size=batch_size)

    def __call__(self, batch: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        vectors = self.embedder.encode([str(t) for t in batch["text"]], show_progress=False)
        return {"position": np.asarray(batch["position"], dtype=np.int64), "vector": vectors}


def embed_texts(
    texts: Sequence[str],
    embedder: str | None = None,
    *,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    batch_size: int = 64,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> np.ndarray[Any, Any]:
    """Embed ``texts`` on Ray Data; an ``(n, dimension)`` float32 array of unit vectors in input order.

    Equal (within float rounding) to ``Embedder(embedder).encode(texts)``, so the result can be passed
    to ``FaissIndex.add_documents(..., embeddings=...)``. Starts a local Ray when none is running.

    Args:
        texts: The texts (a list, not a bare string).
        embedder: Bi-encoder name or path, readable on every node; None for the bundled all-MiniLM-L6-v2.
        actors: Actors in the pool, each holding one bi-encoder.
        cpus_per_actor: CPUs Ray reserves per actor; also its torch thread count (at least 1).
        batch_size: Texts per forward pass (each actor call takes a few of these).
        stall_timeout: Seconds without a finished batch before the run is given up.

    Raises:
        RayDataStalledError: No batch finished for ``stall_timeout`` seconds (nothing is returned).
    """
    texts = [check_text(t, f"texts[{i}]") for i, t in enumerate(check_sequence(texts, "texts"))]
    _check_pool(actors, cpus_per_actor, batch_size)
    stall_timeout = check_seconds(stall_timeout, "stall_timeout")
    if not texts:
        from ce_rerank_plugins.retrieval import Embedder

        return Embedder(embedder).encode([])
    embedded = _map_on_actors(
        [{"position": i, "text": t} for i, t in enumerate(texts)],
        _EmbedActor,
        {"embedder": None if embedder is None else portable_model_name(embedder), "batch_size": batch_size},
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        rows_per_call=batch_size * 4,
        rows_per_block=batch_size,
    )
    vectors: np.ndarray[Any, Any] | None = None
    seen = np.zeros(len(texts), dtype=bool)
    batches = embedded.iter_batches(batch_format="numpy", batch_size=None)
    for batch in _watched(batches, stall_timeout, f"embedding {len(texts)} texts on Ray Data"):
        positions = batch["position"]
        block = np.asarray(batch["vector"], dtype=np.float32)
        if vectors is None:
            vectors = np.empty((len(texts), block.shape[1]), dtype=np.float32)
        vectors[positions] = block
        seen[positions] = True
    if vectors is None or not seen.all():  # never silently return rows that were not embedded
        missing = int((~seen).sum())
        msg = f"Ray Data returned no vector for {missing} of {len(texts)} texts"
        raise RuntimeError(msg)
    return vectors


class _RerankActor:
    """Loads the core cross-encoder once; scores every row of a batch in one ``predict`` call."""

    def __init__(self, model: str | None, precision: str, threads: int) -> None:
        from ce_rerank_plugins.core import CrossEncoderReranker, default_model, set_threads

        set_threads(threads)
        self.reranker = CrossEncoderReranker(
            model or default_model(),
            precision=precision,  # type: ignore[arg-type]
            micro_batching=False,
        )

    def __call__(self, batch: dict[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
        queries = [str(q) for q in batch["query"]]
        candidates = [[str(c) for c in cands] for cands in batch["candidates"]]
        pairs = [(q, c) for q, cands in zip(queries, candidates, strict=True) for c in cands]
        flat = self.reranker.predict(pairs) if pairs else np.zeros(0, dtype=np.float32)
        scores, rankings, start = [], [], 0
        for cands in candidates:
            row = np.asarray(flat[start : start + len(cands)], dtype=np.float64)
            start += len(cands)
            scores.append(row.tolist())
            rankings.append(np.argsort(-row, kind="stable").tolist())
        # Only what is new travels back; the caller's rows are joined again by position.
        return {"__position": batch["__position"], "scores": _lists(scores), "ranking": _lists(rankings)}


def _lists(rows: list[list[Any]]) -> np.ndarray[Any, Any]:
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def _check_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for i, row in enumerate(check_sequence(rows, "rows")):
        if not isinstance(row, Mapping):
            msg = f"rows[{i}] must be a mapping with 'query' and 'candidates', got {type(row).__name__}"
            raise TypeError(msg)
        if "query" not in row or "candidates" not in row:
            msg = f"rows[{i}] needs the keys 'query' and 'candidates', got {sorted(row)}"
            raise ValueError(msg)
        if "scores" in row or "ranking" in row:
            msg = f"rows[{i}] already has 'scores' or 'ranking', which rerank_rows would overwrite"
            raise ValueError(msg)
        query = check_query(row["query"], f"rows[{i}]['query']")
        cands = check_sequence(row["candidates"], f"rows[{i}]['candidates']")
        checked.append(
            {
                **row,
                "query": query,
                "candidates": [check_text(c, f"rows[{i}]['candidates'][{j}]") for j, c in enumerate(cands)],
            }
        )
    return checked


def rerank_rows(
    rows: Sequence[Mapping[str, Any]],
    model: str | None = None,
    *,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    rows_per_batch: int = 8,
    precision: str = "fp32",
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> list[dict[str, Any]]:
    """Score every ``(query, candidates)`` row on Ray Data (offline evaluation at scale).

    Each returned row is a copy of the input row (other keys kept) plus ``scores`` (the cross-encoder's
    score of each candidate, in candidate order) and ``ranking`` (candidate indices, best first). The
    order of the rows is the input order. The scores equal the core's ``rank`` on the same model and
    precision; ``fp32`` is the default so that every actor gives the same numbers on any CPU.

    Args:
        rows: Mappings with ``query`` (str) and ``candidates`` (list of str).
        model: Cross-encoder name or path, readable on every node; None resolves the default there.
        actors: Actors in the pool, each holding one cross-encoder.
        cpus_per_actor: CPUs Ray reserves per actor; also its torch thread count (at least 1).
        rows_per_batch: Rows per actor call (their pairs are scored together).
        precision: The core's precision on each actor.
        stall_timeout: Seconds without a finished batch before the run is given up.

    Raises:
        RayDataStalledError: No batch finished for ``stall_timeout`` seconds (nothing is returned).
    """
    checked = _check_rows(rows)
    _check_pool(actors, cpus_per_actor, rows_per_batch)
    stall_timeout = check_seconds(stall_timeout, "stall_timeout")
    if not checked:
        return []
    items = [{"__position": i, "query": r["query"], "candidates": r["candidates"]} for i, r in enumerate(checked)]
    scored = _map_on_actors(
        items,
        _RerankActor,
        {"model": None if model is None else portable_model_name(model), "precision": precision},
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        rows_per_call=rows_per_batch,
        rows_per_block=rows_per_batch,
    )
    out: list[dict[str, Any] | None] = [None] * len(checked)
    for row in _watched(scored.iter_rows(), stall_timeout, f"reranking {len(checked)} rows on Ray Data"):
        position = int(row["__position"])
        out[position] = {
            **checked[position],
            "scores": [float(s) for s in row["scores"]],
            "ranking": [int(j) for j in row["ranking"]],
        }
    missing = [i for i, r in enumerate(out) if r is None]
    if missing:
        msg = f"Ray Data returned no scores for rows {missing[:10]}"
        raise RuntimeError(msg)
    return [r for r in out if r is not None]
