"""``CrossEncoderReranker``: score, rank and classify (query, passage) pairs with one shared model."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from ce_rerank_plugins._validation import check_query, check_text
from ce_rerank_plugins.core._auto_precision import DEFAULT_BATCH_SIZE, PrecisionChoice, choose_precision
from ce_rerank_plugins.core._cache import CacheInfo, ScoreCache
from ce_rerank_plugins.core._engine import DEFAULT_MIN_PROBE_SPEARMAN, ScoringEngine, build_engine
from ce_rerank_plugins.core._fusion import Fusion, applied_fusion, check_first_stage, check_fusion, fuse_scores
from ce_rerank_plugins.core._hardware import device_has_native_bf16, resolve_device
from ce_rerank_plugins.core._loading import ModelKey, default_model, normalize_model_name, recommended_fusion
from ce_rerank_plugins.core._onnx import ONNX_PRECISIONS
from ce_rerank_plugins.core._onnx_engine import OnnxPairEngine
from ce_rerank_plugins.core._registry import ModelRegistry
from ce_rerank_plugins.core._scores import (
    FloatArray,
    ScoreMode,
    apply_score_mode,
    check_finite,
    resolve_score_mode,
    validate_score_mode,
)

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "onnx", "onnx-int8"]
"""Inference path: ``auto``, ``fp32``, ``bf16`` (encoder bf16, head fp32), ``onnx`` or ``onnx-int8``.

Every path but ``fp32`` is probe-checked against fp32 when it loads."""
_PRECISIONS = ("auto", "fp32", "bf16", "onnx", "onnx-int8")

SHARED_MODELS: ModelRegistry[ModelKey, ScoringEngine | OnnxPairEngine] = ModelRegistry()
"""The one registry of this process: every reranker with the same ModelKey shares one engine."""

# What ``precision="auto"`` resolved to in this process, per model key: reading the measurement record
# again for every reranker would hash the model's files each time.
_auto_choices: dict[ModelKey, PrecisionChoice] = {}


def _choose_precision(key: ModelKey, build: Callable[[ModelKey], Any]) -> PrecisionChoice:
    known = _auto_choices.get(key)
    if known is not None:
        return known
    choice = choose_precision(key, build)
    if choice.reason.startswith("measured"):  # a rule or a setting is cheap to decide again, and may change
        _auto_choices[key] = dataclasses.replace(choice, engine=None)
    return choice


T = TypeVar("T")

# Set, in the worker thread's context, once the async caller that started the work was cancelled.
_caller_gone: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "ce_rerank_caller_gone", default=None
)
# How many batches an async call scores between two looks at whether its caller is still there.
_BATCHES_PER_STEP = 4


class _CallerGone(BaseException):  # not an Exception: nothing may catch and swallow it on the way out
    """Raised in the worker thread to stop work whose async caller was cancelled."""


async def _off_the_loop(work: Callable[[], T]) -> T:
    """Run ``work`` on the bounded executor; cancelling the awaiting task stops the work at its next step."""
    cancelled = threading.Event()
    context = contextvars.copy_context()
    context.run(_caller_gone.set, cancelled)
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_ASYNC_EXECUTOR, functools.partial(context.run, work))
    try:
        return await future
    except asyncio.CancelledError:
        cancelled.set()
        raise


# Async calls run the blocking work here; bounded so a burst of coroutines cannot spawn unbounded threads.
_ASYNC_EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ce-rerank-async")


@dataclass(frozen=True)
class RankedResult:
    """One ranked passage: its index in the input (``corpus_id``), its score, and optionally its text.

    ``score`` is what the list is sorted by: the cross-encoder's score in the score mode's space, or,
    with fusion, the fused score. ``cross_encoder_score`` is always the cross-encoder's own score and
    ``first_stage_score`` the first-stage score that was given, if any. ``fusion`` is the fusion that
    produced ``score``: ``"none"`` whenever no first-stage scores were given, whatever was asked.
    """

    corpus_id: int
    score: float
    text: str | None = None
    cross_encoder_score: float | None = None
    first_stage_score: float | None = None
    fusion: Fusion = "none"

    def to_dict(self) -> dict[str, Any]:
        """The dict shape ``CrossEncoder.rank`` returns (``text`` only when present)."""
        out: dict[str, Any] = {"corpus_id": self.corpus_id, "score": self.score}
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class PairClassification:
    """The predicted label of one pair and the softmax probability of every label."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)


