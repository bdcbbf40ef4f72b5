"""Property tests: ranking, the index against a dict model, metadata round trips, context budgets."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.context import ContextChunk, assemble_context
from ce_rerank_plugins.retrieval import Embedder, FaissIndex

WORDS = st.sampled_from(["lyon", "paris", "coffee", "sleep", "river", "tower", "wine", "cell", "energy", "nap"])
TEXTS = st.lists(WORDS, min_size=1, max_size=6).map(" ".join)


@pytest.fixture(scope="module")
def reranker(tiny_ce_path) -> CrossEncoderReranker:
    return CrossEncoderReranker(tiny_ce_path)


@given(docs=st.lists(TEXTS, min_size=0, max_size=8), top_n=st.one_of(st.none(), st.integers(1, 10)))
def test_rank_returns_each_index_once_sorted_and_stable(reranker, docs, top_n):
    ranked = reranker.rank("how many people live in lyon", docs, top_n=top_n)
    ids = [r.corpus_id for r in ranked]
    assert len(ids) == len(set(ids)) == min(len(docs), top_n or len(docs))
    assert all(0 <= i < len(docs) for i in ids)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    for a, b in itertools.pairwise(ranked):  # ties keep input order
        if a.score == b.score:
            assert a.corpus_id < b.corpus_id
    for r in ranked:  # equal texts get equal scores
        assert all(o.score == r.score for o in ranked if docs[o.corpus_id] == docs[r.corpus_id])


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
METADATA = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@given(metadatas=st.lists(METADATA, min_size=1, max_size=3))
@settings(max_examples=20)
def test_accepted_metadata_round_trips_unchanged(embedder, metadatas):
    index = FaissIndex(embedder)
    ids = index.add(["text"] * len(metadatas), metadatas=metadatas)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = FaissIndex.load(index.save(Path(tmp) / "ix"), embedder=embedder)
    for doc_id, meta in zip(ids, metadatas, strict=True):
        assert json.dumps(dict(loaded.get(doc_id).metadata), sort_keys=True) == json.dumps(meta, sort_keys=True)


@given(
    sizes=st.lists(st.integers(0, 40), max_size=8),
    budget=st.integers(1, 120),
    ordering=st.sampled_from(["relevance", "edges"]),
)
def test_assemble_context_never_exceeds_its_budget_and_never_drops_silently(sizes, budget, ordering):
    chunks = [ContextChunk(" ".join(["w"] * n), f"s{i}", i) for i, n in enumerate(sizes)]
    ctx = assemble_context(chunks, max_tokens=budget, ordering=ordering)
    assert ctx.tokens <= budget
    assert sorted(c.citation for c in (*ctx.included, *ctx.dropped)) == sorted(c.citation for c in chunks)
    for chunk in ctx.included:
        assert f"[{chunk.citation}]" in ctx.text


class IndexAgainstADict(RuleBasedStateMachine):
    """Any sequence of add, delete, save and load matches a plain dict of id -> text."""

    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.embedder = Embedder()
        self.index = FaissIndex(self.embedder, index_type=self.index_type, lexical=self.lexical)
        self.model: dict[str, str] = {}
        self.tmp = tempfile.TemporaryDirectory()
        self.counter = 0

    index_type = "flat"
    lexical = False

    @rule(target=ids, text=TEXTS)
    def add(self, text: str) -> str:
        self.counter += 1
        doc_id = f"id{self.counter}"
        self.index.add([text], ids=[doc_id], metadatas=[{"n": self.counter}])
        self.model[doc_id] = text
        return doc_id

    @rule(doc_id=ids)
    def delete(self, doc_id: str) -> None:
        if doc_id in self.model:
            self.index.delete([doc_id, doc_id])
            del self.model[doc_id]
        else:
            with pytest.raises(KeyError, match="unknown document ids"):
                self.index.delete([doc_id])

    @rule()
    def save_and_load(self) -> None:
        directory = Path(self.tmp.name) / "ix"
        self.index = FaissIndex.load(self.index.save(directory), embedder=self.embedder)

    @rule(query=TEXTS)
    def search_returns_only_live_ids(self, query: str) -> None:
        hits = self.index.search(query, k=50)
        assert {h.id for h in hits} == set(self.model)
        assert all(h.text == self.model[h.id] for h in hits)

    @rule(query=TEXTS)
    def lexical_search_returns_only_live_matching_ids(self, query: str) -> None:
        if not self.lexical:
            return
        words = set(query.split())
        hits = self.index.search(query, k=50, mode="bm25")
        assert {h.id for h in hits} == {i for i, t in self.model.items() if words & set(t.split())}
        hybrid = self.index.search(query, k=50, mode="hybrid")
        assert {h.id for h in hybrid} == set(self.model)

    @invariant()
    def same_contents(self) -> None:
        assert sorted(self.index.ids) == sorted(self.model)
        assert len(self.index) == len(self.model)

    def teardown(self) -> None:
        self.tmp.cleanup()


class HnswIndexAgainstADict(IndexAgainstADict):
    index_type = "hnsw"


class HybridIndexAgainstADict(IndexAgainstADict):
    lexical = True


TestFlatIndexAgainstADict = IndexAgainstADict.TestCase
TestFlatIndexAgainstADict.settings = settings(max_examples=12, stateful_step_count=12, deadline=None)
TestHnswIndexAgainstADict = HnswIndexAgainstADict.TestCase
TestHnswIndexAgainstADict.settings = settings(max_examples=8, stateful_step_count=12, deadline=None)
TestHybridIndexAgainstADict = HybridIndexAgainstADict.TestCase
TestHybridIndexAgainstADict.settings = settings(max_examples=10, stateful_step_count=12, deadline=None)
