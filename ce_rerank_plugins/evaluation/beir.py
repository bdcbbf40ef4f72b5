"""Reading IR datasets in BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ce_rerank_plugins._files import json_lines


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR-layout dataset: documents, queries and graded relevance judgements of one split.

    Attributes:
        corpus: doc id -> ``{"title": ..., "text": ...}``.
        queries: query id -> text (only the judged queries of the split).
        qrels: query id -> {doc id: grade}, grades > 0 only.
    """

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def doc_text(self, doc_id: str) -> str:
        """Title and text joined as BEIR embeds them (see :func:`document_text`)."""
        return document_text(self.corpus[doc_id])


def document_text(doc: Mapping[str, str]) -> str:
    """A BEIR document's title and text joined as BEIR embeds them (title first when present)."""
    title = doc.get("title") or ""
    return f"{title} {doc['text']}".strip() if title else doc["text"]


def _numbered_rows(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Each non-blank line of a dataset's JSON Lines file (see :func:`json_lines`); a missing file is named."""
    if not path.is_file():
        msg = f"{path.name} is missing from the dataset directory {str(path.parent)!r}"
        raise FileNotFoundError(msg)
    yield from json_lines(path)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """The rows of a BEIR JSON Lines file (``corpus.jsonl``, ``queries.jsonl``); a missing file is named."""
    return [row for _, _, row in _numbered_rows(path)]


def read_records(path: Path) -> dict[str, dict[str, object]]:
    """The rows of a BEIR ``corpus.jsonl`` or ``queries.jsonl`` by their ``_id``.

    A row that is not an object, has no ``_id`` (or an empty one), or repeats an earlier row's ``_id`` is
    named by line: a repeated id would otherwise keep only its last row, silently dropping the others.
    """
    records: dict[str, dict[str, object]] = {}
    first_line: dict[str, int] = {}
    for line_no, line, row in _numbered_rows(path):
        raw_id = row.get("_id") if isinstance(row, dict) else None
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
            msg = f"{path}:{line_no} must be a JSON object with a non-empty string '_id', got {line.strip()!r:.80}"
            raise ValueError(msg)
        key = str(raw_id)
        if key in records:
            msg = f"{path}:{line_no} repeats the _id {key!r} of line {first_line[key]}"
            raise ValueError(msg)
        records[key] = row
        first_line[key] = line_no
    return records


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query-id corpus-id score`` TSV (with header) to {query id: {doc id: grade}}, positive grades only."""
    if not path.is_file():
        msg = f"qrels file {str(path)!r} is missing"
        raise FileNotFoundError(msg)
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None or header[:2] != ["query-id", "corpus-id"]:
            msg = f"{str(path)!r} must start with the header 'query-id\\tcorpus-id\\tscore'"
            raise ValueError(msg)
        for line_no, row in enumerate(reader, 2):
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            try:
                grade = int(float(row[2])) if len(row) >= 3 else None
            except (ValueError, OverflowError):  # "high", NaN, infinity
                grade = None
            if grade is None:
                msg = f"{path}:{line_no} must be 'query-id<TAB>corpus-id<TAB>integer score', got {row!r:.80}"
                raise ValueError(msg)
            if grade > 0:
                qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(directory: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load a BEIR-layout dataset; queries are restricted to those judged in ``split``.

    Raises:
        FileNotFoundError: naming the missing file (corpus, queries or qrels of the split).
        ValueError: naming a corpus or queries row without an ``_id`` or with a repeated one, and
            judged queries that ``queries.jsonl`` lacks or leaves blank (a figure over the rest would
            silently cover fewer queries than the split judges).
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        msg = f"dataset directory {str(root)!r} does not exist"
        raise FileNotFoundError(msg)
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    corpus = {
        doc_id: {"title": str(row.get("title") or ""), "text": str(row.get("text") or "")}
        for doc_id, row in read_records(root / "corpus.jsonl").items()
    }
    all_queries: dict[str, str] = {}
    for qid, row in read_records(root / "queries.jsonl").items():
        text = row.get("text")
        all_queries[qid] = text if isinstance(text, str) else ""  # null or missing: blank, named below
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:  # evaluating the rest would report a figure over fewer queries than the split judges
        msg = f"{len(missing)} queries judged in qrels/{split}.tsv are not in queries.jsonl: {missing[:5]}"
        raise ValueError(msg)
    blank = [qid for qid in qrels if not all_queries[qid].strip()]
    if blank:
        msg = f"{len(blank)} queries judged in qrels/{split}.tsv have no text in queries.jsonl: {blank[:5]}"
        raise ValueError(msg)
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(name=root.name, corpus=corpus, queries=queries, qrels=qrels)
