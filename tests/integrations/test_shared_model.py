"""A LangChain compressor and a LlamaIndex postprocessor with the same settings share one model."""

from __future__ import annotations

from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, TextNode

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor
from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

QUERY = "How many people live in Lyon?"


def test_one_model_across_frameworks_and_same_results(tiny_ce_path, fresh_registry, sample_records):
    texts = [r["text"] for r in sample_records]
    compressor = CrossEncoderCompressor(model=str(tiny_ce_path), top_n=5)
    postprocessor = CrossEncoderNodePostprocessor(model=str(tiny_ce_path), top_n=5)
    core = CrossEncoderReranker(tiny_ce_path)
    assert compressor.core.model is postprocessor.core.model is core.model
    assert fresh_registry.load_count(core.key) == 1

    lc = compressor.compress_documents([Document(page_content=t, id=str(i)) for i, t in enumerate(texts)], QUERY)
    li = postprocessor.postprocess_nodes(
        [NodeWithScore(node=TextNode(id_=str(i), text=t), score=0.0) for i, t in enumerate(texts)], query_str=QUERY
    )
    expected = core.rank(QUERY, texts, top_n=5)
    assert [d.id for d in lc] == [n.node.node_id for n in li] == [str(r.corpus_id) for r in expected]
    assert [d.metadata["relevance_score"] for d in lc] == [n.score for n in li] == [r.score for r in expected]
