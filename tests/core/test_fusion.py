"""Fusion of cross-encoder and first-stage scores: hand-computed examples, and how rank() applies it."""

from __future__ import annotations

import numpy as np
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.core._fusion import applied_fusion, check_first_stage, check_fusion, fuse_scores

CE = np.array([0.9, 0.1, 0.5])
FIRST = np.array([0.2, 0.8, 0.5])


def test_weighted_minmax_by_hand():
    # minmax(CE) = [1, 0, 0.5]; minmax(FIRST) = [0, 1, 0.5]
    fused = fuse_scores(CE, FIRST, fusion="weighted", weight=0.25)
    assert fused == pytest.approx([0.25 * 1 + 0.75 * 0, 0.25 * 0 + 0.75 * 1, 0.5])
    assert fuse_scores(CE, FIRST, fusion="weighted", weight=1.0) == pytest.approx([1, 0, 0.5])
    assert fuse_scores(CE, FIRST, fusion="weighted", weight=0.0) == pytest.approx([0, 1, 0.5])


def test_rrf_by_hand():
    # ranks CE = [1, 3, 2]; ranks FIRST = [3, 1, 2]; k = 60
    fused = fuse_scores(CE, FIRST, fusion="rrf", weight=0.5)
    assert fused == pytest.approx([0.5 / 61 + 0.5 / 63, 0.5 / 63 + 0.5 / 61, 0.5 / 62 + 0.5 / 62])


def test_without_first_stage_scores_nothing_is_fused():
    """The input order is no retrieval score: the cross-encoder's scores stand alone."""
    for method in ("weighted", "rrf"):
        assert fuse_scores(CE, None, fusion=method, weight=0.1) == pytest.approx(CE)
        assert applied_fusion(method, None) == "none"
        assert applied_fusion(method, FIRST) == method


def test_the_default_model_puts_the_best_scored_passage_first_without_retrieval_scores():
    """A passage at the bottom of a list reaches #1 when the cross-encoder scores it highest (the default fusion)."""
    from ce_rerank_plugins.core import default_model

    reranker = CrossEncoderReranker(default_model())
    docs = [
        "Espresso uses about nine bars of pressure.",
        "Lyon is famous for its bouchons.",
        "Lyon counted roughly 522,000 residents.",
    ]
    query = "How many people live in Lyon?"
    scores = reranker.predict([(query, d) for d in docs])
    ranked = reranker.rank(query, docs)
    assert [r.corpus_id for r in ranked] == sorted(range(3), key=lambda i: -scores[i])
    assert [r.score for r in ranked] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-6)
    assert {r.fusion for r in ranked} == {"none"}
    with_scores = reranker.rank(query, docs, first_stage_scores=[0.3, 0.2, 0.1])
    assert {r.fusion for r in with_scores} == {reranker.fusion}


def test_constant_scores_and_none():
    assert fuse_scores(np.array([0.3, 0.3]), np.array([1.0, 2.0]), fusion="weighted", weight=0.5) == pytest.approx(
        [0.5, 1.0]
    )
    assert fuse_scores(CE, FIRST, fusion="none", weight=0.5) == pytest.approx(CE)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: check_fusion("magic", 0.5), ValueError, "fusion must be one of"),
        (lambda: check_fusion("rrf", 1.5), ValueError, "fusion_weight must be in \\[0, 1\\]"),
        (lambda: check_fusion("rrf", float("nan")), ValueError, "fusion_weight must be in"),
        (lambda: check_fusion("rrf", "0.5"), TypeError, "fusion_weight must be a number"),
        (lambda: check_first_stage([1.0], 2), ValueError, "got 1 first_stage_scores for 2 documents"),
        (lambda: check_first_stage("12", 2), TypeError, "must be a list of numbers"),
        (lambda: check_first_stage([1.0, float("nan")], 2), ValueError, "must be finite"),
        (lambda: check_first_stage([1.0, "a"], 2), TypeError, "must be a list of numbers"),
    ],
)
def test_bad_fusion_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_rank_sorts_by_the_fused_score_and_keeps_both_scores(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, fusion="none")
    docs = ["alpha beta", "gamma", "delta epsilon zeta"]
    plain = reranker.rank("query", docs)
    first = [0.1, 0.9, 0.5]
    fused = reranker.rank("query", docs, first_stage_scores=first, fusion="weighted", fusion_weight=0.0)
    assert [r.corpus_id for r in fused] == [1, 2, 0]  # weight 0: the first stage's order
    by_id = {r.corpus_id: r for r in plain}
    for r in fused:
        assert r.cross_encoder_score == pytest.approx(by_id[r.corpus_id].score)
        assert r.first_stage_score == first[r.corpus_id]
    # The threshold applies to the cross-encoder's own score, whatever the fused order.
    cut = sorted(r.score for r in plain)[1]
    kept = reranker.rank("query", docs, first_stage_scores=first, fusion="rrf", score_threshold=cut)
    assert {r.corpus_id for r in kept} == {r.corpus_id for r in plain if r.score >= cut}
    with pytest.raises(ValueError, match="got 2 first_stage_scores for 3 documents"):
        reranker.rank("query", docs, first_stage_scores=[1.0, 2.0])
