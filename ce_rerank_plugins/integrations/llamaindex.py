"""LlamaIndex adapters: nodes in, one shared core call, new nodes out.

Needs only ``llama-index-core`` (``pip install 'ce-rerank-plugins[llamaindex]'``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_items

require("llama_index.core", "llamaindex", purpose="ce_rerank_plugins.integrations.llamaindex")

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr  # noqa: E402
from llama_index.core.callbacks import CBEventType, EventPayload  # noqa: E402
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]  # noqa: E402
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent  # noqa: E402
from llama_index.core.postprocessor.types import BaseNodePostprocessor  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode  # noqa: E402

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
from ce_rerank_plugins.retrieval import FaissIndex  # noqa: E402
from ce_rerank_plugins.retrieval.faiss_index import RetrievalMode, check_search_settings  # noqa: E402

__all__ = ["CrossEncoderNodePostprocessor", "FaissRetriever", "nodes_to_context"]

dispatcher = get_dispatcher(__name__)


class CrossEncoderNodePostprocessor(BaseNodePostprocessor):
    """Reranks retrieved nodes with the shared cross-encoder (a LlamaIndex ``BaseNodePostprocessor``).

    Returns new ``NodeWithScore`` objects holding copies of the nodes; the caller's nodes and scores
    are untouched. The retrieval score is kept in the copy's metadata (hidden from the LLM and the
    embedder). Emits LlamaIndex's ``ReRankStartEvent`` / ``ReRankEndEvent`` and a RERANKING callback
    event. ``to_dict`` stores the settings only; ``from_dict`` re-acquires the shared model.

    Example:
        >>> postprocessor = CrossEncoderNodePostprocessor(model="path/to/cross-encoder", top_n=5)  # doctest: +SKIP
        >>> query_engine = index.as_query_engine(node_postprocessors=[postprocessor])  # doctest: +SKIP
    """

    # A misspelt setting (topn=3) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    model: str | None = Field(
        default=None, description="Cross-encoder name or path (default: $CE_RERANK_MODEL, bundled, or Hub)."
    )
    top_n: int | None = Field(default=3, description="How many nodes to keep (None: all).")
    score_threshold: float | None = Field(default=None, description="Drop nodes scoring below this.")
    min_keep: int = Field(default=0, description="Keep at least this many even below the threshold.")
    score_mode: Literal["auto", "logits", "sigmoid", "softmax"] = Field(
        default="auto", description="auto | logits | sigmoid | softmax."
    )
    fusion: Literal["auto", "none", "weighted", "rrf"] = Field(
        default="auto",
        description="Fuse with the retrieval score: auto (the model's recommendation) | none | weighted | rrf.",
    )
    fusion_weight: float | None = Field(
        default=None, description="The cross-encoder's weight in the fusion, in [0, 1] (default: the model's)."
    )
    keep_retrieval_score: bool = Field(default=True, description="Store the retrieval score in metadata.")
    retrieval_score_key: str = Field(default="retrieval_score", description="Metadata key for it.")
    metadata_mode: str = Field(
        default="none", description="What of the node the model reads (none | embed | llm | all)."
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

    _reranker: Reranker = PrivateAttr()

    def __init__(self, *, reranker: Reranker | None = None, **data: Any) -> None:
        super().__init__(**data)
        check_rank_options(self.top_n, self.score_threshold, self.min_keep, self.fusion_weight)
        MetadataMode(self.metadata_mode)  # fails early on a bad mode
        self._reranker = reranker or build_reranker(
            self.model,
            device=self.device,
            precision=self.precision,
            max_length=self.max_length,
            batch_size=self.batch_size,
            score_mode=self.score_mode,
            trust_remote_code=self.trust_remote_code,
        )

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serialises this component under."""
        return "CrossEncoderNodePostprocessor"

    @property
    def core(self) -> Reranker:
        """The shared core reranker."""
        return self._reranker

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        mode = MetadataMode(self.metadata_mode)
        return [n.node.get_content(metadata_mode=mode) for n in nodes]

    def _rank_kwargs(self, nodes: Sequence[NodeWithScore]) -> dict[str, Any]:
        firsts = [n.score for n in nodes]
        kwargs: dict[str, Any] = {
            "top_n": self.top_n,
            "score_threshold": self.score_threshold,
            "min_keep": self.min_keep,
            "first_stage_scores": firsts if firsts and all(f is not None for f in firsts) else None,
        }
        if self.fusion != "auto":
            kwargs["fusion"] = self.fusion
        if self.fusion_weight is not None:
            kwargs["fusion_weight"] = self.fusion_weight
        return kwargs

    def _to_nodes(self, nodes: Sequence[NodeWithScore], ranked: list[RankedResult]) -> list[NodeWithScore]:
        out = []
        for r in ranked:
            original = nodes[r.corpus_id]
            node = original.node.model_copy()
            if self.keep_retrieval_score:
                key = self.retrieval_score_key
                node.metadata = {**original.node.metadata, key: original.score}
                node.excluded_llm_metadata_keys = [*original.node.excluded_llm_metadata_keys, key]
                node.excluded_embed_metadata_keys = [*original.node.excluded_embed_metadata_keys, key]
            out.append(NodeWithScore(node=node, score=r.score))
        return out

    def _start(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> tuple[list[NodeWithScore], QueryBundle]:
        # Read once: the start event below would consume a generator and leave nothing to rank.
        nodes = check_items(nodes, "nodes", NodeWithScore, "LlamaIndex NodeWithScore")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle, nodes=nodes, top_n=self.top_n or len(nodes), model_name=self.core.model_name
            )
        )
        if query_bundle is None:
            msg = "CrossEncoderNodePostprocessor needs the query: pass query_bundle or query_str"
            raise ValueError(msg)
        return nodes, query_bundle

    def _payload(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> dict[Any, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: self.core.model_name,
            EventPayload.QUERY_STR: query_bundle.query_str,
            EventPayload.TOP_K: self.top_n,
        }

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes, query_bundle = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            ranked = self.core.rank(query_bundle.query_str, self._texts(nodes), **self._rank_kwargs(nodes))
            out = self._to_nodes(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        nodes, query_bundle = self._start(nodes, query_bundle)
        with self.callback_manager.event(CBEventType.RERANKING, payload=self._payload(nodes, query_bundle)) as event:
            ranked = await self.core.arank(query_bundle.query_str, self._texts(nodes), **self._rank_kwargs(nodes))
            out = self._to_nodes(nodes, ranked)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out


class FaissRetriever(BaseRetriever):
    """A LlamaIndex retriever over a :class:`~ce_rerank_plugins.retrieval.FaissIndex`.

    ``mode`` is ``"dense"`` (cosine), ``"bm25"`` or ``"hybrid"`` (an index built with ``lexical=True``);
    None uses the index's own default.
    """

    def __init__(
        self,
        index: FaissIndex,
        *,
        k: int = 4,
        where: dict[str, Any] | None = None,
        mode: RetrievalMode | None = None,
        **kwargs: Any,
    ) -> None:
        check_search_settings(k, mode, index)
        self.index = index
        self.k = k
        self.where = where
        self.mode = mode
        super().__init__(**kwargs)

    def _search(self, query: str) -> list[NodeWithScore]:
        hits = self.index.search(query, k=self.k, where=self.where, mode=self.mode)
        return [
            NodeWithScore(node=TextNode(id_=h.id, text=h.text, metadata=dict(h.metadata)), score=h.score) for h in hits
        ]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._search(query_bundle.query_str)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._search, query_bundle.query_str)


def nodes_to_context(
    nodes: Sequence[NodeWithScore],
    *,
    max_tokens: int,
    token_counter: TokenCounter = approximate_token_count,
    ordering: Ordering = "relevance",
    source_key: str = SOURCE_KEY,
    position_key: str = POSITION_KEY,
) -> AssembledContext:
    """Build the LLM context from ranked nodes (see :func:`ce_rerank_plugins.context.assemble_context`)."""
    chunks = [
        chunk_from_metadata(
            n.node.get_content(metadata_mode=MetadataMode.NONE),
            n.node.metadata,
            fallback_source=n.node.node_id,
            score=n.score,
            source_key=source_key,
            position_key=position_key,
        )
        for n in check_items(nodes, "nodes", NodeWithScore, "LlamaIndex NodeWithScore")
    ]
    return assemble_context(
        with_unique_citations(chunks), max_tokens=max_tokens, token_counter=token_counter, ordering=ordering
    )
