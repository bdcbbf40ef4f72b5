"""Reading BEIR-layout datasets: what is judged is what is evaluated, and a broken file is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ce_rerank_plugins.evaluation import load_beir


def _dataset(root: Path, queries: dict[str, str], qrels: str) -> Path:
    root.mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "text": f"text {d}"}) + "\n" for d in "abc"))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_only_judged_queries_with_positive_grades_are_kept(tmp_path):
    root = _dataset(tmp_path / "d", {"q1": "one", "q2": "two", "q3": "unjudged"}, "q1\ta\t2\nq1\tb\t0\n\nq2\tc\t1\n")
    data = load_beir(root)
    assert data.queries == {"q1": "one", "q2": "two"}
    assert data.qrels == {"q1": {"a": 2}, "q2": {"c": 1}}


@pytest.mark.parametrize(
    ("queries", "qrels", "message"),
    [
        (
            {"q1": "one"},
            "q1\ta\t1\nq9\tb\t1\n",
            r"1 queries judged in qrels/test.tsv are not in queries.jsonl: \['q9'\]",
        ),
        ({"q1": "one", "q2": "  "}, "q1\ta\t1\nq2\tb\t1\n", r"have no text in queries.jsonl: \['q2'\]"),
        ({"q1": "one", "q2": None}, "q1\ta\t1\nq2\tb\t1\n", r"1 queries judged .* have no text .*\['q2'\]"),
        ({"q1": "one"}, "q1\ta\n", r"test.tsv:2 must be 'query-id<TAB>corpus-id<TAB>integer score'"),
        ({"q1": "one"}, "q1\ta\t1\nq1\tb\thigh\n", r"test.tsv:3 must be"),
        ({"q1": "one"}, "q1\ta\tnan\n", r"test.tsv:2 must be"),
    ],
)
def test_a_judged_query_that_cannot_be_evaluated_is_named_not_dropped(tmp_path, queries, qrels, message):
    root = _dataset(tmp_path / "d", queries, qrels)
    with pytest.raises(ValueError, match=message):
        load_beir(root)
