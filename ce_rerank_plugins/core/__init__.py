"""The shared cross-encoder core: no LangChain or LlamaIndex imports here."""

from __future__ import annotations

from ce_rerank_plugins.core._cache import CacheInfo, ScoreCache
from ce_rerank_plugins.core._loading import HUB_DEFAULT_MODEL, MODEL_ENV_VAR, ModelKey
from ce_rerank_plugins.core._scores import ScoreMode
from ce_rerank_plugins.core.reranker import (
    SHARED_MODELS,
    CrossEncoderReranker,
    PairClassification,
    Precision,
    RankedResult,
    Reranker,
    check_rank_options,
    select_results,
)

__all__ = [
    "HUB_DEFAULT_MODEL",
    "MODEL_ENV_VAR",
    "SHARED_MODELS",
    "CacheInfo",
    "CrossEncoderReranker",
    "ModelKey",
    "PairClassification",
    "Precision",
    "RankedResult",
    "Reranker",
    "ScoreCache",
    "ScoreMode",
    "check_rank_options",
    "select_results",
]
