"""LangChain adapters: framework objects in, one shared core call, new framework objects out.

Needs only ``langchain-core`` (``pip install 'ce-rerank-plugins[langchain]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_items

require("langchain_core", "langchain", purpose="ce_rerank_plugins.integrations.langchain")

from langchain_core.callbacks import (  # noqa: E402
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
    Callbacks,
)
from langchain_core.documents import BaseDocumentCompressor, Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.runnables import RunnableLambda  # noqa: E402
from pydantic import ConfigDict, Field, model_validator  # noqa: E402

from ce_rerank_plugins.context import (  # noqa: E402
    POSITION_KEY,
    SOURCE_KEY,
    AssembledContext,
    Ordering,
    TokenCounter,
    approximate_token_count,
    assemble_context,
    chunk_from_metadata,
    with_unique_citations,
)
from ce_rerank_plugins.core import RankedResult, Reranker, check_rank_options  # noqa: E402
from ce_rerank_plugins.integrations._settings import build_reranker  # noqa: E402
from ce_rerank_plugins.retrieval import FaissIndex, SearchHit  # noqa: E402
from ce_rerank_plugins.retrieval.faiss_index import check_search_settings  # noqa: E402

__all__ = [
    "CrossEncoderCompressor",
    "FaissRetriever",
    "RerankingRetriever",
    "context_runnable",
    "documents_to_context",
]


class CrossEncoderCompressor(BaseDocumentCompressor):
    """Reranks retrieved documents with the shared cross-encoder (a LangChain ``BaseDocumentCompressor``).

    Returns new ``Document`` objects (the caller's are never modified) carrying the rerank score and
    rank in their metadata; works in ``ContextualCompressionRetriever`` and LCEL chains.

    Example:
        >>> compressor = CrossEncoderCompressor(model="path/to/cross-encoder", top_n=5)  # doctest: +SKIP
        >>> compressor.compress_documents(docs, "How many people live in Lyon?")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    model: str | None = Field(
        default=None, description="Cross-encoder name or path (default: $CE_RERANK_MODEL, bundled, or Hub)."
    )
    top_n: int | None = Field(default=3, description="How many documents to keep (None: all).")
    score_threshold: float | None = Field(default=None, description="Drop documents scoring below this.")
    min_keep: int = Field(default=0, description="Keep at least this many even below the threshold.")
    score_mode: Literal["auto", "logits", "sigmoid", "softmax"] = Field(
        default="auto", description="auto | logits | sigmoid | softmax."
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | mps.")
    precision: Literal["auto", "fp32", "bf16", "onnx", "onnx-int8"] = Field(
        default="auto", description="auto | fp32 | bf16 | onnx | onnx-int8 (probe-checked vs fp32)."
    )
    max_length: int | None = Field(default=None, description="Token budget of a (query, passage) pair.")
    batch_size: int | None = Field(
        default=None, description="Pairs per forward pass (None: measured with precision auto, else 16)."
    )
    trust_remote_code: bool = Field(default=False, description="Allow custom model code (off by default).")
    score_key: str = Field(default="relevance_score", description="Metadata key for the rerank score.")
    rank_key: str = Field(default="rerank_rank", description="Metadata key for the 1-based rerank position.")
    fusion: Literal["auto", "none", "weighted", "rrf"] = Field(
        default="auto",
        description="Fuse with the first-stage score: auto (the model's recommendation) | none | weighted | rrf.",
    )
    fusion_weight: float | None = Field(
        default=None, description="The cross-encoder's weight in the fusion, in [0, 1] (default: the model's)."
    )
    first_stage_score_key: str = Field(
        default="retrieval_score",
        description="Metadata key of the retriever's score, used by fusion (input order when absent).",
    )
    cross_encoder_score_key: str = Field(
        default="cross_encoder_score", description="Metadata key for the cross-encoder's own score."
    )
    reranker: Reranker | None = Field(
        default=None,
        exclude=True,
        description="An existing reranker to use instead of the settings above: a core CrossEncoderReranker, "
        "or a RemoteReranker to use a served model.",
    )

    @model_validator(mode="after")
    def _attach_reranker(self) -> CrossEncoderCompressor:
        check_rank_options(self.top_n, self.score_threshold, self.min_keep, self.fusion_weight)
        if self.reranker is None:
            self.reranker = build_reranker(
                self.model,
                device=self.device,
                precision=self.precision,
                max_length=self.max_length,
                batch_size=self.batch_size,
                score_mode=self.score_mode,
                trust_remote_code=self.trust_remote_code,
            )
        return self

    @property
    def core(self) -> Reranker:
        """The shared core reranker."""
        if self.reranker is None:  # only if the validator was bypassed (e.g. model_construct)
            msg = "CrossEncoderCompressor has no reranker; create it with its constructor"
            raise RuntimeError(msg)
        return self.reranker

    def _rank_kwargs(self, documents: Sequence[Document]) -> dict[str, Any]:
        firsts = [d.metadata.get(self.first_stage_score_key) for d in documents]
        usable = all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in firsts)
        kwargs: dict[str, Any] = {
            "top_n": self.top_n,
            "score_threshold": self.score_threshold,
            "min_keep": self.min_keep,
            "first_stage_scores": firsts if usable and firsts else None,
        }
        if self.fusion != "auto":
            kwargs["fusion"] = self.fusion
        if self.fusion_weight is not None:
            kwargs["fusion_weight"] = self.fusion_weight
        return kwargs

    def _to_documents(self, documents: Sequence[Document], ranked: list[RankedResult]) -> list[Document]:
        return [
            Document(
                page_content=documents[r.corpus_id].page_content,
                metadata={
                    **documents[r.corpus_id].metadata,
                    self.score_key: r.score,
                    self.cross_encoder_score_key: r.cross_encoder_score,
                    self.rank_key: rank,
                },
                id=documents[r.corpus_id].id,
            )
            for rank, r in enumerate(ranked, 1)
        ]

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Rerank ``documents`` for ``query``; best first, at most ``top_n``."""
        documents = check_items(documents, "documents", Document, "LangChain Document")
        run = CallbackManager.configure(callbacks).on_chain_start(
            {"name": type(self).__name__}, {"query": query, "documents": len(documents)}, name=type(self).__name__
        )
        try:
            ranked = self.core.rank(query, [d.page_content for d in documents], **self._rank_kwargs(documents))
            out = self._to_documents(documents, ranked)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end({"documents": out})
        return out

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; the scoring runs off the event loop."""
        documents = check_items(documents, "documents", Document, "LangChain Document")
        from langchain_core.callbacks import AsyncCallbackManager

        run = await AsyncCallbackManager.configure(callbacks).on_chain_start(
            {"name": type(self).__name__}, {"query": query, "documents": len(documents)}, name=type(self).__name__
        )
        try:
            ranked = await self.core.arank(query, [d.page_content for d in documents], **self._rank_kwargs(documents))
            out = self._to_documents(documents, ranked)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end({"documents": out})
        return out


def _hit_to_document(hit: SearchHit, score_key: str) -> Document:
    return Document(page_content=hit.text, metadata={**hit.metadata, score_key: hit.score}, id=hit.id)


class FaissRetriever(BaseRetriever):
    """A LangChain retriever over a :class:`~ce_rerank_plugins.retrieval.FaissIndex` (cosine similarity).

    ``k`` and a metadata filter ``where`` can be set here or per call (``invoke(query, k=3)``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    index: FaissIndex = Field(description="The FAISS index to search.")
    k: int = Field(default=4, description="How many documents to return.")
    where: dict[str, Any] | None = Field(default=None, description="Metadata filter, e.g. {'source': 'a.pdf'}.")
    score_key: str = Field(default="retrieval_score", description="Metadata key for the retrieval score.")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        default=None,
        description="dense | bm25 | hybrid (BM25 needs an index built with lexical=True); None: the index's.",
    )

    @model_validator(mode="after")
    def _check_settings(self) -> FaissRetriever:
        check_search_settings(self.k, self.mode, self.index)  # refused when built, not at the first query
        return self

    def _search(self, query: str, k: int | None, where: dict[str, Any] | None) -> list[Document]:
        k = self.k if k is None else k  # a per-call k=0 is refused by the index, never replaced
        hits = self.index.search(query, k=k, where=where if where is not None else self.where, mode=self.mode)
        return [_hit_to_document(h, self.score_key) for h in hits]

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Document]:
        return self._search(query, k, where)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[Document]:
        return await asyncio.to_thread(self._search, query, k, where)


class RerankingRetriever(BaseRetriever):
    """Retrieve-then-rerank: ``base_retriever`` fetches candidates, ``compressor`` keeps the best.

    Built on langchain-core only (no ``ContextualCompressionRetriever`` needed); callbacks of both
    steps nest under this retriever's run.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    base_retriever: BaseRetriever = Field(description="Fetches the candidates (e.g. top 50 from FAISS).")
    compressor: CrossEncoderCompressor = Field(description="Reranks the candidates and keeps top_n.")

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        docs = self.base_retriever.invoke(query, config={"callbacks": run_manager.get_child()})
        return list(self.compressor.compress_documents(docs, query, callbacks=run_manager.get_child()))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = await self.base_retriever.ainvoke(query, config={"callbacks": run_manager.get_child()})
        return list(await self.compressor.acompress_documents(docs, query, callbacks=run_manager.get_child()))


def documents_to_context(
    documents: Sequence[Document],
    *,
    max_tokens: int,
    token_counter: TokenCounter = approximate_token_count,
    ordering: Ordering = "relevance",
    source_key: str = SOURCE_KEY,
    position_key: str = POSITION_KEY,
    score_key: str = "relevance_score",
) -> AssembledContext:
    """Build the LLM context from ranked documents (see :func:`ce_rerank_plugins.context.assemble_context`).

    Citations are ``source#position`` from the metadata (see :func:`ce_rerank_plugins.context.chunk_from_metadata`;
    the document id, then its list position, when there is no source); repeated citations get a ``~N`` suffix.
    """
    chunks = [
        chunk_from_metadata(
            d.page_content,
            d.metadata,
            fallback_source=d.id or f"doc{i}",
            score=d.metadata.get(score_key),
            source_key=source_key,
            position_key=position_key,
        )
        for i, d in enumerate(check_items(documents, "documents", Document, "LangChain Document"))
    ]
    return assemble_context(
        with_unique_citations(chunks), max_tokens=max_tokens, token_counter=token_counter, ordering=ordering
    )


def context_runnable(max_tokens: int, **kwargs: Any) -> RunnableLambda[Sequence[Document], str]:
    """An LCEL step turning ranked documents into the cited context string."""
    return RunnableLambda(lambda docs: documents_to_context(docs, max_tokens=max_tokens, **kwargs).text)
