"""Training pairs: read, write, mine hard negatives, derive pairs from corpora on disk.

Hard negatives are mined with our FAISS retriever; self-supervised or labelled pairs are derived from
corpora that are on disk.

Nothing here imports a training library; the trainer lives in :mod:`ce_rerank_plugins.training.trainer`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ce_rerank_plugins.evaluation.beir import document_text

if TYPE_CHECKING:
    from ce_rerank_plugins.evaluation.beir import BeirDataset
    from ce_rerank_plugins.retrieval.faiss_index import FaissIndex


@dataclass(frozen=True)
class LabeledPair:
    """One training example: a (query, passage) pair and its label (float score or class index)."""

    text_a: str
    text_b: str
    label: float


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.GzipFile(path, mode.replace("t", "")), encoding="utf-8")
    return path.open(mode, encoding="utf-8")


def read_pairs(path: str | os.PathLike[str]) -> list[LabeledPair]:
    """Read pairs from JSON Lines or TSV.

    JSON Lines rows hold ``text_a``/``text_b``/``label`` or ``query``/``passage``/``label``, optionally
    gzipped; a TSV has the columns ``text_a  text_b  label`` (a header row is skipped).
    """
    path = Path(path)
    if not path.is_file():
        msg = f"pairs file {str(path)!r} does not exist"
        raise FileNotFoundError(msg)
    pairs: list[LabeledPair] = []
    is_tsv = path.name.endswith((".tsv", ".tsv.gz"))
    with _open_text(path, "rt") as fh:
        if is_tsv:
            for line_no, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
                if line_no == 1 and row and row[-1].strip().lower() in {"label", "score"}:
                    continue
                if len(row) != 3:
                    msg = f"{path}:{line_no}: expected 3 tab-separated columns, got {len(row)}"
                    raise ValueError(msg)
                pairs.append(LabeledPair(row[0], row[1], _label(row[2], path, line_no)))
        else:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    a = record.get("text_a", record.get("query"))
                    b = record.get("text_b", record.get("passage"))
                    label = record["label"]
                except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                    msg = f"{path}:{line_no}: expected a JSON object with text_a, text_b, label"
                    raise ValueError(msg) from exc
                if not isinstance(a, str) or not isinstance(b, str):
                    msg = f"{path}:{line_no}: text_a and text_b must be strings"
                    raise ValueError(msg)
                pairs.append(LabeledPair(a, b, _label(label, path, line_no)))
    if not pairs:
        msg = f"pairs file {str(path)!r} holds no pairs"
        raise ValueError(msg)
    return pairs


def _label(value: object, path: Path, line_no: int) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        msg = f"{path}:{line_no}: label {value!r} is not a number"
        raise ValueError(msg) from exc


def write_pairs(pairs: Iterable[LabeledPair], path: str | os.PathLike[str]) -> int:
    """Write pairs as JSON Lines (gzipped when the name ends in .gz); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with _open_text(path, "wt") as fh:
        for pair in pairs:
            fh.write(json.dumps({"text_a": pair.text_a, "text_b": pair.text_b, "label": pair.label}) + "\n")
            count += 1
    return count


def mine_hard_negatives(
    index: FaissIndex,
    queries: Mapping[str, str],
    positives: Mapping[str, Collection[str]],
    *,
    depth: int = 50,
    num_negatives: int = 4,
    skip_top: int = 0,
    seed: int = 0,
) -> dict[str, list[str]]:
    """For each query, sample ``num_negatives`` doc ids from the retriever's top ``depth``.

    Positives are never sampled. ``skip_top`` ignores the very best candidates (often unjudged positives).

    Returns:
        query id -> negative doc ids (never a positive of that query).
    """
    if depth < 1 or num_negatives < 1 or skip_top < 0:
        msg = "depth and num_negatives must be >= 1 and skip_top >= 0"
        raise ValueError(msg)
    rng = random.Random(seed)
    qids = list(queries)
    hits = index.search_many([queries[q] for q in qids], k=depth) if qids else []
    negatives: dict[str, list[str]] = {}
    for qid, row in zip(qids, hits, strict=True):
        known = set(positives.get(qid, ()))
        candidates = [hit.id for hit in row[skip_top:] if hit.id not in known]
        negatives[qid] = rng.sample(candidates, min(num_negatives, len(candidates)))
    return negatives


