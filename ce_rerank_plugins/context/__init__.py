"""Building the LLM's context from reranked chunks (framework-free; both adapters use it)."""

from __future__ import annotations

from ce_rerank_plugins.context.assembly import (
    AssembledContext,
    ContextChunk,
    Ordering,
    TokenCounter,
    approximate_token_count,
    assemble_context,
)

__all__ = [
    "AssembledContext",
    "ContextChunk",
    "Ordering",
    "TokenCounter",
    "approximate_token_count",
    "assemble_context",
]
