"""Saving and loading a ``FaissIndex`` without pickle, crash-safe at every instant.

A saved index is a directory of *generations* and one pointer to the live one::

    my-index/
      CURRENT              one line, the live generation's name, e.g. "gen-000007"
      gen-000007/
        index.faiss        the FAISS index (``faiss.serialize_index``): vectors and graph, no Python objects
        documents.jsonl    one JSON object per document (``faiss_id``, ``id``, ``text``, ``metadata``)
        manifest.json      format, embedding model, dimension, index type and parameters, counts,
                           the SHA-256 of every data file, and the SHA-256 of the manifest itself
      .lock                held by a saver (``flock``), so two savers never interleave

Why this shape:

- A save writes a whole new generation beside the live one, then switches ``CURRENT`` with one
  ``os.replace``. A crash at any instant leaves either the previous or the new index loadable, never a
  mix and never nothing. The previous generation is kept (a reader that read ``CURRENT`` just before
  the switch can still open it); older ones and temporaries are removed by the next save or load.
- A load reads ``CURRENT`` once, opens each file of that generation once, verifies its checksum on the
  bytes it then parses, and retries from ``CURRENT`` if a concurrent save removed the generation under
  it. The manifest is validated field by field against the schema below.
- A save refuses a directory that is neither empty nor a saved index: it never deletes what it did
  not write. Directories are created with the process umask.

Version-1 directories (the three files at the top level) still load; the next save turns them into
generations.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ce_rerank_plugins._optional import require
from ce_rerank_plugins.errors import IndexFormatError
from ce_rerank_plugins.retrieval._embedder import Embedder, EmbedderRuntime, embedder_id
from ce_rerank_plugins.retrieval._lexical import LEXICAL_ARRAYS, LEXICAL_META, LexicalIndex

if TYPE_CHECKING:
    from ce_rerank_plugins.retrieval.faiss_index import FaissIndex

logger = logging.getLogger(__name__)

FORMAT_NAME = "ce-rerank-faiss-index"
FORMAT_VERSION = 2
"""The on-disk format a save writes; loads accept this version and older ones."""
INDEX_FILE = "index.faiss"
DOCUMENTS_FILE = "documents.jsonl"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
LOCK_FILE = ".lock"
DATA_FILES = (INDEX_FILE, DOCUMENTS_FILE)

_GENERATION = re.compile(r"^gen-(\d{6,})$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_INDEX_TYPES = ("flat", "hnsw", "ivf")
#: How often a load starts over from CURRENT when a concurrent save removed the generation it was reading.
_LOAD_ATTEMPTS = 8


class _GenerationGone(Exception):
    """The generation named by CURRENT vanished while it was being read (a concurrent save cleaned it)."""


# -- writing --------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the data files themselves were synced
    finally:
        os.close(fd)


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON, without its own ``manifest_sha256`` field."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def serialize_index(index: FaissIndex) -> dict[str, bytes]:
    """The bytes of every file of one generation (manifest included), built in memory before any write."""
    faiss = require("faiss", "faiss", purpose="saving a FaissIndex")
    faiss_index = index._faiss_index if index._faiss_index is not None else index._new_index(0)
    blobs = {INDEX_FILE: faiss.serialize_index(faiss_index).tobytes()}
    lines = io.StringIO()
    for int_id, doc in index._docs.items():
        record = {"faiss_id": int_id, "id": doc.id, "text": doc.text, "metadata": dict(doc.metadata)}
        try:
            lines.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        except (TypeError, ValueError) as exc:  # only reachable if metadata was changed behind add()'s back
            message = f"document {doc.id!r} has metadata that JSON cannot store ({exc}); nothing was written"
            raise TypeError(message) from exc
    blobs[DOCUMENTS_FILE] = lines.getvalue().encode("utf-8")
    if index._lexical is not None:
        blobs.update(index._lexical.to_files())
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "embedding_model": index.embedder.id,
        "dimension": index.dimension,
        "normalized": True,
        "metric": "inner_product",
        "index_type": index.index_type,
        "index_params": dict(index.params),
        "count": len(index),
        "next_id": index._next_id,
        "deleted_faiss_ids": sorted(index._deleted),
        "lexical": None if index._lexical is None else {"k1": index._lexical.params.k1, "b": index._lexical.params.b},
        "retrieval": {"mode": index.mode, "hybrid_fusion": index.hybrid_fusion, "hybrid_weight": index.hybrid_weight},
        "checksums": {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()},
    }
    manifest["manifest_sha256"] = manifest_digest(manifest)
    blobs[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    return blobs


def is_saved_index(directory: Path) -> bool:
    """Whether ``directory`` holds a saved index: ``CURRENT`` beside generations, or a version-1 layout."""
    if (directory / CURRENT_FILE).is_file() and _generations(directory):
        return True
    return (directory / MANIFEST_FILE).is_file() and (directory / DOCUMENTS_FILE).is_file()


def _is_v1_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _is_ours(directory: Path, name: str) -> bool:
    if name in (CURRENT_FILE, LOCK_FILE) or _GENERATION.match(name):
        return True
    if name.startswith((".tmp-gen-", ".CURRENT.")):
        return True
    if name in (INDEX_FILE, DOCUMENTS_FILE, MANIFEST_FILE):  # a version-1 index
        return _is_v1_manifest(directory / MANIFEST_FILE)
    return False


def check_save_target(directory: Path) -> None:
    """Raise unless ``directory`` is absent, empty, or a saved index (a save never deletes foreign files).

    It also raises when the save could not happen at all (a dangling symbolic link, a parent that is a
    file, a folder that cannot be written), so a command can check before hours of embedding.
    """
    if directory.is_symlink() and not directory.exists():
        target = os.readlink(directory)
        msg = f"cannot save an index to {str(directory)!r}: it is a symbolic link to {target!r}, which does not exist"
        raise IndexFormatError(msg)
    if not directory.exists():
        ancestor = directory.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            msg = f"cannot save an index to {str(directory)!r}: {str(ancestor)!r} is a file, not a directory"
            raise IndexFormatError(msg)
        _check_writable(ancestor, directory)
        return
    if not directory.is_dir():
        msg = f"cannot save an index to {str(directory)!r}: it is a file, not a directory"
        raise IndexFormatError(msg)
    foreign = sorted(p.name for p in directory.iterdir() if not _is_ours(directory, p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        msg = (
            f"refusing to save an index into {str(directory)!r}: the folder is not empty and is not a saved "
            f"index (it holds {shown}); choose a new or empty folder"
        )
        raise IndexFormatError(msg)
    _check_writable(directory, directory)


def _check_writable(folder: Path, target: Path) -> None:
    """Raise when a file cannot be created in ``folder`` (read-only, no permission), naming ``target``."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        msg = f"cannot save an index to {str(target)!r}: {str(folder)!r} cannot be written ({exc.strerror or exc})"
        raise IndexFormatError(msg) from None


