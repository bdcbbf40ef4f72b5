"""ce_rerank_plugins: one shared cross-encoder reranker for RAG pipelines.

The top-level package exposes the framework-free core only; it imports with no LangChain,
LlamaIndex or FAISS installed. Framework adapters live in ``ce_rerank_plugins.integrations``.
"""

from __future__ import annotations

from ce_rerank_plugins.core import (
    SHARED_MODELS,
    CacheInfo,
    CrossEncoderReranker,
    ModelKey,
    PairClassification,
    RankedResult,
    ScoreCache,
)
from ce_rerank_plugins.errors import CERerankError, IndexFormatError, ModelLoadError, ScoringError

__version__ = "0.1.0"
"""The package version."""

__all__ = [
    "SHARED_MODELS",
    "CERerankError",
    "CacheInfo",
    "CrossEncoderReranker",
    "IndexFormatError",
    "ModelKey",
    "ModelLoadError",
    "PairClassification",
    "RankedResult",
    "ScoreCache",
    "ScoringError",
    "__version__",
]
