"""Fusing the cross-encoder's scores with the first stage's, a guard for a weak or out-of-domain reranker.

Two methods, both per query over the candidates being reranked:

- ``"weighted"``: ``w * minmax(cross-encoder) + (1 - w) * minmax(first stage)``;
- ``"rrf"``: reciprocal rank fusion, ``w / (k + rank_ce) + (1 - w) / (k + rank_first)`` (ranks from 1;
  ``w = 0.5`` is the classic, unweighted RRF up to a factor of two).

``w`` is the cross-encoder's weight: 1.0 is the cross-encoder alone, 0.0 the first stage alone.
Fusion needs real first-stage scores. Without them the cross-encoder's scores stand alone: the input
order is never taken for a retrieval score, since a passage at the bottom of a list could then never
reach the top. :func:`applied_fusion` says which of the two happened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ce_rerank_plugins.core._scores import FloatArray

F64 = np.ndarray[Any, np.dtype[np.float64]]

__all__ = ["FUSIONS", "Fusion", "applied_fusion", "check_fusion", "fuse_scores"]

Fusion = Literal["none", "weighted", "rrf"]
"""How the cross-encoder's score meets the first stage's: ``none``, ``weighted`` (min-max, weighted sum), ``rrf``."""
FUSIONS = ("none", "weighted", "rrf")
RRF_K = 60


def check_fusion(fusion: object, weight: object) -> tuple[Fusion, float]:
    """Validate a fusion method and the cross-encoder's weight in it (a number in [0, 1])."""
    if fusion not in FUSIONS:
        msg = f"fusion must be one of {list(FUSIONS)}, got {fusion!r}"
        raise ValueError(msg)
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating)):
        msg = f"fusion_weight must be a number in [0, 1], got {type(weight).__name__}"
        raise TypeError(msg)
    value = float(weight)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        msg = f"fusion_weight must be in [0, 1], got {weight!r}"
        raise ValueError(msg)
    return fusion, value  # type: ignore[return-value]


def check_first_stage(scores: object, n: int) -> F64 | None:
    """First-stage scores as a float array of length ``n`` (finite), or None."""
    if scores is None:
        return None
    if isinstance(scores, (str, bytes)) or not isinstance(scores, (Sequence, np.ndarray)):
        msg = f"first_stage_scores must be a list of numbers, got {type(scores).__name__}"
        raise TypeError(msg)
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"first_stage_scores must be a list of numbers ({exc})"
        raise TypeError(msg) from None
    if array.shape != (n,):
        msg = f"got {array.size} first_stage_scores for {n} documents"
        raise ValueError(msg)
    if not np.all(np.isfinite(array)):
        msg = "first_stage_scores must be finite (got NaN or infinity)"
        raise ValueError(msg)
    return array


def _minmax(x: F64) -> F64:
    span = float(x.max() - x.min())
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


def _ranks(x: F64) -> F64:
    """1-based ranks, best (highest) first; ties broken by input order, like the stable sort of ``rank``."""
    order = np.argsort(-x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    return ranks


def applied_fusion(fusion: Fusion, first_stage: F64 | None) -> Fusion:
    """The fusion that really runs: ``fusion`` with first-stage scores, ``"none"`` without them."""
    return "none" if first_stage is None else fusion


def fuse_scores(rerank_scores: FloatArray | F64, first_stage: F64 | None, *, fusion: Fusion, weight: float) -> F64:
    """The fused score of each candidate (higher is better).

    The cross-encoder's own scores when ``fusion="none"`` or when no first-stage scores are given.
    """
    ce: F64 = np.asarray(rerank_scores, dtype=np.float64)
    if fusion == "none" or first_stage is None or len(ce) == 0:
        return ce
    first: F64 = first_stage
    if fusion == "weighted":
        fused: F64 = weight * _minmax(ce) + (1.0 - weight) * _minmax(first)
    else:
        fused = weight / (RRF_K + _ranks(ce)) + (1.0 - weight) / (RRF_K + _ranks(first))
    return fused
