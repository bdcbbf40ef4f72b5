"""File helpers shared by the on-disk formats (FAISS index, ONNX cache, model fingerprints) and Ray."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write",
    "json_lines",
    "known_source_files_sha256",
    "portable_model_name",
    "sha256_file",
    "source_files_sha256",
    "stat_signature",
    "user_cache_dir",
]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_model_name(model: str | os.PathLike[str]) -> str:
    """``model`` as other processes and nodes should see it.

    An existing local path is made absolute (they do not share this process's working directory);
    anything else (a Hub id) is unchanged.
    """
    return str(Path(model).resolve()) if Path(model).exists() else os.fspath(model)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and one rename: readers see old or new, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_lines(path: Path) -> Iterator[tuple[int, str, Any]]:
    """Each non-blank line of a JSON Lines file, numbered from 1, with its text and its value.

    A line that is not UTF-8 or not JSON is named by ``path:line``; a bare decoder error names neither.
    """
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                msg = f"{path}:{line_no} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                raise ValueError(msg) from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                msg = f"{path}:{line_no} is not valid JSON: {exc}"
                raise ValueError(msg) from exc
            yield line_no, line, value


def user_cache_dir() -> Path:
    """This package's folder in the user cache: ``$XDG_CACHE_HOME/ce_rerank_plugins`` (default ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ce_rerank_plugins"


def _stat_index_root() -> Path:
    return user_cache_dir() / "onnx" / "paths"


_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()


def _file_sha256(path: Path) -> str:
    """``sha256_file``, remembered for this process while the file's inode, size and mtime stay the same.

    A process that checks a model's files twice (the CLI asks whether the fast start is ready, then
    loads it) reads each file once.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _digests_lock:
        known = _digests.get(key)
    if known is None:
        known = sha256_file(path)
        with _digests_lock:
            _digests[key] = known
    return known


def source_files_sha256(model_dir: Path) -> str:
    """A hash of a local model directory's files (names and bytes), its ``onnx/`` cache and dot-files excepted.

    It names the model without loading it, so a process that has not imported torch can still tell
    whether a cached export belongs to these weights and this tokenizer.
    """
    digest = hashlib.sha256()
    for path in _model_files(model_dir):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0" + _file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def _model_files(model_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in model_dir.rglob("*")
        if path.is_file()
        and path.relative_to(model_dir).parts[0] != "onnx"
        and not any(part.startswith(".") for part in path.relative_to(model_dir).parts)
    )


def stat_signature(path: Path) -> list[int]:
    """Inode, size and mtime: what changes when a file is replaced or edited."""
    stat = path.stat()
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def known_source_files_sha256(model_dir: Path, *, trust_index: bool = True) -> str:
    """:func:`source_files_sha256`, read from a small stat index while no file's inode, size or mtime changed.

    Hashing a model's files costs ~0.1 s per 100 MB, a large share of a torch-free start; like git's
    index, a file whose stat is unchanged is taken to be unchanged. The index lives in the user cache
    (``paths/``), one file per model directory, written atomically. ``trust_index=False`` hashes
    anyway and refreshes the index (the export does, before it records what it wrote).
    """
    resolved = model_dir.resolve()
    stats = [[path.relative_to(model_dir).as_posix(), *stat_signature(path)] for path in _model_files(model_dir)]
    index = _stat_index_root() / f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:16]}.json"
    try:
        known = json.loads(index.read_text()) if trust_index else {}
        if known.get("path") == str(resolved) and known.get("stats") == stats:
            return str(known["source_files_sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    digest = source_files_sha256(model_dir)
    record = {"path": str(resolved), "stats": stats, "source_files_sha256": digest}
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(index, json.dumps(record).encode())
    except OSError:  # a read-only cache only costs the hashing next time
        pass
    return digest
