"""Reading files for an index: every record kept in order, and a broken or ambiguous one named by place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ce_rerank_plugins.retrieval.ingest import collect_files, read_records


def _records(*paths: Path):
    return read_records(collect_files(list(paths)))


def test_jsonl_rows_become_records_with_title_metadata_and_position(tmp_path):
    rows = [
        {"id": "r1", "title": "Lyon", "text": "A city in France.", "lang": "en"},
        {"_id": "r2", "text": "Second row."},
        {"text": "No id."},
    ]
    path = tmp_path / "notes.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n" + json.dumps(rows[2]) + "\n")
    records = _records(path)
    assert [(r.id, r.text, r.position) for r in records] == [
        ("r1", "Lyon A city in France.", 1),
        ("r2", "Second row.", 3),
        ("notes.jsonl:4", "No id.", 4),
    ]
    assert records[0].metadata == {"lang": "en"} and records[0].source == "notes.jsonl"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "a", "text": "caf\xe9"}\n', r"notes.jsonl:1 is not UTF-8 text"),
        (b'{"id": "a", "text": "ok"}\n{"id": "b"\n', r"notes.jsonl:2 is not valid JSON"),
        (b'["a", "list"]\n', r"notes.jsonl:1: each line needs a string field 'text'"),
        (b'{"id": "a", "text": 3}\n', r"notes.jsonl:1: each line needs a string field 'text'"),
        (
            b'{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n',
            r"notes.jsonl:2: the id 'a' .* at \S*notes.jsonl:1",
        ),
    ],
)
def test_a_broken_or_repeated_row_is_named_by_file_and_line(tmp_path, content, message):
    path = tmp_path / "notes.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        _records(path)


def test_an_id_repeated_across_files_names_both(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "7", "text": "first"}) + "\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"id": "7", "text": "second"}) + "\n")
    with pytest.raises(ValueError, match=r"b.jsonl:1: the id '7' was already given to the record at \S*a.jsonl:1"):
        _records(tmp_path)


def test_text_files_are_read_whole_and_undecodable_bytes_replaced(tmp_path):
    (tmp_path / "a.md").write_bytes(b"# Caf\xe9\nOpen daily.")
    (records,) = _records(tmp_path)
    assert (records.id, records.text, records.position) == ("a.md", "# Caf\ufffd\nOpen daily.", None)
