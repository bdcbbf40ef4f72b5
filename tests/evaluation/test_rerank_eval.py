"""Evaluation rows: rerank latency is a measurement or nothing, never the retrieval's figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.evaluation import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import build_index, evaluate_reranking, plot_report

DOCS = {
    "a": "About 520,000 people live in Lyon.",
    "b": "Lyon has two rivers, the Rhone and the Saone.",
    "c": "Coffee is best brewed at 92 to 96 degrees Celsius.",
    "d": "A short nap after lunch helps some people.",
}


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    queries = {"q1": "How many people live in Lyon?", "q2": "What temperature for coffee?"}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta\t1\nq2\tc\t1\n")
    return load_beir(root)


@pytest.mark.parametrize("timed", [0, 2])
def test_rerank_latency_is_measured_or_none(dataset, tiny_ce_path, tmp_path, timed):
    index = build_index(dataset, show_progress=False)
    reranker = CrossEncoderReranker(tiny_ce_path, precision="fp32")
    report = evaluate_reranking(dataset, index, reranker, depths=[2, 4], latency_queries=timed, show_progress=False)
    first, *reranked = report.stages
    assert first.name == "retrieval" and first.latency_ms_median is not None and first.latency_ms_median > 0
    assert [s.name for s in reranked] == ["rerank@2", "rerank@4"]
    for stage in reranked:
        if timed:
            assert stage.latency_ms_median is not None and stage.latency_ms_median > first.latency_ms_median
        else:  # not timed: nothing, rather than the retrieval's figure passed off as the pipeline's
            assert stage.latency_ms_median is None and stage.latency_ms_p95 is None
    assert plot_report(report, Path(tmp_path) / "plot.png").read_bytes().startswith(b"\x89PNG")
