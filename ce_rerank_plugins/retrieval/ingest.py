"""Reading files and folders into chunks with stable ids and the chunk metadata contract.

What ``ce-rerank index`` does, as a library call. The contract (see :mod:`ce_rerank_plugins.context`):

- ``source``: the file's path relative to the folder that was given (``a/README.md``), so two files
  of the same name never collide; a file given directly is named by its file name. A JSON Lines
  record may carry its own ``source``.
- ``chunk_index``: the citation position within that source. For .txt/.md files, the chunk's number.
  For a JSON Lines record, the record's ``chunk_index`` (or ``position``), else its line number; a
  record split into several chunks gets ``"<record position>.<chunk>"``.
- ids: ``<source>#<chunk>`` for files and ``<record id>#<chunk>`` for JSON Lines records.

What a folder walk skips, as search tools do (ripgrep, git): hidden files and folders (a name that
starts with "."), whatever a ``.gitignore`` or ``.ignore`` file in the walked folders excludes, and
every saved index of this package (a folder holding ``CURRENT`` and ``gen-*``, or a version-1
``manifest.json`` with ``documents.jsonl``), so an index is never ingested as documents. Folders named
in ``exclude`` (the index's own output folder) are never read either. A file named directly is always
read. :attr:`IngestedFiles.ignored` counts what was skipped, by reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_rerank_plugins._files import json_lines
from ce_rerank_plugins._validation import check_text
from ce_rerank_plugins.context.assembly import POSITION_KEY, SOURCE_KEY
from ce_rerank_plugins.retrieval._persistence import is_saved_index

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "IngestedFiles",
    "SourceRecord",
    "build_index_from_files",
    "collect_files",
    "read_records",
]

SUPPORTED_SUFFIXES = (".txt", ".md", ".jsonl")
"""The file types the ingester reads; other files in a walked folder are reported, not read."""


@dataclass(frozen=True)
class SourceRecord:
    """One unit of text before chunking: a whole .txt/.md file, or one JSON Lines record."""

    id: str
    text: str
    source: str
    position: int | str | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestedFiles:
    """The files to read, each with its source name; files of other types (by suffix); what the walk skipped.

    ``ignored`` counts skipped files and folders by reason: ``"hidden"``, ``"ignore file"`` (matched by
    a ``.gitignore`` / ``.ignore``) and ``"saved index"``.
    """

    files: list[tuple[Path, str]]
    skipped: dict[str, int]
    ignored: dict[str, int] = field(default_factory=dict)


IGNORE_FILES = (".gitignore", ".ignore")


def _ignore_spec(folder: Path) -> Any:
    """The patterns of ``folder``'s ignore files (git's semantics, via pathspec), or None."""
    lines: list[str] = []
    for name in IGNORE_FILES:
        file = folder / name
        if file.is_file():
            try:
                lines += file.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as exc:
                logger.warning("cannot read %s: %s", file, exc)
    if not lines:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(root: Path, excluded: Sequence[Path], ignored: dict[str, int]) -> list[Path]:
    """Every file under ``root`` that is not hidden, ignored, inside a saved index or excluded, sorted."""
    out: list[Path] = []

    def skip(reason: str) -> None:
        ignored[reason] = ignored.get(reason, 0) + 1

    def visit(folder: Path, specs: list[tuple[Path, Any]]) -> None:
        own = _ignore_spec(folder)
        specs = [*specs, (folder, own)] if own is not None else specs
        try:
            entries = sorted(folder.iterdir())
        except OSError as exc:
            logger.warning("cannot list %s: %s", folder, exc)
            return
        for entry in entries:
            if _inside(entry, excluded):
                continue
            if entry.name.startswith("."):
                skip("hidden")
                continue
            is_dir = entry.is_dir()
            if any(
                spec.match_file(entry.relative_to(base).as_posix() + ("/" if is_dir else "")) for base, spec in specs
            ):
                skip("ignore file")
                continue
            if is_dir:
                if is_saved_index(entry):
                    skip("saved index")
                else:
                    visit(entry, specs)
            elif entry.is_file():
                out.append(entry)

    visit(root, [])
    return out


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == f or f in resolved.parents for f in folders)


def collect_files(paths: Sequence[Path], *, exclude: Sequence[Path] = ()) -> IngestedFiles:
    """The readable files under ``paths`` with their source names; nothing under ``exclude`` is read.

    Raises:
        FileNotFoundError: A path does not exist.
        ValueError: A file given directly has an unsupported suffix.
    """
    excluded = [Path(p).resolve() for p in exclude]
    files: list[tuple[Path, str]] = []
    skipped: dict[str, int] = {}
    ignored: dict[str, int] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            msg = f"no such file or folder: {path}"
            raise FileNotFoundError(msg)
        if path.is_dir():
            if is_saved_index(path):
                msg = f"{path} is a saved index of ce-rerank, not a folder of documents"
                raise ValueError(msg)
            for p in _walk(path, excluded, ignored):
                if p.suffix in SUPPORTED_SUFFIXES:
                    files.append((p, _printable_name(p.relative_to(path).as_posix())))
                else:
                    skipped[p.suffix or "(no suffix)"] = skipped.get(p.suffix or "(no suffix)", 0) + 1
        elif path.suffix in SUPPORTED_SUFFIXES:
            files.append((path, _printable_name(path.name)))
        else:
            msg = f"{path}: unsupported file type {path.suffix!r} (use {', '.join(SUPPORTED_SUFFIXES)})"
            raise ValueError(msg)
    sources = [s for _, s in files]
    repeated = sorted({s for s in sources if sources.count(s) > 1})
    if repeated:
        msg = (
            f"two inputs have the same source name {repeated[:3]}: give their common parent folder instead, "
            f"so each is named by its path"
        )
        raise ValueError(msg)
    return IngestedFiles(files, skipped, ignored)


def _printable_name(name: str) -> str:
    """``name`` as valid Unicode: bytes that are not UTF-8 (a Latin-1 file name) become U+FFFD.

    Python keeps such bytes as lone surrogates, which no JSON file, tokenizer or terminal accepts; the
    file is still read, under the repaired name, and the repair is logged.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        repaired = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        logger.warning("the file name %r is not UTF-8; its source is recorded as %r", name, repaired)
        return repaired
    return name


