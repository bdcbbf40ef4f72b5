"""LlamaIndex adapters with the real llama-index-core (MockLLM answers)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llama_index.core.tools import QueryEngineTool

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor, FaissRetriever, nodes_to_context
from tests.integrations.heartbeat import assert_loop_keeps_ticking

QUERY = "How many people live in Lyon?"


class EventCollector(BaseEventHandler):
    events: list[Any] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def nodes(sample_records) -> list[NodeWithScore]:
    return [
        NodeWithScore(
            node=TextNode(
                id_=r["id"], text=r["text"], metadata={"source": r["source"], "chunk_index": r["chunk_index"]}
            ),
            score=1.0 - i / 100,
        )
        for i, r in enumerate(sample_records)
    ]


@pytest.fixture
def postprocessor(tiny_ce_path) -> CrossEncoderNodePostprocessor:
    return CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=3)


def test_postprocessor_matches_core_and_returns_new_nodes(postprocessor, nodes, tiny_ce_path):
    before = copy.deepcopy(nodes)
    out = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
    core = CrossEncoderReranker(tiny_ce_path).rank(QUERY, [n.node.get_content() for n in nodes], top_n=3)
    assert [n.node.node_id for n in out] == [nodes[r.corpus_id].node.node_id for r in core]
    assert [n.score for n in out] == [r.score for r in core]
    # The caller's nodes and scores are untouched; the copies carry the retrieval score, hidden from the LLM.
    assert [(n.node.metadata, n.score) for n in nodes] == [(n.node.metadata, n.score) for n in before]
    first = out[0]
    original = nodes[core[0].corpus_id]
    assert first.node is not original.node
    assert first.node.metadata["retrieval_score"] == original.score
    assert "retrieval_score" in first.node.excluded_llm_metadata_keys
    assert "retrieval_score" not in original.node.excluded_llm_metadata_keys


def test_postprocessor_options_and_errors(tiny_ce_path, nodes):
    keep_all = CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=None, keep_retrieval_score=False)
    out = keep_all.postprocess_nodes(nodes, query_str=QUERY)
    assert len(out) == len(nodes) and "retrieval_score" not in out[0].node.metadata
    assert keep_all.postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="needs the query"):
        keep_all.postprocess_nodes(nodes)
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=0)
    with pytest.raises(ValueError, match="is not a valid MetadataMode"):
        CrossEncoderNodePostprocessor(model=str(tiny_ce_path), metadata_mode="everything")


async def test_postprocessor_takes_any_iterable_and_names_what_is_not_a_node(postprocessor, nodes):
    # The start event reads the nodes first: a generator used to reach the ranking empty, and nothing came back.
    listed = [n.node.node_id for n in postprocessor.postprocess_nodes(nodes, query_str=QUERY)]
    assert [n.node.node_id for n in postprocessor.postprocess_nodes((n for n in nodes), query_str=QUERY)] == listed
    got = await postprocessor.apostprocess_nodes(iter(nodes), query_str=QUERY)
    assert [n.node.node_id for n in got] == listed
    with pytest.raises(TypeError, match="nodes must be a list, not a single str"):
        postprocessor.postprocess_nodes("Lyon", query_str=QUERY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be LlamaIndex NodeWithScore objects, but item 1 is a TextNode"):
        postprocessor.postprocess_nodes([nodes[0], nodes[1].node], query_str=QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be LlamaIndex NodeWithScore objects, but item 0 is a TextNode"):
        nodes_to_context([nodes[0].node], max_tokens=100)  # type: ignore[list-item]


async def test_async_postprocess_equals_sync_and_emits_events(postprocessor, nodes):
    collector = EventCollector()
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        sync = postprocessor.postprocess_nodes(nodes, query_str=QUERY)
        got = await postprocessor.apostprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    finally:
        root.event_handlers.remove(collector)
    assert [n.node.node_id for n in got] == [n.node.node_id for n in sync]
    kinds = [type(e).__name__ for e in collector.events]
    assert kinds == ["ReRankStartEvent", "ReRankEndEvent"] * 2
    start, end = collector.events[0], collector.events[1]
    assert start.top_n == 3 and start.query.query_str == QUERY and len(start.nodes) == len(nodes)
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in sync]


def test_serialisation_reacquires_the_shared_model(postprocessor):
    data = postprocessor.to_dict()
    assert data["class_name"] == "CrossEncoderNodePostprocessor"
    assert "_reranker" not in data and data["model"] == postprocessor.model
    restored = CrossEncoderNodePostprocessor.from_dict(data)
    assert restored.core.model is postprocessor.core.model
    assert restored.top_n == postprocessor.top_n
    assert CrossEncoderNodePostprocessor.from_json(postprocessor.to_json()).core.model is postprocessor.core.model


def test_faiss_retriever_sync_and_async(sample_index):
    retriever = FaissRetriever(sample_index, k=5)
    hits = retriever.retrieve(QUERY)
    assert len(hits) == 5 and hits[0].node.metadata["source"] == "lyon.md"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    async_hits = asyncio.run(retriever.aretrieve(QUERY))
    assert [h.node.node_id for h in async_hits] == [h.node.node_id for h in hits]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        FaissRetriever(sample_index, k=0)


async def test_query_engine_sync_and_async_with_mock_llm(postprocessor, sample_index):
    engine = RetrieverQueryEngine.from_args(
        FaissRetriever(sample_index, k=10), llm=MockLLM(max_tokens=8), node_postprocessors=[postprocessor]
    )
    response = engine.query(QUERY)
    expected = postprocessor.postprocess_nodes(FaissRetriever(sample_index, k=10).retrieve(QUERY), query_str=QUERY)
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in expected]
    assert str(response).strip()  # MockLLM answered
    aresponse = await engine.aquery(QUERY)
    assert [n.node.node_id for n in aresponse.source_nodes] == [n.node.node_id for n in expected]


def test_query_engine_tool_for_agents(postprocessor, sample_index):
    engine = RetrieverQueryEngine.from_args(
        FaissRetriever(sample_index, k=10), llm=MockLLM(max_tokens=8), node_postprocessors=[postprocessor]
    )
    tool = QueryEngineTool.from_defaults(engine, name="notes", description="Answers questions about the notes.")
    output = tool.call(QUERY)
    assert tool.metadata.name == "notes"
    assert len(output.raw_output.source_nodes) == 3


async def test_async_postprocess_does_not_block_the_loop(tiny_ce_path, nodes):
    postprocessor = CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=3)
    many = [
        NodeWithScore(node=TextNode(text=f"{n.node.get_content()} v{i}"), score=0.5) for i in range(6) for n in nodes
    ]
    results = await assert_loop_keeps_ticking(
        asyncio.gather(*(postprocessor.apostprocess_nodes(many, query_str=f"{QUERY} {i}") for i in range(8)))
    )
    assert all(len(r) == 3 for r in results)


def test_nodes_to_context(nodes):
    ctx = nodes_to_context(nodes[:4], max_tokens=1000, ordering="edges")
    assert [c.citation for c in ctx.included] == ["lyon.md#0", "lyon.md#2", "lyon.md#3", "lyon.md#1"]
    assert ctx.text.startswith("[lyon.md#0]")


def test_context_from_nodes_of_one_source_without_positions_does_not_crash():
    nodes = [NodeWithScore(node=TextNode(text=t, metadata={"source": "lyon.md"}), score=1.0) for t in ("a", "b")]
    ctx = nodes_to_context(nodes, max_tokens=200)
    assert [c.citation for c in ctx.included] == ["lyon.md", "lyon.md#~2"]


def test_postprocessor_refuses_a_nan_threshold_when_built(tiny_ce_path):
    with pytest.raises(ValueError, match="score_threshold is NaN"):
        CrossEncoderNodePostprocessor(model=str(tiny_ce_path), score_threshold=float("nan"))


def test_postprocessor_fuses_with_the_retrieval_score(tiny_ce_path):
    nodes = [NodeWithScore(node=TextNode(text=t), score=s) for t, s in (("a b", 0.1), ("c", 0.9), ("d", 0.5))]
    first_stage_only = CrossEncoderNodePostprocessor(
        model=str(tiny_ce_path), top_n=None, fusion="weighted", fusion_weight=0.0
    )
    out = first_stage_only.postprocess_nodes(nodes, query_str="q")
    assert [n.node.metadata["retrieval_score"] for n in out] == [0.9, 0.5, 0.1]
    with pytest.raises(ValueError, match="Input should be 'auto', 'none', 'weighted' or 'rrf'"):
        CrossEncoderNodePostprocessor(model=str(tiny_ce_path), fusion="magic")


def test_nodes_without_a_score_are_ordered_by_the_cross_encoder_alone(tiny_ce_path):
    texts = ["a b", "c", "d e f", "g"]
    plain = CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=None, fusion="none").postprocess_nodes(
        [NodeWithScore(node=TextNode(text=t), score=None) for t in texts], query_str="q"
    )
    worst_first = [NodeWithScore(node=TextNode(text=n.node.get_content()), score=None) for n in reversed(plain)]
    fused = CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=None, fusion="weighted", fusion_weight=0.0)
    out = fused.postprocess_nodes(worst_first, query_str="q")
    assert [n.node.get_content() for n in out] == [n.node.get_content() for n in plain]


def test_faiss_retriever_in_hybrid_and_bm25_modes(sample_records):
    from ce_rerank_plugins.retrieval import FaissIndex

    index = FaissIndex(lexical=True)
    index.add([r["text"] for r in sample_records], ids=[r["id"] for r in sample_records])
    for mode in ("hybrid", "bm25"):
        nodes = FaissRetriever(index, k=3, mode=mode).retrieve("water temperature for coffee")
        assert len(nodes) == 3 and nodes[0].node.node_id.startswith("coffee")
        assert [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    with pytest.raises(ValueError, match="needs the BM25 index: build the index with lexical=True"):
        FaissRetriever(FaissIndex(), mode="bm25")