def _check_text(value: object, where: str) -> str:
    return check_text(value, where)


def _check_threshold(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        msg = f"score_threshold must be a number or None, got {type(value).__name__} ({value!r:.40})"
        raise TypeError(msg)
    threshold = float(value)
    if math.isnan(threshold):
        msg = "score_threshold is NaN, which no score passes or fails; pass a number or None"
        raise ValueError(msg)
    return threshold


def _check_min_keep(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"min_keep must be a non-negative integer, got {value!r}"
        raise ValueError(msg)
    return value


def _check_pairs(pairs: object) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        msg = f"pairs must be a list of (text_a, text_b) tuples, got {type(pairs).__name__}"
        raise TypeError(msg)
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            msg = f"pairs[{i}] must be a (text_a, text_b) pair, got {pair!r:.80}"
            raise TypeError(msg)
        checked.append((_check_text(pair[0], f"pairs[{i}][0]"), _check_text(pair[1], f"pairs[{i}][1]")))
    return checked


def _check_documents(documents: object) -> list[str]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        msg = f"documents must be a list of strings, got {type(documents).__name__}"
        raise TypeError(msg)
    return [_check_text(doc, f"documents[{i}]") for i, doc in enumerate(documents)]


def _check_top_n(top_n: object) -> int | None:
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        msg = f"top_n must be an int or None, got {type(top_n).__name__}"
        raise TypeError(msg)
    if top_n < 1:
        msg = f"top_n must be >= 1 (or None for all), got {top_n}"
        raise ValueError(msg)
    return top_n


def check_rank_options(top_n: object, score_threshold: object, min_keep: object, fusion_weight: object = None) -> None:
    """Validate ``rank``'s selection options up front (the adapters call it when they are built)."""
    _check_top_n(top_n)
    _check_threshold(score_threshold)
    _check_min_keep(min_keep)
    if fusion_weight is not None:
        check_fusion("weighted", fusion_weight)


def select_results(
    scores: np.ndarray[Any, Any],
    texts: Sequence[str] | None,
    *,
    top_n: int | None,
    threshold: float | None,
    min_keep: int,
    fused: np.ndarray[Any, Any] | None = None,
    first_stage: np.ndarray[Any, Any] | None = None,
    fusion: Fusion = "none",
) -> list[RankedResult]:
    """Select and order results; shared by the local and the remote reranker.

    Orders by the fused score (or ``scores``), stably; keeps what passes ``threshold`` on ``scores``
    or is among the best ``min_keep``; caps at ``top_n``.
    """
    final: np.ndarray[Any, Any] = scores if fused is None else fused
    order = np.argsort(-final, kind="stable")
    if threshold is not None:
        # The threshold is in the cross-encoder's score space; the best min_keep stay regardless.
        order = np.asarray([i for pos, i in enumerate(order) if scores[i] >= threshold or pos < min_keep], int)
    if top_n is not None:
        order = order[:top_n]
    return [
        RankedResult(
            int(i),
            float(final[i]),
            texts[int(i)] if texts is not None else None,
            cross_encoder_score=float(scores[i]),
            first_stage_score=None if first_stage is None else float(first_stage[i]),
            fusion=fusion,
        )
        for i in order
    ]


@runtime_checkable
class Reranker(Protocol):
    """What the adapters need of a reranker.

    The local :class:`CrossEncoderReranker` or a :class:`~ce_rerank_plugins.serve.RemoteReranker`.
    ``rank`` / ``arank`` take the core's arguments (``query, documents, top_n`` and the keyword options).
    """

    @property
    def rank(self) -> Callable[..., list[RankedResult]]:
        """Rank documents for a query, best first."""
        ...

    @property
    def arank(self) -> Callable[..., Awaitable[list[RankedResult]]]:
        """Async rank."""
        ...

    @property
    def model_name(self) -> str:
        """The model's name or path (for events and logs)."""
        ...


class CrossEncoderReranker:
    """Scores (query, passage) pairs jointly with a sentence-transformers ``CrossEncoder``.

    The model is loaded once per process and shared: two rerankers (or adapters) created with the
    same model, revision, device, precision and ``max_length`` use one model object, whatever their
    other settings. Calls are thread-safe; concurrent calls are micro-batched together.

    Args:
        model: A local model directory or a Hugging Face Hub id; None: :func:`default_model`
            (``$CE_RERANK_MODEL``, the Hub default when reachable, else the model bundled in the package).
        device: ``"auto"`` (cuda, then mps, then cpu) or a torch device string.
        precision: ``"fp32"``, ``"bf16"``, ``"onnx"`` / ``"onnx-int8"`` (ONNX Runtime on CPU, exported
            and quantised locally, needs the ``onnx`` extra), or ``"auto"``: on a CPU, the first use of
            a model on a machine times every path that passes the probe at a few batch sizes and
            records the fastest in the user cache (later processes read it); elsewhere, or with
            ``$CE_RERANK_PRECISION=rule``, bf16 where the hardware computes it natively, else fp32.
            ``$CE_RERANK_PRECISION`` may also name a path. Every path but fp32 is kept only if it ranks a
            probe set like fp32; otherwise fp32 is used and the reason logged. ``precision_reason``
            says why the path in use was chosen.
        max_length: Token budget of a (query, passage) pair; the passage is truncated, never the query.
        batch_size: Pairs per forward pass; None: the measured one under ``precision="auto"``, else 16.
        score_mode: ``"auto"`` (the model's own activation), ``"logits"``, ``"sigmoid"`` or ``"softmax"``.
        score_threshold: Drop ranked results scoring below this, stated in ``score_mode``'s space.
        min_keep: Keep at least this many results even when they fall below ``score_threshold``.
        rank_label: For classification models, the label (name or index) whose score ranks passages.
        long_document: Score passages longer than ``max_length`` in overlapping windows, keeping the
            best window, instead of truncating them.
        window_overlap: Tokens shared by consecutive windows in long-document mode.
        cache: A :class:`ScoreCache` (shareable between rerankers) or an int size for a private one.
        micro_batching: Gather concurrent callers' pairs into shared batches.
        revision: Hub revision of the model.
        trust_remote_code: Allow custom modelling code from the model repository (off by default).
        min_probe_spearman: Agreement with fp32 a faster precision must reach on the probe set.
        fusion: How ``rank`` combines the cross-encoder's scores with the first stage's: ``"none"``,
            ``"weighted"`` (min-max, weighted sum) or ``"rrf"``; ``"auto"`` takes what the model
            directory recommends in ``ce_rerank.json`` (the bundled model does), else ``"none"``.
        fusion_weight: The cross-encoder's weight in the fusion, in [0, 1] (default: the model's
            recommendation, else 0.5).

    Example:
        >>> reranker = CrossEncoderReranker("path/to/cross-encoder")  # doctest: +SKIP
        >>> reranker.rank("How many people live in Lyon?", passages, top_n=3)  # doctest: +SKIP
        [RankedResult(corpus_id=2, score=0.97, text=None), ...]
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        precision: Precision = "auto",
        max_length: int | None = None,
        batch_size: int | None = None,
        score_mode: ScoreMode = "auto",
        score_threshold: float | None = None,
        min_keep: int = 0,
        rank_label: str | int | None = None,
        long_document: bool = False,
        window_overlap: int = 32,
        cache: ScoreCache | int | None = None,
        micro_batching: bool = True,
        revision: str | None = None,
        trust_remote_code: bool = False,
        min_probe_spearman: float = DEFAULT_MIN_PROBE_SPEARMAN,
        fusion: Fusion | Literal["auto"] = "auto",
        fusion_weight: float | None = None,
    ) -> None:
        if precision not in _PRECISIONS:
            msg = f"precision must be one of {list(_PRECISIONS)}, got {precision!r}"
            raise ValueError(msg)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            msg = f"batch_size must be a positive integer or None, got {batch_size!r}"
            raise ValueError(msg)
        if max_length is not None and (not isinstance(max_length, int) or max_length < 8):
            msg = f"max_length must be an integer >= 8 or None, got {max_length!r}"
            raise ValueError(msg)
        _check_min_keep(min_keep)
        score_threshold = _check_threshold(score_threshold)
        if isinstance(window_overlap, bool) or not isinstance(window_overlap, int) or window_overlap < 0:
            msg = f"window_overlap must be a non-negative integer, got {window_overlap!r}"
            raise ValueError(msg)
        self.score_mode_requested: ScoreMode = validate_score_mode(score_mode)
        # ONNX Runtime runs on CPU: "auto" means the CPU there (and needs no torch to decide it).
        resolved_device = "cpu" if precision in ONNX_PRECISIONS and device == "auto" else resolve_device(device)
        if precision in ONNX_PRECISIONS and resolved_device != "cpu":
            msg = f"precision {precision!r} runs on CPU only (ONNX Runtime), not on {resolved_device!r}"
            raise ValueError(msg)
        if precision == "bf16" and resolved_device == "cpu" and not device_has_native_bf16("cpu"):
            # Correct (probe-checked) but slow: emulated bf16 ran at 0.30x fp32 on such a CPU.
            logger.warning(
                "precision='bf16' on a CPU without AMX or AVX512-BF16: it will likely be slower than fp32 "
                "(emulated bf16 measured 0.30x). Use precision='auto' or 'fp32'."
            )
        if model is None:
            model = default_model()
        build = functools.partial(build_engine, min_probe_spearman=min_probe_spearman)
        key = ModelKey(
            model=normalize_model_name(model),
            revision=revision,
            device=resolved_device,
            precision=precision,
            max_length=max_length,
            trust_remote_code=trust_remote_code,
        )
        measured: ScoringEngine | OnnxPairEngine | None = None
        if precision == "auto":
            choice = _choose_precision(key, build)
            key = dataclasses.replace(key, precision=choice.precision)
            measured = choice.engine
            batch_size = choice.batch_size if batch_size is None else batch_size
            reason = choice.reason
        else:
            reason = f"precision={precision!r} was asked for"
        self.key = key
        self.engine: ScoringEngine | OnnxPairEngine = SHARED_MODELS.get_or_load(
            key, build if measured is None else lambda _key: measured
        )
        self.precision_reason: str = reason if self.engine.fallback_reason is None else self.engine.fallback_reason
        self.batch_size: int = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        self.score_mode: ScoreMode = resolve_score_mode(
            score_mode, num_labels=self.engine.num_labels, model_activation=self.engine.activation_name
        )
        self.score_threshold = None if score_threshold is None else float(score_threshold)
        self.min_keep = min_keep
        self.rank_column = self._resolve_rank_column(rank_label)
        if long_document and self.engine.num_labels != 1:
            msg = "long_document mode needs a single-score model (num_labels == 1)"
            raise ValueError(msg)
        self.long_document = long_document
        self.window_overlap = window_overlap
        self.cache: ScoreCache | None = ScoreCache(cache) if isinstance(cache, int) else cache
        self.micro_batching = micro_batching
        self._warned_truncation = False
        self.fusion, self.fusion_weight = self._resolve_fusion(fusion, fusion_weight)

    # -- public properties -------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The shared sentence-transformers ``CrossEncoder`` (do not move or cast it)."""
        return self.engine.model

    @property
    def model_name(self) -> str:
        """The model's normalised name or path."""
        return self.key.model

    @property
    def num_labels(self) -> int:
        """Number of model outputs: 1 for rerankers, > 1 for pair classifiers."""
        return self.engine.num_labels

    @property
    def labels(self) -> tuple[str, ...]:
        """Label names from the model's ``id2label``."""
        return self.engine.labels

    @property
    def precision(self) -> str:
        """The inference path actually in use (after any probe fallback)."""
        return self.engine.precision

    def cache_info(self) -> CacheInfo | None:
        """Hit/miss counters of the score cache, or None without a cache."""
        return self.cache.info() if self.cache is not None else None

    # -- scoring ------------------------------------------------------------------------------
    def predict(self, pairs: Sequence[tuple[str, str]], *, score_mode: ScoreMode | None = None) -> FloatArray:
        """Score pairs, like ``CrossEncoder.predict``.

        Args:
            pairs: ``(text_a, text_b)`` tuples; the caller's list is not modified.
            score_mode: Override the reranker's score mode for this call.

        Returns:
            float32 array of shape ``(n,)`` for single-score models, ``(n, num_labels)`` otherwise.
        """
        checked = _check_pairs(pairs)
        scores = apply_score_mode(self._logits(checked), self._mode(score_mode))
        return scores[:, 0] if self.num_labels == 1 else scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        *,
        return_documents: bool = False,
        score_threshold: float | None = None,
        min_keep: int | None = None,
        score_mode: ScoreMode | None = None,
        first_stage_scores: Sequence[float] | None = None,
        fusion: Fusion | None = None,
        fusion_weight: float | None = None,
    ) -> list[RankedResult]:
        """Rank ``documents`` for ``query``, best first, like ``CrossEncoder.rank``.

        Sorting is stable: equal scores keep input order. ``score_threshold`` (in the score mode's
        space, applied to the cross-encoder's own score) drops weak results, ``min_keep`` keeps the
        best few anyway, then ``top_n`` caps the list.

        Args:
            query: The query.
            documents: The candidate passages, best first if they come from a retriever.
            top_n: How many to return (None: all).
            return_documents: Put each passage's text in the result.
            score_threshold: Override the reranker's threshold for this call.
            min_keep: Override the reranker's ``min_keep`` for this call.
            score_mode: Override the score mode for this call.
            first_stage_scores: The retriever's score of each document, for fusion. Without them the
                cross-encoder's scores stand alone (``RankedResult.fusion == "none"``): the input
                order is never used as a retrieval score.
            fusion: Override the reranker's fusion for this call (``"none"``, ``"weighted"``, ``"rrf"``).
            fusion_weight: Override the cross-encoder's weight in the fusion.

        Returns:
            ``RankedResult`` items with the input index as ``corpus_id`` and a Python float score.
            An empty ``documents`` gives an empty list.
        """
        check_query(query)
        docs = _check_documents(documents)
        top_n = _check_top_n(top_n)
        threshold = self.score_threshold if score_threshold is None else _check_threshold(score_threshold)
        keep = self.min_keep if min_keep is None else _check_min_keep(min_keep)
        mode = self._mode(score_mode)
        method, weight = check_fusion(
            self.fusion if fusion is None else fusion, self.fusion_weight if fusion_weight is None else fusion_weight
        )
        first = check_first_stage(first_stage_scores, len(docs))
        if not docs:
            return []
        if self.rank_column < 0:  # checked before the model runs
            msg = f"this model classifies pairs into {list(self.labels)}; pass rank_label=... to rank by one label"
            raise ValueError(msg)
        scores = apply_score_mode(self._logits([(query, d) for d in docs]), mode)[:, self.rank_column]
        return select_results(
            scores,
            docs if return_documents else None,
            top_n=top_n,
            threshold=threshold,
            min_keep=keep,
            fused=fuse_scores(scores, first, fusion=method, weight=weight),
            first_stage=first,
            fusion=applied_fusion(method, first),
        )

    def classify(self, pairs: Sequence[tuple[str, str]]) -> list[PairClassification]:
        """Label each pair with a classification model (``num_labels > 1``), probabilities via softmax."""
        if self.num_labels == 1:
            msg = "classify() needs a model with num_labels > 1; use predict() or rank() for rerankers"
            raise ValueError(msg)
        probs = apply_score_mode(self._logits(_check_pairs(pairs)), "softmax")
        return [
            PairClassification(
                label=self.labels[int(np.argmax(row))],
                probabilities={label: float(p) for label, p in zip(self.labels, row, strict=True)},
            )
            for row in probs
        ]

    async def apredict(self, pairs: Sequence[tuple[str, str]], *, score_mode: ScoreMode | None = None) -> FloatArray:
        """Async ``predict``: runs off the event loop, so many can be gathered at once.

        Cancelling the awaiting task stops the work too: what is not scored yet is dropped (the batch
        in progress, at most a few, still finishes).
        """
        return await _off_the_loop(functools.partial(self.predict, pairs, score_mode=score_mode))

    async def arank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        **kwargs: Any,
    ) -> list[RankedResult]:
        """Async ``rank``: runs off the event loop, so many can be gathered at once; cancelling stops it."""
        return await _off_the_loop(functools.partial(self.rank, query, documents, top_n, **kwargs))

    # -- internals ----------------------------------------------------------------------------
    def _mode(self, score_mode: ScoreMode | None) -> ScoreMode:
        if score_mode is None:
            return self.score_mode
        return resolve_score_mode(
            validate_score_mode(score_mode),
            num_labels=self.num_labels,
            model_activation=self.engine.activation_name,
        )

    def _resolve_rank_column(self, rank_label: str | int | None) -> int:
        if self.engine.num_labels == 1:
            if rank_label not in (None, 0):
                msg = f"rank_label={rank_label!r} given, but the model has a single output"
                raise ValueError(msg)
            return 0
        if rank_label is None:
            return -1  # rank() will explain; predict()/classify() still work
        if isinstance(rank_label, int) and 0 <= rank_label < self.engine.num_labels:
            return rank_label
        if isinstance(rank_label, str) and rank_label in self.engine.labels:
            return self.engine.labels.index(rank_label)
        msg = f"rank_label must be one of {list(self.engine.labels)} or an index, got {rank_label!r}"
        raise ValueError(msg)

    def _resolve_fusion(self, fusion: object, weight: object) -> tuple[Fusion, float]:
        if fusion == "auto":
            recommended = recommended_fusion(self.key.model)
            if recommended is None:
                return check_fusion("none", 0.5 if weight is None else weight)
            return check_fusion(recommended[0], recommended[1] if weight is None else weight)
        return check_fusion(fusion, 0.5 if weight is None else weight)

    def _logits(self, pairs: list[tuple[str, str]]) -> FloatArray:
        """Raw logits for ``pairs``: duplicates scored once, cache consulted, windows aggregated."""
        unique: dict[tuple[str, str], int] = {}
        positions = [unique.setdefault(pair, len(unique)) for pair in pairs]
        unique_pairs = list(unique)
        logits = np.zeros((len(unique_pairs), self.num_labels), dtype=np.float32)
        todo: list[int] = []
        for i, pair in enumerate(unique_pairs):
            cached = self.cache.get(self._cache_key(pair)) if self.cache is not None else None
            if cached is None:
                todo.append(i)
            else:
                logits[i] = cached
        if todo:
            fresh = self._score_uncached([unique_pairs[i] for i in todo])
            check_finite(fresh, len(todo))
            logits[todo] = fresh
            if self.cache is not None:
                for i, row in zip(todo, fresh, strict=True):
                    self.cache.put(self._cache_key(unique_pairs[i]), row)
        return logits[positions] if positions else np.zeros((0, self.num_labels), dtype=np.float32)

    def _cache_key(self, pair: tuple[str, str]) -> tuple[Hashable, str, str]:
        # Everything that changes a logit: the model key (model, revision, device, precision, max_length)
        # and how long passages are scored (truncated, or windowed with this overlap).
        scoring = (self.key, self.long_document, self.window_overlap if self.long_document else None)
        return (scoring, pair[0], pair[1])

    def _score_uncached(self, pairs: list[tuple[str, str]]) -> FloatArray:
        engine = self.engine
        queries = sorted({q for q, _ in pairs})
        query_tokens = dict(zip(queries, engine.token_counts(queries), strict=True))
        for q, n in query_tokens.items():
            if n + engine.pair_special_tokens >= engine.max_length:
                msg = (
                    f"the query alone has {n} tokens, which leaves no room for a passage within "
                    f"max_length={engine.max_length}; shorten the query ({q[:60]!r}...) or raise max_length"
                )
                raise ValueError(msg)
        passages = [p for _, p in pairs]
        passage_tokens = engine.token_counts(passages)
        budgets = [engine.max_length - engine.pair_special_tokens - query_tokens[q] for q, _ in pairs]
        too_long = [i for i, (n, b) in enumerate(zip(passage_tokens, budgets, strict=True)) if n > b]
        if not self.long_document:
            if too_long and not self._warned_truncation:
                self._warned_truncation = True
                logger.warning(
                    "%d of %d passages exceed max_length=%d tokens with their query and were truncated "
                    "(pass long_document=True to score them in windows instead); warning once",
                    len(too_long),
                    len(pairs),
                    engine.max_length,
                )
            return self._run(pairs)
        # Long-document mode: every passage becomes one or more windows; its score is the best window.
        expanded: list[tuple[str, str]] = []
        owner: list[int] = []
        long_set = set(too_long)
        for i, (q, p) in enumerate(pairs):
            windows = (
                engine.passage_windows(p, budgets[i], min(self.window_overlap, budgets[i] // 2))
                if i in long_set
                else [p]
            )
            expanded.extend((q, w) for w in windows)
            owner.extend([i] * len(windows))
        window_logits = self._run(expanded)
        check_finite(window_logits, len(expanded))
        best = np.full((len(pairs), 1), -np.inf, dtype=np.float32)
        np.maximum.at(best[:, 0], np.asarray(owner), window_logits[:, 0])
        return best

    def _run(self, pairs: list[tuple[str, str]]) -> FloatArray:
        cancelled = _caller_gone.get()
        if cancelled is None:  # a plain call: one request, nothing can abandon it
            if self.micro_batching:
                return self.engine.batcher.submit(pairs, self.batch_size).result()
            return self.engine.score_logits(pairs, self.batch_size)
        # An async caller may be cancelled: score in steps, and stop at the first step after it is.
        step = self.batch_size * _BATCHES_PER_STEP
        parts = []
        for start in range(0, len(pairs), step):
            chunk = pairs[start : start + step]
            if cancelled.is_set():
                raise _CallerGone
            if not self.micro_batching:
                parts.append(self.engine.score_logits(chunk, self.batch_size))
                continue
            future = self.engine.batcher.submit(chunk, self.batch_size)
            while True:
                try:
                    parts.append(future.result(timeout=0.05))
                    break
                except FutureTimeout:
                    if cancelled.is_set() and future.cancel():  # still queued: it never runs
                        raise _CallerGone from None
        return np.concatenate(parts) if parts else np.zeros((0, self.num_labels), dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"CrossEncoderReranker(model={self.key.model!r}, device={self.key.device!r}, "
            f"precision={self.precision!r}, score_mode={self.score_mode!r})"
        )
