"""Score spaces: raw logits, sigmoid and softmax, and the checks every score passes before ranking."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from ce_rerank_plugins.errors import ScoringError

ScoreMode = Literal["auto", "logits", "sigmoid", "softmax"]
"""How raw logits become scores: ``auto`` (the model's own activation), ``logits``, ``sigmoid`` or ``softmax``."""
_MODES = frozenset(get_args(ScoreMode))

FloatArray = npt.NDArray[np.float32]
"""A float32 numpy array of scores."""


def validate_score_mode(mode: str) -> ScoreMode:
    """Return ``mode`` if it is a known score mode, else raise ValueError naming the choices."""
    if mode not in _MODES:
        msg = f"score_mode must be one of {sorted(_MODES)}, got {mode!r}"
        raise ValueError(msg)
    return mode  # type: ignore[return-value]


def resolve_score_mode(mode: ScoreMode, *, num_labels: int, model_activation: str) -> ScoreMode:
    """Turn ``"auto"`` into the model's own activation and reject modes that mean nothing for it.

    Args:
        mode: The requested mode.
        num_labels: The model's number of output labels.
        model_activation: The class name of the model's activation (``"Sigmoid"``, ``"Identity"``...).
    """
    if mode == "auto":
        activation = model_activation.lower()
        if "sigmoid" in activation:
            return "sigmoid"
        if "softmax" in activation:
            return "softmax"
        return "logits"
    if mode == "softmax" and num_labels == 1:
        msg = (
            "score_mode='softmax' needs a model with num_labels > 1 (a softmax over one logit is always 1.0); "
            "use 'sigmoid' or 'logits' for a single-score reranker"
        )
        raise ValueError(msg)
    return mode


def apply_score_mode(logits: FloatArray, mode: ScoreMode) -> FloatArray:
    """Convert raw logits of shape ``(n, num_labels)`` into the requested score space (same shape)."""
    if mode == "logits":
        return logits.astype(np.float32, copy=True)
    if mode == "sigmoid":
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    if mode == "softmax":
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probabilities: FloatArray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities
    msg = f"unresolved score mode {mode!r}"
    raise ValueError(msg)


def check_finite(logits: FloatArray, pairs_count: int) -> None:
    """Raise ScoringError when the model produced NaN or infinite scores; they cannot be ranked."""
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        positions = np.flatnonzero(bad)[:10].tolist()
        msg = (
            f"the model returned NaN or infinite scores for {int(bad.sum())} of {pairs_count} pairs "
            f"(positions {positions}); refusing to rank them. Check the model weights and precision."
        )
        raise ScoringError(msg)
