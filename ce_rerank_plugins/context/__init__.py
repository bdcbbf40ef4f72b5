"""Building the LLM's context from reranked chunks (framework-free; both adapters use it)."""

from __future__ import annotations

from ce_rerank_plugins.context.assembly import (
    POSITION_KEY,
    SOURCE_KEY,
    AssembledContext,
    ContextChunk,
    Ordering,
    TokenCounter,
    approximate_token_count,
    assemble_context,
    chunk_from_metadata,
    with_unique_citations,
)

__all__ = [
    "POSITION_KEY",
    "SOURCE_KEY",
    "AssembledContext",
    "ContextChunk",
    "Ordering",
    "TokenCounter",
    "approximate_token_count",
    "assemble_context",
    "chunk_from_metadata",
    "with_unique_citations",
]