@contextlib.contextmanager
def _locked(directory: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold the directory's save lock; yields False when non-blocking and another process holds it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): saves are still atomic, but concurrent savers are not serialised
        yield True
        return
    try:
        fh = (directory / LOCK_FILE).open("a")
    except OSError:  # a read-only directory: nobody can save into it, so there is nothing to serialise
        yield False
        return
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _generations(directory: Path) -> dict[int, str]:
    out = {}
    for p in directory.iterdir():
        match = _GENERATION.match(p.name)
        if match and p.is_dir():
            out[int(match.group(1))] = p.name
    return out


def _read_current(directory: Path) -> str | None:
    try:
        name = (directory / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"the index at {str(directory)!r} is corrupt: cannot read {CURRENT_FILE} ({exc})"
        raise IndexFormatError(msg) from exc
    if not _GENERATION.match(name):
        msg = f"the index at {str(directory)!r} is corrupt: {CURRENT_FILE} holds {name[:40]!r}, not a generation name"
        raise IndexFormatError(msg)
    return name


def _cleanup(directory: Path, keep: set[str]) -> None:
    """Remove temporaries, version-1 files and generations not in ``keep`` (the caller holds the lock)."""
    for p in directory.iterdir():
        stale_generation = _GENERATION.match(p.name) is not None and p.name not in keep
        if stale_generation or p.name.startswith((".tmp-gen-", ".CURRENT.")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
    if (directory / CURRENT_FILE).exists() and _is_v1_manifest(directory / MANIFEST_FILE):
        for name in (MANIFEST_FILE, INDEX_FILE, DOCUMENTS_FILE):  # manifest first: a half-removed v1 is not loaded
            with contextlib.suppress(OSError):
                (directory / name).unlink()


def save_index(index: FaissIndex, directory: Path) -> Path:
    """Write ``index`` to ``directory`` as a new generation and switch to it atomically; returns the directory.

    Raises:
        IndexFormatError: ``directory`` is a file, or a non-empty folder that is not a saved index.
        ValueError: An IVF index with no documents (it cannot be trained).
    """
    if index.index_type == "ivf" and index._faiss_index is None:
        msg = "an empty IVF index has not been trained yet; add documents before saving it"
        raise ValueError(msg)
    directory = directory.expanduser()
    check_save_target(directory)
    with index._lock:  # a consistent snapshot even while other threads add or delete
        blobs = serialize_index(index)  # every byte is ready before the disk is touched
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        check_save_target(directory)  # again, under the lock
        previous = _read_current(directory) if (directory / CURRENT_FILE).exists() else None
        generations = _generations(directory)
        number = max(generations, default=0) + 1
        name = f"gen-{number:06d}"
        tmp = directory / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for file_name in (*(n for n in blobs if n != MANIFEST_FILE), MANIFEST_FILE):
                _write_bytes(tmp / file_name, blobs[file_name])
            _fsync_dir(tmp)
            tmp.rename(directory / name)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(directory)
        pointer = directory / f".CURRENT.{uuid.uuid4().hex[:8]}"
        try:
            _write_bytes(pointer, (name + "\n").encode("ascii"))
            os.replace(pointer, directory / CURRENT_FILE)  # the one atomic switch
        except BaseException:
            with contextlib.suppress(OSError):
                pointer.unlink()
            raise
        _fsync_dir(directory)
        _cleanup(directory, keep={name} | ({previous} if previous else set()))
    logger.info("saved %d documents to %s (%s)", len(index), directory, name)
    return directory


# -- reading --------------------------------------------------------------------------------------
def _field(manifest: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if key not in manifest:
        msg = f"{where} is invalid: the field {key!r} is missing"
        raise IndexFormatError(msg)
    value = manifest[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        msg = f"{where} is invalid: {key!r} must be {_kind_name(kinds)}, got {value!r:.60}"
        raise IndexFormatError(msg)
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", str: "a string", dict: "an object", list: "a list", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds if k is not type(None)) + (
        " or null" if type(None) in kinds else ""
    )


def validate_manifest(manifest: object, where: str) -> dict[str, Any]:
    """Check every field of a manifest against the schema; returns it, or raises IndexFormatError naming the field."""
    if not isinstance(manifest, dict):
        msg = f"{where} is invalid: expected a JSON object, got {type(manifest).__name__}"
        raise IndexFormatError(msg)
    if manifest.get("format") != FORMAT_NAME:
        msg = f"{where} is not a {FORMAT_NAME} manifest (format={manifest.get('format')!r:.40})"
        raise IndexFormatError(msg)
    version = _field(manifest, "format_version", int, where)
    if version > FORMAT_VERSION:
        msg = (
            f"{where} has format version {version}, but this library reads versions 1 to {FORMAT_VERSION}; "
            f"upgrade ce-rerank-plugins"
        )
        raise IndexFormatError(msg)
    if version < 1:
        msg = f"{where} is invalid: format_version must be 1 or more, got {version}"
        raise IndexFormatError(msg)
    if version >= 2:
        digest = _field(manifest, "manifest_sha256", str, where)
        if digest != manifest_digest(manifest):
            msg = f"{where} is corrupt: it does not match its own checksum (manifest_sha256)"
            raise IndexFormatError(msg)
    model = _field(manifest, "embedding_model", str, where)
    if not model:
        msg = f"{where} is invalid: embedding_model is empty"
        raise IndexFormatError(msg)
    for key in ("dimension", "count", "next_id"):
        value = _field(manifest, key, int, where)
        if value < (1 if key == "dimension" else 0):
            msg = f"{where} is invalid: {key} must not be {value}"
            raise IndexFormatError(msg)
    if _field(manifest, "normalized", bool, where) is not True:
        msg = f"{where} is invalid: only normalised (cosine) indexes are supported"
        raise IndexFormatError(msg)
    if manifest.get("metric", "inner_product") != "inner_product":
        msg = f"{where} is invalid: metric must be 'inner_product', got {manifest['metric']!r:.40}"
        raise IndexFormatError(msg)
    index_type = _field(manifest, "index_type", str, where)
    if index_type not in _INDEX_TYPES:
        msg = f"{where} is invalid: index_type must be one of {list(_INDEX_TYPES)}, got {index_type!r}"
        raise IndexFormatError(msg)
    params = _field(manifest, "index_params", dict, where)
    for key in ("hnsw_m", "ef_search", "ef_construction", "nprobe", "nlist"):
        value = _field(params, key, (int, type(None)) if key == "nlist" else int, f"{where} (index_params)")
        if value is not None and value < 1:
            msg = f"{where} is invalid: index_params.{key} must be >= 1, got {value}"
            raise IndexFormatError(msg)
    deleted = _field(manifest, "deleted_faiss_ids", list, where)
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in deleted) or len(set(deleted)) != len(
        deleted
    ):
        msg = f"{where} is invalid: deleted_faiss_ids must be distinct non-negative integers"
        raise IndexFormatError(msg)
    lexical = manifest.get("lexical")
    if lexical is not None:
        if not isinstance(lexical, dict):
            msg = f"{where} is invalid: 'lexical' must be an object or null"
            raise IndexFormatError(msg)
        for key in ("k1", "b"):
            value = _field(lexical, key, (int, float), f"{where} (lexical)")
            if value < 0:
                msg = f"{where} is invalid: lexical.{key} must be >= 0, got {value}"
                raise IndexFormatError(msg)
    retrieval = manifest.get("retrieval", {"mode": "dense", "hybrid_fusion": "weighted", "hybrid_weight": 0.5})
    if not isinstance(retrieval, dict):
        msg = f"{where} is invalid: 'retrieval' must be an object"
        raise IndexFormatError(msg)
    mode = _field(retrieval, "mode", str, f"{where} (retrieval)")
    if mode not in ("dense", "bm25", "hybrid") or (mode != "dense" and lexical is None):
        msg = f"{where} is invalid: retrieval mode {mode!r} is unknown or needs a lexical index"
        raise IndexFormatError(msg)
    if _field(retrieval, "hybrid_fusion", str, f"{where} (retrieval)") not in ("rrf", "weighted"):
        msg = f"{where} is invalid: hybrid_fusion must be 'rrf' or 'weighted'"
        raise IndexFormatError(msg)
    weight = _field(retrieval, "hybrid_weight", (int, float), f"{where} (retrieval)")
    if not 0 <= weight <= 1:
        msg = f"{where} is invalid: hybrid_weight must be in [0, 1], got {weight}"
        raise IndexFormatError(msg)
    checksums = _field(manifest, "checksums", dict, where)
    for name in data_files(manifest):
        value = checksums.get(name)
        if not isinstance(value, str) or not _HEX64.match(value):
            msg = f"{where} is invalid: checksums.{name} must be a SHA-256 hex digest"
            raise IndexFormatError(msg)
    return manifest


def data_files(manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The data files a generation with this manifest holds."""
    if manifest.get("lexical") is not None:
        return (*DATA_FILES, LEXICAL_ARRAYS, LEXICAL_META)
    return DATA_FILES


def _read_generation(directory: Path) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    """(generation, manifest, data bytes) of the live generation, each file opened once and verified."""
    current = _read_current(directory)
    if current is None:
        if (directory / MANIFEST_FILE).is_file():
            location = directory  # a version-1 index
            label = "v1"
        else:
            msg = f"{str(directory)!r} is not a saved index: neither {CURRENT_FILE} nor {MANIFEST_FILE} is there"
            raise IndexFormatError(msg)
    else:
        location = directory / current
        label = current

    def read(name: str) -> bytes:
        try:
            return (location / name).read_bytes()
        except FileNotFoundError as exc:
            if current is not None and _read_current(directory) != current:
                raise _GenerationGone from exc
            msg = f"the index at {str(directory)!r} is incomplete: {name} is missing"
            raise IndexFormatError(msg) from exc

    where = f"the manifest of the index at {str(directory)!r}"
    raw = read(MANIFEST_FILE)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{where} is corrupt: not valid JSON ({exc})"
        raise IndexFormatError(msg) from exc
    manifest = validate_manifest(manifest, where)
    blobs = {}
    for name in data_files(manifest):
        data = read(name)
        if hashlib.sha256(data).hexdigest() != manifest["checksums"][name]:
            msg = f"the index at {str(directory)!r} is corrupt: {name} does not match its checksum"
            raise IndexFormatError(msg)
        blobs[name] = data
    return label, manifest, blobs


def read_manifest(directory: Path) -> dict[str, Any]:
    """The validated manifest of the live generation of a saved index."""
    return _read_verified(directory.expanduser())[1]


def _read_verified(directory: Path) -> tuple[str, dict[str, Any], dict[str, bytes]]:
    if not directory.is_dir():
        msg = f"no saved index at {str(directory)!r}: the directory does not exist"
        raise IndexFormatError(msg)
    for _ in range(_LOAD_ATTEMPTS):
        try:
            result = _read_generation(directory)
            break
        except _GenerationGone:
            continue
    else:
        msg = f"the index at {str(directory)!r} kept changing while it was read; try again"
        raise IndexFormatError(msg)
    _cleanup_if_idle(directory)
    return result


def _cleanup_if_idle(directory: Path) -> None:
    """Remove what interrupted saves left, when no save is running (never blocks, never fails a load)."""
    try:
        with _locked(directory, blocking=False) as held:
            if not held:
                return
            current = _read_current(directory)
            if current is None:
                return
            generations = _generations(directory)
            number = int(current.split("-")[1])
            older = [g for n, g in generations.items() if n < number]
            # A generation newer than CURRENT is kept: CURRENT was rolled back to an older one by hand,
            # and a read must never delete the data it was rolled back from.
            newer = {g for n, g in generations.items() if n > number}
            keep = {current} | ({max(older)} if older else set()) | newer
            _cleanup(directory, keep)
    except (OSError, IndexFormatError) as exc:
        logger.debug("left %s as it is: %s", directory, exc)


def same_embedder(stored: str, given: str) -> bool:
    """Whether a saved index's embedder id and the one given name the same bi-encoder.

    Indexes saved before local bi-encoders were fingerprinted name them by folder only
    (``local:NAME``); those still load with a folder of that name, with a warning that the weights
    cannot be checked.
    """
    if stored == given:
        return True
    if stored.startswith("local:") and "@" not in stored and given.startswith(f"{stored}@"):
        logger.warning(
            "this index names its bi-encoder %r by folder only (saved by an older version): the weights of %r "
            "cannot be checked against it; save the index again to record them",
            stored,
            given,
        )
        return True
    return False


def load_index(
    directory: Path,
    *,
    embedder: Embedder | str | os.PathLike[str] | None = None,
    embedder_runtime: EmbedderRuntime = "torch",
) -> FaissIndex:
    """Load and verify a saved index; ``embedder`` (default: the one in the manifest) must match it.

    ``embedder_runtime`` says what runs an embedder loaded here (see :class:`Embedder`).
    """
    faiss = require("faiss", "faiss", purpose="loading a FaissIndex")
    from ce_rerank_plugins.retrieval.faiss_index import Document, FaissIndex

    directory = directory.expanduser()
    _, manifest, blobs = _read_verified(directory)
    stored_model = manifest["embedding_model"]
    given_id = (
        None
        if embedder is None
        else embedder.id
        if isinstance(embedder, Embedder)
        else embedder_id(os.fspath(embedder))
    )
    if given_id is not None and not same_embedder(stored_model, given_id):  # before loading an unusable model
        msg = (
            f"the index at {str(directory)!r} was built with embedding model {stored_model!r}, "
            f"but {given_id!r} was given; queries would not match its vectors"
        )
        raise IndexFormatError(msg)
    if embedder is None:
        embedder = Embedder(None if stored_model == embedder_id(None) else stored_model, runtime=embedder_runtime)
    elif not isinstance(embedder, Embedder):
        embedder = Embedder(embedder, runtime=embedder_runtime)
    if not same_embedder(stored_model, embedder.id):
        msg = (
            f"the index at {str(directory)!r} was built with embedding model {stored_model!r}, "
            f"but {embedder.id!r} was given; queries would not match its vectors"
        )
        raise IndexFormatError(msg)
    if embedder.dimension != manifest["dimension"]:
        msg = (
            f"the index at {str(directory)!r} stores {manifest['dimension']}-dimensional vectors, "
            f"but the embedder {embedder.id!r} produces {embedder.dimension}-dimensional ones"
        )
        raise IndexFormatError(msg)
    try:
        faiss_index = faiss.deserialize_index(np.frombuffer(blobs[INDEX_FILE], dtype=np.uint8))
    except RuntimeError as exc:
        msg = f"{INDEX_FILE} of the index at {str(directory)!r} cannot be read: {exc}"
        raise IndexFormatError(msg) from exc
    _check_faiss_index(faiss, faiss_index, manifest, directory)
    params = manifest["index_params"]
    retrieval = manifest.get("retrieval", {"mode": "dense", "hybrid_fusion": "weighted", "hybrid_weight": 0.5})
    index = FaissIndex(
        embedder,
        index_type=manifest["index_type"],
        hnsw_m=params["hnsw_m"],
        ef_search=params["ef_search"],
        ef_construction=params["ef_construction"],
        nlist=params["nlist"],
        nprobe=params["nprobe"],
        lexical=False,
        hybrid_fusion=retrieval["hybrid_fusion"],
        hybrid_weight=retrieval["hybrid_weight"],
    )
    index._faiss_index = faiss_index
    # split on "\n" only: str.splitlines() would also split inside texts at U+0085, U+2028 and friends
    lines = blobs[DOCUMENTS_FILE].decode("utf-8").split("\n")
    for line_no, line in enumerate(lines[:-1] if lines and lines[-1] == "" else lines, 1):
        try:
            record = json.loads(line)
            doc = Document(record["id"], record["text"], record["metadata"])
            int_id = record["faiss_id"]
            if not isinstance(doc.id, str) or not isinstance(doc.text, str) or not isinstance(doc.metadata, dict):
                msg = "id and text must be strings and metadata an object"
                raise TypeError(msg)
            if isinstance(int_id, bool) or not isinstance(int_id, int) or not 0 <= int_id < manifest["next_id"]:
                msg = f"faiss_id {int_id!r} is not below next_id {manifest['next_id']}"
                raise ValueError(msg)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            msg = f"{DOCUMENTS_FILE} line {line_no} is malformed: {exc}"
            raise IndexFormatError(msg) from exc
        if int_id in index._docs or doc.id in index._ids:
            msg = f"{DOCUMENTS_FILE} line {line_no} repeats document {doc.id!r} or faiss id {int_id}"
            raise IndexFormatError(msg)
        index._docs[int_id] = doc
        index._ids[doc.id] = int_id
    index._next_id = manifest["next_id"]
    index._deleted = set(manifest["deleted_faiss_ids"])
    stored_ids = set(faiss.vector_to_array(faiss_index.id_map).tolist())
    if (
        len(index) != manifest["count"]
        or stored_ids != set(index._docs) | index._deleted
        or (index._deleted & set(index._docs))
        or any(i >= manifest["next_id"] for i in index._deleted)
    ):
        msg = (
            f"the index at {str(directory)!r} is inconsistent: manifest count {manifest['count']}, "
            f"{len(index)} documents, {faiss_index.ntotal} vectors, {len(index._deleted)} deleted"
        )
        raise IndexFormatError(msg)
    if manifest.get("lexical") is not None:
        try:
            index._lexical = LexicalIndex.from_files(blobs, set(index._docs))
        except (KeyError, TypeError, ValueError) as exc:
            msg = f"the lexical index of {str(directory)!r} is inconsistent: {exc}"
            raise IndexFormatError(msg) from exc
    index.mode = retrieval["mode"]
    return index


def _check_faiss_index(faiss: Any, faiss_index: Any, manifest: Mapping[str, Any], directory: Path) -> None:
    if not isinstance(faiss_index, faiss.IndexIDMap2):
        msg = f"{INDEX_FILE} of the index at {str(directory)!r} is not an id-mapped FAISS index"
        raise IndexFormatError(msg)
    base = faiss.downcast_index(faiss_index.index)
    expected = {"flat": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}
    if not isinstance(base, expected[manifest["index_type"]]):
        msg = (
            f"the index at {str(directory)!r} says index_type {manifest['index_type']!r}, "
            f"but {INDEX_FILE} holds a {type(base).__name__}"
        )
        raise IndexFormatError(msg)
    if faiss_index.d != manifest["dimension"]:
        msg = f"{INDEX_FILE} has dimension {faiss_index.d} but the manifest says {manifest['dimension']}"
        raise IndexFormatError(msg)
