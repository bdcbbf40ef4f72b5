"""LangChain adapters with the real langchain-core, langchain-classic and langchain-tests."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tools import create_retriever_tool
from langchain_tests.integration_tests import RetrieversIntegrationTests

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.integrations.langchain import (
    CrossEncoderCompressor,
    FaissRetriever,
    RerankingRetriever,
    context_runnable,
    documents_to_context,
)
from tests.integrations.heartbeat import assert_loop_keeps_ticking

QUERY = "How many people live in Lyon?"


@pytest.fixture(scope="module")
def docs(sample_records) -> list[Document]:
    return [
        Document(page_content=r["text"], metadata={"source": r["source"], "chunk_index": r["chunk_index"]}, id=r["id"])
        for r in sample_records
    ]


@pytest.fixture
def compressor(tiny_ce_path) -> CrossEncoderCompressor:
    return CrossEncoderCompressor(model=str(tiny_ce_path), top_n=3)


class TestFaissRetrieverStandard(RetrieversIntegrationTests):
    """The standard retriever suite of langchain-tests, unchanged."""

    @pytest.fixture(autouse=True)
    def _index(self, sample_index) -> None:
        type(self)._sample_index = sample_index

    @property
    def retriever_constructor(self) -> type[FaissRetriever]:
        return FaissRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": type(self)._sample_index}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


class TestFaissRetrieverHybridStandard(RetrieversIntegrationTests):
    """The same standard suite, with the retriever in hybrid (BM25 + dense) mode."""

    @pytest.fixture(autouse=True)
    def _index(self, sample_records) -> None:
        if not hasattr(type(self), "_hybrid_index"):
            from ce_rerank_plugins.retrieval import FaissIndex

            index = FaissIndex(lexical=True)
            index.add(
                [r["text"] for r in sample_records],
                ids=[r["id"] for r in sample_records],
                metadatas=[{"source": r["source"], "chunk_index": r["chunk_index"]} for r in sample_records],
            )
            type(self)._hybrid_index = index

    @property
    def retriever_constructor(self) -> type[FaissRetriever]:
        return FaissRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"index": type(self)._hybrid_index, "mode": "hybrid"}

    @property
    def retriever_query_example(self) -> str:
        return QUERY


def test_compressor_matches_core_and_leaves_inputs_untouched(compressor, docs, tiny_ce_path):
    before = copy.deepcopy(docs)
    out = compressor.compress_documents(docs, QUERY)
    assert docs == before  # caller's documents unchanged, metadata included
    core = CrossEncoderReranker(tiny_ce_path).rank(QUERY, [d.page_content for d in docs], top_n=3)
    assert [d.id for d in out] == [docs[r.corpus_id].id for r in core]
    assert [d.metadata["relevance_score"] for d in out] == [r.score for r in core]
    assert [d.metadata["rerank_rank"] for d in out] == [1, 2, 3]
    assert all(o is not docs[r.corpus_id] for o, r in zip(out, core, strict=True))
    assert out[0].metadata["source"] == docs[core[0].corpus_id].metadata["source"]


def test_compressor_threshold_min_keep_and_empty(tiny_ce_path, docs):
    scores = sorted(
        (r.score for r in CrossEncoderReranker(tiny_ce_path).rank(QUERY, [d.page_content for d in docs])),
        reverse=True,
    )
    strict = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, score_threshold=scores[4])
    assert len(strict.compress_documents(docs, QUERY)) == 5
    none_pass = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, score_threshold=1.1, min_keep=2)
    assert len(none_pass.compress_documents(docs, QUERY)) == 2
    assert strict.compress_documents([], QUERY) == []
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        CrossEncoderCompressor(model=str(tiny_ce_path), top_n=0)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        CrossEncoderCompressor(model=str(tiny_ce_path), topn=3)


async def test_compressor_takes_any_iterable_and_names_what_is_not_a_document(compressor, docs):
    listed = compressor.compress_documents(docs, QUERY)
    assert [d.id for d in compressor.compress_documents((d for d in docs), QUERY)] == [d.id for d in listed]
    assert [d.id for d in await compressor.acompress_documents(iter(docs), QUERY)] == [d.id for d in listed]
    with pytest.raises(TypeError, match="documents must be a list, not a single str"):
        compressor.compress_documents("How many people live in Lyon?", QUERY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be LangChain Document objects, but item 1 is a str"):
        compressor.compress_documents([docs[0], "a bare text"], QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="must be LangChain Document objects, but item 0 is a dict"):
        await compressor.acompress_documents([{"page_content": "x"}], QUERY)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="documents must be a list, not a single str"):
        documents_to_context("a bare text", max_tokens=100)  # type: ignore[arg-type]


def test_compressor_honours_callbacks(compressor, docs):
    events: list[str] = []

    class Recorder(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, **kwargs):
            events.append(f"start:{kwargs.get('name')}:{inputs['documents']}")

        def on_chain_end(self, outputs, **kwargs):
            events.append(f"end:{len(outputs['documents'])}")

    compressor.compress_documents(docs, QUERY, callbacks=[Recorder()])
    assert events == [f"start:CrossEncoderCompressor:{len(docs)}", "end:3"]


async def test_async_compression_equals_sync(compressor, docs):
    sync = compressor.compress_documents(docs, QUERY)
    got = await compressor.acompress_documents(docs, QUERY)
    assert [d.id for d in got] == [d.id for d in sync]
    assert [d.metadata["relevance_score"] for d in got] == pytest.approx(
        [d.metadata["relevance_score"] for d in sync], abs=1e-6
    )


async def test_async_reranks_do_not_block_the_event_loop(tiny_ce_path, docs):
    compressor = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=3)
    many = [Document(page_content=f"{d.page_content} variant {i}") for i in range(6) for d in docs]
    results = await assert_loop_keeps_ticking(
        asyncio.gather(*(compressor.acompress_documents(many, f"{QUERY} {i}") for i in range(8)))
    )
    assert all(len(r) == 3 for r in results)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"mode": "bm25"}, "mode='bm25' needs the BM25 index: build the index with lexical=True"),
    ],
)
def test_faiss_retriever_refuses_bad_settings_when_built(sample_index, options, message):
    assert not sample_index.lexical  # the case the mode check is for
    with pytest.raises(ValueError, match=message):
        FaissRetriever(index=sample_index, **options)


def test_faiss_retriever_per_call_k_is_used_as_given(sample_index):
    retriever = FaissRetriever(index=sample_index, k=4)
    assert len(retriever.invoke(QUERY, k=2)) == 2
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        retriever.invoke(QUERY, k=0)  # not silently replaced by the retriever's own k


def test_inside_contextual_compression_retriever(compressor, sample_index):
    from langchain_classic.retrievers import ContextualCompressionRetriever

    base = FaissRetriever(index=sample_index, k=10)
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    out = retriever.invoke(QUERY)
    candidates = base.invoke(QUERY)
    expected = compressor.compress_documents(candidates, QUERY)
    assert [d.id for d in out] == [d.id for d in expected]
    assert "retrieval_score" in out[0].metadata and "relevance_score" in out[0].metadata


async def test_reranking_retriever_sync_and_async(compressor, sample_index):
    retriever = RerankingRetriever(base_retriever=FaissRetriever(index=sample_index, k=10), compressor=compressor)
    sync = retriever.invoke(QUERY)
    assert len(sync) == 3
    assert [d.id for d in await retriever.ainvoke(QUERY)] == [d.id for d in sync]


def test_lcel_chain_with_fake_llm(compressor, sample_index):
    retriever = RerankingRetriever(base_retriever=FaissRetriever(index=sample_index, k=10), compressor=compressor)
    prompt = ChatPromptTemplate.from_template("Answer from the context.\n{context}\n\nQuestion: {question}")
    llm = GenericFakeChatModel(messages=iter([AIMessage(content="About 522,000 people [lyon.md#0].")]))
    captured: dict[str, Any] = {}

    def remember(prompt_value):
        captured["prompt"] = prompt_value.to_string()
        return prompt_value

    chain = (
        {"context": retriever | context_runnable(max_tokens=400), "question": RunnablePassthrough()}
        | prompt
        | remember
        | llm
    )
    answer = chain.invoke(QUERY)
    assert answer.content.startswith("About 522,000")
    top = retriever.invoke(QUERY)
    assert f"[{top[0].metadata['source']}#{top[0].metadata['chunk_index']}]" in captured["prompt"]


def test_agent_tool_call_through_reranking_retriever(compressor, sample_index):
    retriever = RerankingRetriever(base_retriever=FaissRetriever(index=sample_index, k=10), compressor=compressor)
    tool = create_retriever_tool(retriever, "search_notes", "Search the notes; returns the most relevant passages.")
    call = {"name": "search_notes", "args": {"query": QUERY}, "id": "call-1", "type": "tool_call"}
    model = GenericFakeChatModel(messages=iter([AIMessage(content="", tool_calls=[call])]))
    message = model.invoke("How many people live in Lyon?")
    assert message.tool_calls[0]["name"] == tool.name
    result = tool.invoke(message.tool_calls[0])
    assert isinstance(result, ToolMessage) and result.tool_call_id == "call-1"
    for doc in retriever.invoke(QUERY):
        assert doc.page_content in result.content


def test_documents_to_context_budget_and_citations(docs):
    ctx = documents_to_context(docs[:5], max_tokens=60)
    assert ctx.included[0].citation == "lyon.md#0"
    assert ctx.dropped  # 5 passages do not fit in 60 tokens: reported, not lost
    assert len(ctx.included) + len(ctx.dropped) == 5


def test_context_from_chunks_of_one_source_without_positions_does_not_crash(compressor):
    from langchain_core.documents import Document

    docs = [Document(page_content=t, metadata={"source": "lyon.md"}) for t in ("Lyon is big.", "Lyon is old.")]
    ctx = documents_to_context(docs, max_tokens=200)
    assert [c.citation for c in ctx.included] == ["lyon.md", "lyon.md#~2"]
    assert "[lyon.md] Lyon is big." in ctx.text and "[lyon.md#~2] Lyon is old." in ctx.text


def test_compressor_refuses_a_nan_threshold_when_built(tiny_ce_path):
    with pytest.raises(ValueError, match="score_threshold is NaN"):
        CrossEncoderCompressor(model=str(tiny_ce_path), score_threshold=float("nan"))
    with pytest.raises(ValueError, match="min_keep must be a non-negative integer"):
        CrossEncoderCompressor(model=str(tiny_ce_path), min_keep=-1)


def test_compressor_fuses_with_the_retrieval_score_in_metadata(tiny_ce_path):
    from langchain_core.documents import Document

    docs = [
        Document(page_content=t, metadata={"retrieval_score": s}) for t, s in (("a b", 0.1), ("c", 0.9), ("d", 0.5))
    ]
    first_stage_only = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, fusion="weighted", fusion_weight=0.0)
    out = first_stage_only.compress_documents(docs, QUERY)
    assert [d.metadata["retrieval_score"] for d in out] == [0.9, 0.5, 0.1]
    plain = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, fusion="none").compress_documents(docs, QUERY)
    ce = {d.page_content: d.metadata["relevance_score"] for d in plain}
    assert all(d.metadata["cross_encoder_score"] == pytest.approx(ce[d.page_content]) for d in out)
    with pytest.raises(ValueError, match="fusion_weight must be in"):
        CrossEncoderCompressor(model=str(tiny_ce_path), fusion_weight=2.0)
    with pytest.raises(ValueError, match="Input should be 'auto', 'none', 'weighted' or 'rrf'"):
        CrossEncoderCompressor(model=str(tiny_ce_path), fusion="magic")


def test_without_retrieval_scores_the_compressor_orders_by_the_cross_encoder_alone(tiny_ce_path):
    """Documents from a retriever that sets no score: the input order is never fused in as one."""
    from langchain_core.documents import Document

    texts = ["a b", "c", "d e f", "g"]
    plain = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, fusion="none").compress_documents(
        [Document(page_content=t) for t in texts], QUERY
    )
    worst_first = [Document(page_content=d.page_content) for d in reversed(plain)]
    fused = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=None, fusion="weighted", fusion_weight=0.0)
    out = fused.compress_documents(worst_first, QUERY)
    assert [d.page_content for d in out] == [d.page_content for d in plain]


def test_settings_are_typed_and_a_wrong_value_lists_the_allowed_ones(tiny_ce_path):
    with pytest.raises(ValueError, match="Input should be 'auto', 'fp32', 'bf16', 'onnx' or 'onnx-int8'"):
        CrossEncoderCompressor(model=str(tiny_ce_path), precision="fp8")
    with pytest.raises(ValueError, match="Input should be 'auto', 'logits', 'sigmoid' or 'softmax'"):
        CrossEncoderCompressor(model=str(tiny_ce_path), score_mode="probit")