def _read_jsonl(file: Path, source: str) -> Iterator[tuple[str, SourceRecord]]:
    for line_no, _, row in json_lines(file):
        where = f"{file}:{line_no}"
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            msg = f"{where}: each line needs a string field 'text'"
            raise ValueError(msg)
        doc_id = str(row.get("id", row.get("_id", f"{source}:{line_no}")))
        text = f"{row['title']} {row['text']}".strip() if row.get("title") else row["text"]
        check_text(text, f"{where}: the record's text")
        check_text(doc_id, f"{where}: the record's id")
        position = row.get(POSITION_KEY, row.get("position", line_no))
        meta = {k: v for k, v in row.items() if k not in {"id", "_id", "text", "title", POSITION_KEY, "position"}}
        record_source = meta.pop(SOURCE_KEY, None)
        yield where, SourceRecord(doc_id, text, str(record_source) if record_source else source, position, meta)


def read_records(files: IngestedFiles) -> list[SourceRecord]:
    """One record per .txt/.md file and per JSON Lines line, in file order.

    Raises:
        ValueError: A JSON Lines line is not UTF-8, not JSON, or not an object with a string ``text``;
            or two records have one id (each place named: the index keeps ids unique, and which one
            a user meant to keep is theirs to say).
    """
    records: list[SourceRecord] = []
    first_seen: dict[str, str] = {}
    for file, source in files.files:
        if file.suffix == ".jsonl":
            found = list(_read_jsonl(file, source))
        else:
            text = file.read_text(encoding="utf-8", errors="replace")
            found = [(str(file), SourceRecord(source, text, source, None))]
        for where, record in found:
            earlier = first_seen.setdefault(record.id, where)
            if earlier != where:
                msg = f"{where}: the id {record.id!r} was already given to the record at {earlier}; ids must be unique"
                raise ValueError(msg)
            records.append(record)
    return records


def build_index_from_files(
    paths: Sequence[Path],
    *,
    embedder: Any = None,
    chunk_tokens: int = 200,
    overlap: int = 40,
    index_type: str = "flat",
    exclude: Sequence[Path] = (),
    show_progress: bool | None = None,
    lexical: bool = False,
    mode: str = "dense",
    encode: Callable[[list[str]], Any] | None = None,
) -> tuple[Any, IngestedFiles]:
    """Read, chunk and embed files into a new ``FaissIndex``; returns it and what was (not) read.

    Args:
        paths: Files (.txt, .md, .jsonl) or folders of them.
        embedder: An ``Embedder``, a bi-encoder name or path, or None for the bundled one.
        chunk_tokens: Tokens per chunk (bi-encoder tokenizer).
        overlap: Tokens shared by consecutive chunks.
        index_type: ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        exclude: Folders never read (e.g. the index's own output folder).
        show_progress: Progress bar while embedding.
        lexical: Keep a BM25 index beside the vectors.
        mode: The index's default retrieval mode (``dense``, ``bm25``, ``hybrid``).
        encode: Embeds the chunk texts elsewhere (e.g. :func:`ce_rerank_plugins.ray_data.embed_texts`)
            with the same bi-encoder; None embeds them here.

    Raises:
        FileNotFoundError: No readable file was found.
        ValueError: The files hold no text, or a JSON Lines line is malformed.
    """
    from ce_rerank_plugins.retrieval.chunking import TokenChunker
    from ce_rerank_plugins.retrieval.faiss_index import FaissIndex

    found = collect_files(paths, exclude=exclude)
    if not found.files:
        msg = f"no .txt, .md or .jsonl files found in {', '.join(map(str, paths))}"
        raise FileNotFoundError(msg)
    records = read_records(found)
    index = FaissIndex(
        embedder,
        index_type=index_type,  # type: ignore[arg-type]
        show_progress=show_progress,
        lexical=lexical,
        mode=mode,  # type: ignore[arg-type]
    )
    chunker = TokenChunker(index.embedder.tokenizer, chunk_tokens=chunk_tokens, overlap=overlap)
    texts, ids, metas = [], [], []
    for record in records:
        pieces = chunker.split(record.text, source=record.source, metadata=record.metadata)
        for chunk in pieces:
            number = chunk.metadata[POSITION_KEY]
            if record.position is None:
                position: int | str = number
            else:
                position = record.position if len(pieces) == 1 else f"{record.position}.{number}"
            ids.append(f"{record.id}#{number}")
            texts.append(chunk.text)
            metas.append({**chunk.metadata, POSITION_KEY: position})
    if not texts:
        msg = "the input files hold no text to index"
        raise ValueError(msg)
    if encode is None:
        index.add(texts, ids=ids, metadatas=metas)
    else:
        from ce_rerank_plugins.retrieval.faiss_index import Document

        docs = [Document(i, t, m) for i, t, m in zip(ids, texts, metas, strict=True)]
        index.add_documents(docs, embeddings=encode(texts))
    return index, found
