"""The framework-free pipeline: retrieve, rerank, keep the best, cite them."""

from __future__ import annotations

import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.pipeline import RetrieveRerankPipeline

QUERY = "How many people live in Lyon?"


@pytest.fixture(scope="module")
def reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path, precision="fp32")


def test_the_reranked_top_is_the_rerankers_order_of_the_retrieved_hits(sample_index, reranker):
    result = RetrieveRerankPipeline(sample_index, reranker, k=10, top_n=3).run(QUERY)
    hits = sample_index.search(QUERY, k=10)
    assert [h.id for h in result.retrieved] == [h.id for h in hits]
    ranked = reranker.rank(QUERY, [h.text for h in hits], top_n=3, first_stage_scores=[h.score for h in hits])
    assert [r.hit.id for r in result.reranked] == [hits[r.corpus_id].id for r in ranked]
    assert [r.rerank_position for r in result.reranked] == [1, 2, 3]
    assert [r.retrieval_position for r in result.reranked] == [r.corpus_id + 1 for r in ranked]
    context = result.context(max_tokens=1000)
    assert [c.source for c in context.included] == [r.hit.metadata["source"] for r in result.reranked]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"k": float("nan")}, "k must be a positive integer, got nan"),
        ({"k": 2.5}, "k must be a positive integer, got 2.5"),
        ({"top_n": True}, "top_n must be a positive integer, got True"),
        ({"top_n": "5"}, "top_n must be a positive integer, got '5'"),
        ({"mode": "sparse"}, r"mode must be one of \['dense', 'bm25', 'hybrid'\] or None, got 'sparse'"),
        ({"mode": "bm25"}, "mode='bm25' needs the BM25 index: build the index with lexical=True"),
        ({"mode": "hybrid"}, "mode='hybrid' needs the BM25 index"),
    ],
)
def test_bad_options_are_refused_when_built_not_at_the_first_query(sample_index, reranker, options, message):
    with pytest.raises(ValueError, match=message):
        RetrieveRerankPipeline(sample_index, reranker, **options)
