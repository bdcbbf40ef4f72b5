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


@pytest.mark.parametrize(
    ("file", "lines", "message"),
    [
        (
            "queries.jsonl",
            ['{"text": "no id"}'],
            r"queries.jsonl:1 must be a JSON object with a non-empty string '_id'",
        ),
        ("queries.jsonl", ['{"_id": "q1", "text": "one"}', '["q2", "two"]'], r"queries.jsonl:2 must be a JSON object"),
        ("queries.jsonl", ['{"_id": " ", "text": "blank id"}'], r"queries.jsonl:1 must be a JSON object"),
        ("corpus.jsonl", ['{"_id": null, "text": "x"}'], r"corpus.jsonl:1 must be a JSON object"),
        (
            "corpus.jsonl",
            ['{"_id": "a", "text": "first"}', '{"_id": "b", "text": "b"}', '{"_id": "a", "text": "second"}'],
            r"corpus.jsonl:3 repeats the _id 'a' of line 1",
        ),
        (
            "queries.jsonl",
            ['{"_id": "q1", "text": "one"}', '{"_id": "q1", "text": "one again"}'],
            r"queries.jsonl:2 repeats the _id 'q1' of line 1",
        ),
    ],
)
def test_a_row_without_an_id_or_with_a_repeated_one_is_named_by_line(tmp_path, file, lines, message):
    root = _dataset(tmp_path / "d", {"q1": "one"}, "q1\ta\t1\n")
    (root / file).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_beir(root)


def test_numeric_ids_are_read_as_strings(tmp_path):
    root = _dataset(tmp_path / "d", {"q1": "one"}, "7\t3\t1\n")
    (root / "corpus.jsonl").write_text('{"_id": 3, "text": "three"}\n')
    (root / "queries.jsonl").write_text('{"_id": 7, "text": "seven"}\n')
    data = load_beir(root)
    assert data.queries == {"7": "seven"}
    assert data.doc_text("3") == "three"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "caf\xe9"}\n', r"corpus.jsonl:2 is not UTF-8 text"),
        (b'{"_id": "a", "text": "fine"}\n\n{"_id": "b", "text"\n', r"corpus.jsonl:3 is not valid JSON"),
    ],
)
def test_a_line_that_is_not_utf8_or_not_json_is_named_by_line(tmp_path, content, message):
    root = _dataset(tmp_path / "d", {"q1": "one"}, "q1\ta\t1\n")
    (root / "corpus.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_beir(root)
