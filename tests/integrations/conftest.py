"""Fixtures for the adapter tests: a FAISS index over the bundled sample corpus."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from ce_rerank_plugins.retrieval import FaissIndex


@pytest.fixture(scope="session")
def sample_records() -> list[dict]:
    text = (files("ce_rerank_plugins") / "data" / "sample_corpus.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sample_index(sample_records) -> FaissIndex:
    index = FaissIndex()
    index.add(
        [r["text"] for r in sample_records],
        ids=[r["id"] for r in sample_records],
        metadatas=[{"source": r["source"], "chunk_index": r["chunk_index"]} for r in sample_records],
    )
    return index
