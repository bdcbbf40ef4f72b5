"""Retrieve -> rerank -> context, framework-free: what the CLI, the demo and the notebooks run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ce_rerank_plugins.context import AssembledContext, assemble_context, chunk_from_metadata, with_unique_citations
from ce_rerank_plugins.core import CrossEncoderReranker
from ce_rerank_plugins.retrieval import FaissIndex, RetrievalMode, SearchHit
from ce_rerank_plugins.retrieval.faiss_index import check_search_settings


@dataclass(frozen=True)
class RankedHit:
    """A retrieved chunk after reranking: its scores and both positions.

    ``rerank_score`` is what the reranked order follows (the fused score when the reranker fuses
    with the first stage); ``cross_encoder_score`` is the cross-encoder's own; ``hit.score`` the
    first stage's.
    """

    hit: SearchHit
    rerank_score: float
    rerank_position: int
    retrieval_position: int
    cross_encoder_score: float | None = None


@dataclass(frozen=True)
class PipelineResult:
    """What one query went through: retrieval hits, the reranked top, and per-stage seconds."""

    query: str
    retrieved: list[SearchHit]
    reranked: list[RankedHit]
    retrieval_seconds: float
    rerank_seconds: float

    def context(self, max_tokens: int = 1500) -> AssembledContext:
        """The LLM context of the reranked chunks, with ``source#position`` citations."""
        chunks = [
            chunk_from_metadata(r.hit.text, r.hit.metadata, fallback_source=r.hit.id, score=r.rerank_score)
            for r in self.reranked
        ]
        return assemble_context(with_unique_citations(chunks), max_tokens=max_tokens)


class RetrieveRerankPipeline:
    """FAISS top-``k`` candidates, reranked by the cross-encoder, best ``top_n`` kept.

    Args:
        index: The FAISS index to search.
        reranker: The shared cross-encoder reranker.
        k: Candidates fetched from the index (50-100 is typical).
        top_n: Chunks kept after reranking.
        mode: First-stage mode (``dense``, ``bm25``, ``hybrid``); None: the index's default.
    """

    def __init__(
        self,
        index: FaissIndex,
        reranker: CrossEncoderReranker,
        *,
        k: int = 50,
        top_n: int = 5,
        mode: RetrievalMode | None = None,
    ) -> None:
        check_search_settings(k, mode, index)  # refused here, not at the first query
        if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
            msg = f"top_n must be a positive integer, got {top_n!r}"
            raise ValueError(msg)
        self.index = index
        self.reranker = reranker
        self.k = k
        self.top_n = top_n
        self.mode = mode

    def run(self, query: str) -> PipelineResult:
        """Retrieve, rerank and time one query."""
        start = time.perf_counter()
        hits = self.index.search(query, k=self.k, mode=self.mode)
        retrieved = time.perf_counter()
        ranked = self.reranker.rank(
            query, [h.text for h in hits], top_n=self.top_n, first_stage_scores=[h.score for h in hits]
        )
        done = time.perf_counter()
        reranked = [
            RankedHit(hits[r.corpus_id], r.score, position, r.corpus_id + 1, r.cross_encoder_score)
            for position, r in enumerate(ranked, 1)
        ]
        return PipelineResult(query, hits, reranked, retrieved - start, done - retrieved)
