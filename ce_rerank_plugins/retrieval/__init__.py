"""FAISS bi-encoder retrieval: embedding, indexing, filtering, chunking and safe persistence.

Needs the ``faiss`` extra (``pip install 'ce-rerank-plugins[faiss]'``); imports no LLM framework.
"""

from __future__ import annotations

from ce_rerank_plugins.retrieval._embedder import DEFAULT_EMBEDDER_ID, Embedder, EmbedderRuntime
from ce_rerank_plugins.retrieval._lexical import BM25Params, LexicalIndex
from ce_rerank_plugins.retrieval._persistence import FORMAT_VERSION, check_save_target
from ce_rerank_plugins.retrieval.chunking import Chunk, TokenChunker
from ce_rerank_plugins.retrieval.faiss_index import (
    RETRIEVAL_MODES,
    Document,
    FaissIndex,
    IndexType,
    RetrievalMode,
    SearchHit,
)

__all__ = [
    "DEFAULT_EMBEDDER_ID",
    "FORMAT_VERSION",
    "RETRIEVAL_MODES",
    "BM25Params",
    "Chunk",
    "Document",
    "Embedder",
    "EmbedderRuntime",
    "FaissIndex",
    "IndexType",
    "LexicalIndex",
    "RetrievalMode",
    "SearchHit",
    "TokenChunker",
    "check_save_target",
]