def beir_training_pairs(
    dataset: BeirDataset,
    index: FaissIndex,
    *,
    depth: int = 50,
    num_negatives: int = 4,
    skip_top: int = 0,
    seed: int = 0,
) -> list[LabeledPair]:
    """Positives from the qrels (label 1) and mined hard negatives (label 0) for every judged query."""
    positives = {qid: set(docs) for qid, docs in dataset.qrels.items()}
    negatives = mine_hard_negatives(
        index, dataset.queries, positives, depth=depth, num_negatives=num_negatives, skip_top=skip_top, seed=seed
    )
    pairs: list[LabeledPair] = []
    for qid, query in dataset.queries.items():
        pairs.extend(LabeledPair(query, dataset.doc_text(d), 1.0) for d in sorted(positives[qid]))
        pairs.extend(LabeledPair(query, dataset.doc_text(d), 0.0) for d in negatives[qid])
    return pairs


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A light sentence splitter (good enough to draw pseudo-queries from abstracts and passages)."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def inverse_cloze_pairs(
    corpus: Mapping[str, Mapping[str, str]],
    index: FaissIndex,
    *,
    queries_per_doc: int = 1,
    min_words: int = 6,
    depth: int = 30,
    num_negatives: int = 3,
    seed: int = 0,
) -> list[LabeledPair]:
    """Self-supervised pairs (inverse cloze task).

    A sentence of a document is the query, the document without that sentence is its positive, and
    mined documents (never the source) are negatives.
    """
    rng = random.Random(seed)
    queries: dict[str, str] = {}
    rest: dict[str, str] = {}
    source: dict[str, str] = {}
    for doc_id, doc in corpus.items():
        sentences = split_sentences(doc.get("text", ""))
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
        if len(sentences) < 3 or not usable:
            continue
        for n, i in enumerate(rng.sample(usable, min(queries_per_doc, len(usable)))):
            qid = f"{doc_id}#{n}"
            queries[qid] = sentences[i]
            body = " ".join(s for j, s in enumerate(sentences) if j != i)
            title = doc.get("title", "")
            rest[qid] = f"{title} {body}".strip()
            source[qid] = doc_id
    negatives = mine_hard_negatives(
        index, queries, {q: {source[q]} for q in queries}, depth=depth, num_negatives=num_negatives, seed=seed
    )
    pairs: list[LabeledPair] = []
    for qid, query in queries.items():
        pairs.append(LabeledPair(query, rest[qid], 1.0))
        for neg in negatives[qid]:
            pairs.append(LabeledPair(query, document_text(corpus[neg]), 0.0))
    return pairs


CLIMATE_FEVER_LABELS = ("REFUTES", "SUPPORTS", "NOT_ENOUGH_INFO")
"""Climate-FEVER's claim labels, in the order ``climate_fever_pairs(classes=True)`` numbers them."""


def climate_fever_pairs(path: str | os.PathLike[str], *, classes: bool = False) -> list[LabeledPair]:
    """(claim, evidence) pairs from Climate-FEVER JSON Lines.

    Args:
        path: The Climate-FEVER ``.jsonl`` file.
        classes: False: binary relevance (SUPPORTS/REFUTES evidence = 1, NOT_ENOUGH_INFO = 0).
            True: the 3-class label index in ``CLIMATE_FEVER_LABELS``.
    """
    pairs = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            for ev in record["evidences"]:
                label = ev["evidence_label"]
                if label not in CLIMATE_FEVER_LABELS:
                    continue
                value = float(CLIMATE_FEVER_LABELS.index(label)) if classes else float(label != "NOT_ENOUGH_INFO")
                pairs.append(LabeledPair(record["claim"], ev["evidence"], value))
    return pairs


def reranking_samples(pairs: Sequence[LabeledPair]) -> list[dict[str, str | list[str]]]:
    """Group pairs by query into the samples of sentence-transformers' reranking evaluator.

    Each sample has ``query``, a ``positive`` list and a ``documents`` list; queries without a positive,
    or with a single document (nothing to rank), are left out.
    """
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for p in pairs:
        pos, docs = grouped.setdefault(p.text_a, ([], []))
        docs.append(p.text_b)
        if p.label > 0.5:
            pos.append(p.text_b)
    return [
        {"query": q, "positive": pos, "documents": docs} for q, (pos, docs) in grouped.items() if pos and len(docs) > 1
    ]
