"""The BM25 index beside FAISS: modes, fusion, filters, add/delete in step, persistence and corruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ce_rerank_plugins import IndexFormatError
from ce_rerank_plugins.retrieval import FaissIndex, SearchHit

TEXTS = {
    "lyon": "Lyon had about 522,000 inhabitants in the city proper at the last census.",
    "tower": "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "photo": "Photosynthesis converts light energy into chemical energy in plants.",
    "mito": "Mitochondria produce most of the chemical energy that powers a cell.",
    "rivers": "The Rhône and the Saône rivers meet in the centre of Lyon.",
    "zx81": "The ZX81 home computer shipped with one kilobyte of memory.",
}


@pytest.fixture
def index() -> FaissIndex:
    ix = FaissIndex(lexical=True)
    ix.add(list(TEXTS.values()), ids=list(TEXTS), metadatas=[{"topic": k[:2]} for k in TEXTS])
    return ix


def test_bm25_finds_exact_rare_terms_and_ranks_by_bm25(index):
    hits = index.search("ZX81 kilobyte", k=3, mode="bm25")
    assert [h.id for h in hits] == ["zx81"]  # only documents with a matching term are returned
    assert hits[0].score > 0
    energy = index.search("chemical energy", k=5, mode="bm25")
    assert {h.id for h in energy} == {"photo", "mito"}


def test_hybrid_fuses_the_dense_and_bm25_lists(index):
    q = "How many people live in Lyon?"
    dense, lexical = index.search(q, k=100, mode="dense"), index.search(q, k=100, mode="bm25")
    hybrid = index.search(q, k=6, mode="hybrid")
    assert [(h.id, h.score) for h in hybrid] == [(h.id, h.score) for h in index._fuse(dense, lexical, 6)]
    assert {h.id for h in hybrid} == {h.id for h in dense} | {h.id for h in lexical}
    assert all(0.0 <= h.score <= 1.0 for h in hybrid)  # weighted min-max fusion, weights sum to 1
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_weighted_and_rrf_fusion_by_hand(index):
    dense = [SearchHit("a", 0.9, "", {}), SearchHit("b", 0.5, "", {}), SearchHit("c", 0.1, "", {})]
    lexical = [SearchHit("c", 8.0, "", {}), SearchHit("d", 2.0, "", {})]
    index.hybrid_fusion, index.hybrid_weight = "weighted", 0.5
    fused = {h.id: h.score for h in index._fuse(dense, lexical, 10)}
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    index.hybrid_fusion = "rrf"
    fused = {h.id: h.score for h in index._fuse(dense, lexical, 10)}
    assert fused == pytest.approx({"a": 0.5 / 61, "b": 0.5 / 62, "c": 0.5 / 63 + 0.5 / 61, "d": 0.5 / 62})


def test_filters_apply_to_both_retrievers(index):
    for mode in ("bm25", "hybrid"):
        hits = index.search("energy Lyon", k=5, mode=mode, where={"topic": "ly"})
        assert {h.id for h in hits} == {"lyon"}


def test_add_and_delete_keep_both_indexes_in_step(index):
    index.delete(["zx81"])
    assert index.search("ZX81 kilobyte", k=3, mode="bm25") == []
    assert all(h.id != "zx81" for h in index.search("ZX81 kilobyte", k=6, mode="hybrid"))
    index.add(["The ZX81 was sold as a kit."], ids=["kit"])
    assert [h.id for h in index.search("ZX81", k=3, mode="bm25")] == ["kit"]
    assert len(index) == len(TEXTS)


def test_modes_need_the_lexical_index():
    plain = FaissIndex()
    plain.add(["text"])
    with pytest.raises(ValueError, match="mode='bm25' needs the BM25 index"):
        plain.search("text", mode="bm25")
    with pytest.raises(ValueError, match="mode='hybrid' needs the BM25 index: pass lexical=True"):
        FaissIndex(mode="hybrid")
    with pytest.raises(ValueError, match="mode must be one of"):
        plain.search("text", mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hybrid_weight must be a number in \\[0, 1\\]"):
        FaissIndex(lexical=True, hybrid_weight=2)


def _gen(directory: Path) -> Path:
    return directory / (directory / "CURRENT").read_text().strip()


def test_round_trip_keeps_the_lexical_index_and_the_default_mode(index, tmp_path):
    index.mode = "hybrid"
    directory = index.save(tmp_path / "ix")
    assert {"lexical.npz", "lexical.json"} <= {p.name for p in _gen(directory).iterdir()}
    loaded = FaissIndex.load(directory)
    assert loaded.lexical and loaded.mode == "hybrid"
    for mode in ("dense", "bm25", "hybrid"):
        for q in ("ZX81 memory", "chemical energy in cells", "Lyon rivers"):
            got = [(h.id, round(h.score, 5)) for h in loaded.search(q, k=4, mode=mode)]
            assert got == [(h.id, round(h.score, 5)) for h in index.search(q, k=4, mode=mode)]
    loaded.add(["Lyon silk weavers were called canuts."], ids=["canuts"])
    assert loaded.search("canuts", k=1, mode="bm25")[0].id == "canuts"


@pytest.mark.parametrize("name", ["lexical.npz", "lexical.json"])
@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_damaged_lexical_file_is_detected(index, tmp_path, name, damage):
    directory = index.save(tmp_path / "ix")
    path = _gen(directory) / name
    if damage == "delete":
        path.unlink()
    else:
        data = path.read_bytes()
        path.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    with pytest.raises(IndexFormatError, match=f"{name} (does not match its checksum|is missing)"):
        FaissIndex.load(directory)


def test_a_lexical_index_that_does_not_cover_the_documents_is_refused(index, tmp_path):
    from ce_rerank_plugins.retrieval import _persistence

    directory = index.save(tmp_path / "ix")
    gen = _gen(directory)
    meta = json.loads((gen / "lexical.json").read_text())
    meta["tokens"].pop(next(iter(meta["tokens"])))
    data = json.dumps(meta).encode()
    (gen / "lexical.json").write_bytes(data)
    manifest = json.loads((gen / "manifest.json").read_text())
    import hashlib

    manifest["checksums"]["lexical.json"] = hashlib.sha256(data).hexdigest()
    manifest["manifest_sha256"] = _persistence.manifest_digest(manifest)
    (gen / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="lexical index .* does not cover exactly the stored documents"):
        FaissIndex.load(directory)
