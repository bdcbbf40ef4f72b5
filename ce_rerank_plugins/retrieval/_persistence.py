"""Saving and loading a ``FaissIndex`` without pickle.

A saved index is a directory of three files:

- ``index.faiss``: the FAISS index (``faiss.write_index``), vectors and graph, no Python objects;
- ``documents.jsonl``: one JSON object per document (``faiss_id``, ``id``, ``text``, ``metadata``);
- ``manifest.json``: format version, embedding model id, dimension, normalisation, index type and
  parameters, document count, and the SHA-256 of the two other files.

Writes go to a temporary sibling directory that is renamed into place, so a crash mid-save leaves
the previous index as it was. Loading checks everything the manifest states and raises
``IndexFormatError`` naming what does not match.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ce_rerank_plugins._files import sha256_file
from ce_rerank_plugins.errors import IndexFormatError
from ce_rerank_plugins.retrieval._embedder import Embedder, embedder_id

if TYPE_CHECKING:
    from ce_rerank_plugins.retrieval.faiss_index import FaissIndex

logger = logging.getLogger(__name__)

FORMAT_NAME = "ce-rerank-faiss-index"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
DOCUMENTS_FILE = "documents.jsonl"
MANIFEST_FILE = "manifest.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(index: FaissIndex, tmp: Path) -> None:
    import faiss

    faiss.write_index(
        index._faiss_index if index._faiss_index is not None else index._new_index(0), str(tmp / INDEX_FILE)
    )
    with (tmp / DOCUMENTS_FILE).open("w", encoding="utf-8") as fh:
        for int_id, doc in index._docs.items():
            record = {"faiss_id": int_id, "id": doc.id, "text": doc.text, "metadata": dict(doc.metadata)}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "embedding_model": index.embedder.id,
        "dimension": index.dimension,
        "normalized": True,
        "metric": "inner_product",
        "index_type": index.index_type,
        "index_params": index.params,
        "count": len(index),
        "next_id": index._next_id,
        "deleted_faiss_ids": sorted(index._deleted),
        "checksums": {name: sha256_file(tmp / name) for name in (INDEX_FILE, DOCUMENTS_FILE)},
    }
    with (tmp / MANIFEST_FILE).open("w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())


def save_index(index: FaissIndex, directory: Path) -> Path:
    """Write ``index`` to ``directory`` atomically; returns the directory."""
    if index.index_type == "ivf" and index._faiss_index is None:
        raise ValueError("an empty IVF index has not been trained yet; add documents before saving it")
    directory = directory.expanduser()
    if directory.exists() and not directory.is_dir():
        raise IndexFormatError(f"cannot save an index to {str(directory)!r}: it is a file, not a directory")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        _write_files(index, tmp)
        _fsync_dir(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            old.rmdir()
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        _fsync_dir(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved %d documents to %s", len(index), directory)
    return directory


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a saved index, checked for presence, format and version."""
    if not directory.is_dir():
        raise IndexFormatError(f"no saved index at {str(directory)!r}: the directory does not exist")
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise IndexFormatError(f"{str(directory)!r} is not a saved index: {MANIFEST_FILE} is missing")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{str(path)!r} is corrupt: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{str(path)!r} is not a {FORMAT_NAME} manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"the index at {str(directory)!r} has format version {version!r}, newer than this library reads "
            f"({FORMAT_VERSION}); upgrade ce-rerank-plugins"
        )
    return manifest


def load_index(directory: Path, *, embedder: Embedder | str | os.PathLike[str] | None = None) -> FaissIndex:
    """Load and verify a saved index; ``embedder`` (default: the one in the manifest) must match it."""
    import faiss

    from ce_rerank_plugins.retrieval.faiss_index import Document, FaissIndex

    directory = directory.expanduser()
    manifest = read_manifest(directory)
    for name in (INDEX_FILE, DOCUMENTS_FILE):
        path = directory / name
        if not path.is_file():
            raise IndexFormatError(f"the index at {str(directory)!r} is incomplete: {name} is missing")
        expected = manifest["checksums"].get(name)
        if sha256_file(path) != expected:
            raise IndexFormatError(f"the index at {str(directory)!r} is corrupt: {name} does not match its checksum")
    stored_model = manifest["embedding_model"]
    if embedder is None:
        embedder = Embedder(None if stored_model == embedder_id(None) else stored_model)
    elif not isinstance(embedder, Embedder):
        embedder = Embedder(embedder)
    if embedder.id != stored_model:
        raise IndexFormatError(
            f"the index at {str(directory)!r} was built with embedding model {stored_model!r}, "
            f"but {embedder.id!r} was given; queries would not match its vectors"
        )
    if embedder.dimension != manifest["dimension"]:
        raise IndexFormatError(
            f"the index at {str(directory)!r} has dimension {manifest['dimension']}, "
            f"but the embedder produces {embedder.dimension}"
        )
    faiss_index = faiss.read_index(str(directory / INDEX_FILE))
    if faiss_index.d != manifest["dimension"]:
        raise IndexFormatError(
            f"{INDEX_FILE} has dimension {faiss_index.d} but the manifest says {manifest['dimension']}"
        )
    params = manifest["index_params"]
    index = FaissIndex(
        embedder,
        index_type=manifest["index_type"],
        hnsw_m=params["hnsw_m"],
        ef_search=params["ef_search"],
        ef_construction=params["ef_construction"],
        nlist=params["nlist"],
        nprobe=params["nprobe"],
    )
    index._faiss_index = faiss_index
    with (directory / DOCUMENTS_FILE).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                record = json.loads(line)
                doc = Document(str(record["id"]), record["text"], record.get("metadata") or {})
                int_id = int(record["faiss_id"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise IndexFormatError(f"{DOCUMENTS_FILE} line {line_no} is malformed: {exc}") from exc
            index._docs[int_id] = doc
            index._ids[doc.id] = int_id
    index._next_id = int(manifest["next_id"])
    index._deleted = {int(i) for i in manifest.get("deleted_faiss_ids", [])}
    if len(index) != manifest["count"] or faiss_index.ntotal - len(index._deleted) != manifest["count"]:
        raise IndexFormatError(
            f"the index at {str(directory)!r} is inconsistent: manifest count {manifest['count']}, "
            f"{len(index)} documents, {faiss_index.ntotal} vectors"
        )
    return index
