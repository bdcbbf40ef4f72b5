"""``FaissIndex``: chunks embedded by a bi-encoder, searched by inner product (= cosine) in FAISS.

Documents are added and deleted by id without rebuilding (``IndexIDMap2``), filtered by metadata with
FAISS id selectors (so a filtered search still returns ``k`` hits when ``k`` match), and saved
without pickle (see :mod:`ce_rerank_plugins.retrieval._persistence`).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ce_rerank_plugins._optional import require
from ce_rerank_plugins._validation import check_query, check_sequence, check_text
from ce_rerank_plugins.core import FloatArray
from ce_rerank_plugins.retrieval._embedder import Embedder, EmbedderRuntime
from ce_rerank_plugins.retrieval._lexical import LexicalIndex

logger = logging.getLogger(__name__)

IndexType = Literal["flat", "hnsw", "ivf"]
"""FAISS structure: ``flat`` (exact), ``hnsw`` (graph) or ``ivf`` (inverted lists)."""
_INDEX_TYPES = ("flat", "hnsw", "ivf")
RetrievalMode = Literal["dense", "bm25", "hybrid"]
"""First stage of a search: ``dense`` (cosine), ``bm25`` or ``hybrid`` (both, fused)."""
RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
"""Every ``RetrievalMode``, in the order the CLI lists them."""
HybridFusion = Literal["rrf", "weighted"]
#: How deep each retriever looks before a hybrid search fuses them (as measured in the README).
HYBRID_DEPTH = 100
MetadataFilter = Mapping[str, Any]


def _faiss() -> Any:
    return require("faiss", "faiss", purpose="FaissIndex")


@dataclass(frozen=True)
class Document:
    """A chunk of text with an id and free-form JSON-serialisable metadata."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    """One search result: the document, and its cosine similarity to the query."""

    id: str
    score: float
    text: str
    metadata: Mapping[str, Any]


def matches(metadata: Mapping[str, Any], where: MetadataFilter) -> bool:
    """True when every filter key matches: equal value, or membership when the filter value is a list."""
    for key, wanted in where.items():
        if key not in metadata:
            return False
        value = metadata[key]
        if isinstance(wanted, (list, tuple, set, frozenset)):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def _check_hybrid(fusion: object, weight: object) -> None:
    if fusion not in ("rrf", "weighted"):
        msg = f"hybrid_fusion must be 'rrf' or 'weighted', got {fusion!r}"
        raise ValueError(msg)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= float(weight) <= 1.0:
        msg = f"hybrid_weight must be a number in [0, 1], got {weight!r}"
        raise ValueError(msg)


def check_search_settings(k: object, mode: object, index: FaissIndex | None = None) -> None:
    """A retriever's own ``k`` (a positive integer) and ``mode`` (a retrieval mode, or None for the index's).

    For the classes that keep settings for later searches, so a bad one is refused when they are built;
    with ``index``, a BM25 or hybrid ``mode`` on an index without its BM25 side is refused too.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        msg = f"k must be a positive integer, got {k!r}"
        raise ValueError(msg)
    if mode is not None and mode not in RETRIEVAL_MODES:
        msg = f"mode must be one of {list(RETRIEVAL_MODES)} or None, got {mode!r}"
        raise ValueError(msg)
    if index is not None and mode not in (None, "dense") and not index.lexical:
        msg = f"mode={mode!r} needs the BM25 index: build the index with lexical=True"
        raise ValueError(msg)


def _check_where(where: object) -> None:
    if where is not None and not isinstance(where, Mapping):
        msg = f"where must be a dict of metadata key -> value, got {type(where).__name__} ({where!r:.40})"
        raise TypeError(msg)


#: Deepest nesting of metadata lists and dicts accepted (JSON readers and Python's recursion have limits).
MAX_METADATA_DEPTH = 32


def _json_value(value: object, where: str, depth: int = 0) -> Any:
    """A deep copy of ``value`` made of JSON types only (what a save/load round trip returns unchanged)."""
    if depth > MAX_METADATA_DEPTH:
        msg = f"metadata is nested more than {MAX_METADATA_DEPTH} levels deep (at {where[:80]}...)"
        raise ValueError(msg)
    if value is None or isinstance(value, (str, bool, int)):
        if isinstance(value, str):
            check_text(value, where)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"{where} is {value!r}; JSON cannot store NaN or infinity, use None or a string"
            raise ValueError(msg)
        return value
    if isinstance(value, list):
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return validate_metadata(value, where, depth + 1)
    hint = " (convert it with float() or int())" if type(value).__module__ == "numpy" else ""
    msg = (
        f"{where} is a {type(value).__name__}, which a saved index cannot store unchanged; "
        f"use str, int, float, bool, None, list or dict{hint}"
    )
    raise TypeError(msg)


def validate_metadata(metadata: object, where: str = "metadata", depth: int = 0) -> dict[str, Any]:
    """A deep copy of ``metadata`` if it is a dict of string keys and JSON values, else a clear error.

    Done at ``add`` so that a save never fails on what was accepted and a load returns it unchanged
    (no int keys turned into strings, no tuples into lists, no NaN written as invalid JSON).
    """
    if not isinstance(metadata, Mapping):
        msg = f"{where} must be a dict, got {type(metadata).__name__}"
        raise TypeError(msg)
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            msg = f"{where} has the key {key!r} ({type(key).__name__}); metadata keys must be strings"
            raise TypeError(msg)
        check_text(key, f"{where} key {key!r:.40}")
        out[key] = _json_value(value, f"{where}[{key!r}]", depth)
    return out


class FaissIndex:
    """A searchable, persistent collection of documents embedded by a bi-encoder.

    Args:
        embedder: An :class:`Embedder`, a model name/path, or None for the bundled all-MiniLM-L6-v2.
        index_type: ``"flat"`` (exact, default), ``"hnsw"`` (graph, fast approximate) or ``"ivf"``
            (inverted lists, trained on the first batch added).
        hnsw_m: HNSW graph degree.
        ef_search: HNSW search breadth (higher = better recall, slower).
        ef_construction: HNSW build breadth.
        nlist: IVF list count; None picks ``sqrt(n)`` from the first batch (enough training points per
            list for k-means; see the README's recall/speed table for nprobe).
        nprobe: IVF lists visited per query.
        show_progress: Progress bar while embedding; None shows it above a few hundred chunks.
        lexical: Keep a BM25 index beside the vectors (the ``hybrid`` extra), for ``mode="bm25"`` or
            ``"hybrid"``. Adds, deletes, filters and saves keep both in step.
        mode: The default retrieval mode of :meth:`search`: ``"dense"`` (cosine), ``"bm25"`` or
            ``"hybrid"`` (both, each to depth 100, fused).
        hybrid_fusion: How hybrid fuses: ``"weighted"`` (min-max of each, weighted sum; missing = 0)
            or ``"rrf"`` (reciprocal rank fusion, k=60).
        hybrid_weight: The dense side's weight in the hybrid fusion, in [0, 1].

    Example:
        >>> index = FaissIndex()  # doctest: +SKIP
        >>> index.add(["Lyon has 522,000 inhabitants."], metadatas=[{"source": "lyon.txt"}])  # doctest: +SKIP
        >>> index.search("population of Lyon", k=5)  # doctest: +SKIP
    """

    def __init__(
        self,
        embedder: Embedder | str | os.PathLike[str] | None = None,
        *,
        index_type: IndexType = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
        nlist: int | None = None,
        nprobe: int = 16,
        show_progress: bool | None = None,
        lexical: bool = False,
        mode: RetrievalMode = "dense",
        hybrid_fusion: HybridFusion = "weighted",
        hybrid_weight: float = 0.5,
    ) -> None:
        if mode not in RETRIEVAL_MODES:
            msg = f"mode must be one of {list(RETRIEVAL_MODES)}, got {mode!r}"
            raise ValueError(msg)
        if mode != "dense" and not lexical:
            msg = f"mode={mode!r} needs the BM25 index: pass lexical=True"
            raise ValueError(msg)
        _check_hybrid(hybrid_fusion, hybrid_weight)
        if index_type not in _INDEX_TYPES:
            msg = f"index_type must be one of {list(_INDEX_TYPES)}, got {index_type!r}"
            raise ValueError(msg)
        self.embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder)
        self.index_type: IndexType = index_type
        self.params: dict[str, Any] = {
            "hnsw_m": hnsw_m,
            "ef_search": ef_search,
            "ef_construction": ef_construction,
            "nlist": nlist,
            "nprobe": nprobe,
        }
        self.show_progress = show_progress
        self.dimension = self.embedder.dimension
        self._faiss_index: Any = None if index_type == "ivf" else self._new_index(0)
        self._docs: dict[int, Document] = {}
        self._ids: dict[str, int] = {}
        self._next_id = 0
        # HNSW cannot remove vectors; deleted ones are masked at search time and dropped on rebuild.
        self._deleted: set[int] = set()
        # Searches, adds, deletes and saves from several threads see whole operations, never halves.
        # Embedding (the slow part) runs outside the lock.
        self._lock = threading.RLock()
        self._lexical: LexicalIndex | None = LexicalIndex() if lexical else None
        self.mode: RetrievalMode = mode
        self.hybrid_fusion: HybridFusion = hybrid_fusion
        self.hybrid_weight = float(hybrid_weight)

    # -- construction -------------------------------------------------------------------------
    def _new_index(self, n_first: int) -> Any:
        faiss = _faiss()
        d = self.dimension
        if self.index_type == "flat":
            base = faiss.IndexFlatIP(d)
        elif self.index_type == "hnsw":
            base = faiss.IndexHNSWFlat(d, self.params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = self.params["ef_construction"]
            base.hnsw.efSearch = self.params["ef_search"]
        else:
            nlist = self.params["nlist"] or max(1, int(math.sqrt(max(n_first, 1))))
            if n_first < nlist:
                msg = (
                    f"an IVF index with nlist={nlist} must be trained on at least {nlist} vectors, but the first "
                    f"add() has {n_first}; add more documents at once, lower nlist, or use index_type='flat'"
                )
                raise ValueError(msg)
            self.params["nlist"] = nlist
            quantizer = faiss.IndexFlatIP(d)
            base = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            base.nprobe = self.params["nprobe"]
        return faiss.IndexIDMap2(base)

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._ids

    @property
    def ids(self) -> list[str]:
        """Document ids in insertion order."""
        return [doc.id for doc in self._docs.values()]

    def get(self, doc_id: str) -> Document:
        """The stored document with ``doc_id``; KeyError names unknown ids."""
        if doc_id not in self._ids:
            msg = f"no document with id {doc_id!r} in the index"
            raise KeyError(msg)
        return self._docs[self._ids[doc_id]]

    # -- adding and deleting ----------------------------------------------------------------
    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """Embed and add ``texts``; returns their ids (generated as ``"doc-N"`` when not given).

        Everything is validated before anything is embedded or stored: a call adds all its documents
        or none.

        Raises:
            ValueError: Duplicate ids (within the call or already indexed), mismatched lengths, text
                that is not valid Unicode, or NaN/infinite metadata values.
            TypeError: A bare string where a list is expected, a text or id that is not a string, or
                metadata that is not a dict of string keys and JSON values.
        """
        texts = check_sequence(texts, "texts")
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]")
        id_list = None if ids is None else check_sequence(ids, "ids")
        meta_list = None if metadatas is None else check_sequence(metadatas, "metadatas")
        for i, doc_id in enumerate(id_list or []):
            if not isinstance(doc_id, str) or not doc_id:
                msg = f"ids[{i}] must be a non-empty string, got {doc_id!r:.60}"
                raise TypeError(msg)
        if id_list is not None and len(id_list) != len(texts):
            msg = f"got {len(id_list)} ids for {len(texts)} texts"
            raise ValueError(msg)
        if meta_list is not None and len(meta_list) != len(texts):
            msg = f"got {len(meta_list)} metadatas for {len(texts)} texts"
            raise ValueError(msg)
        docs = [
            Document(
                id=id_list[i] if id_list is not None else f"doc-{self._next_id + i}",
                text=text,
                metadata=meta_list[i] if meta_list is not None else {},
            )
            for i, text in enumerate(texts)
        ]
        return self.add_documents(docs)

    def add_documents(self, documents: Iterable[Document], *, embeddings: FloatArray | None = None) -> list[str]:
        """Add ready-made :class:`Document` objects (kept by value, not by reference).

        Args:
            documents: The documents.
            embeddings: Their unit vectors from this index's embedder, shape ``(n, dimension)``, when
                already computed (e.g. to build several index types from one embedding pass).
        """
        docs = []
        for i, doc in enumerate(check_sequence(documents, "documents")):
            if not isinstance(doc, Document):
                msg = f"documents[{i}] must be a Document, got {type(doc).__name__}"
                raise TypeError(msg)
            if not isinstance(doc.id, str) or not doc.id:
                msg = f"documents[{i}].id must be a non-empty string, got {doc.id!r:.60}"
                raise TypeError(msg)
            check_text(doc.id, f"documents[{i}].id")
            check_text(doc.text, f"documents[{i}].text")
            docs.append(Document(doc.id, doc.text, validate_metadata(doc.metadata, f"metadatas[{i}]")))
        seen: set[str] = set()
        for doc in docs:
            if doc.id in self._ids or doc.id in seen:
                msg = f"duplicate document id {doc.id!r}: ids must be unique; delete it first to replace it"
                raise ValueError(msg)
            seen.add(doc.id)
        if not docs:
            return []
        if embeddings is None:
            vectors = self.embedder.encode([d.text for d in docs], show_progress=self.show_progress)
        else:
            vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1) if vectors.ndim == 2 else np.zeros(0)
            if vectors.ndim == 2 and not np.allclose(norms, 1.0, atol=1e-3):
                msg = "embeddings must be L2-normalised (inner product is cosine only for unit vectors)"
                raise ValueError(msg)
        self._add_vectors(docs, vectors)
        return [d.id for d in docs]

    def _add_vectors(self, docs: Sequence[Document], vectors: FloatArray) -> None:
        if vectors.shape != (len(docs), self.dimension):
            msg = f"expected vectors of shape {(len(docs), self.dimension)}, got {vectors.shape}"
            raise ValueError(msg)
        if not np.all(np.isfinite(vectors)):
            msg = "embeddings must be finite (got NaN or infinity)"
            raise ValueError(msg)
        tokens = self._lexical.tokenize([d.text for d in docs]) if self._lexical is not None else None
        with self._lock:
            self._add_vectors_locked(docs, vectors, tokens)

    def _add_vectors_locked(
        self, docs: Sequence[Document], vectors: FloatArray, tokens: list[list[str]] | None
    ) -> None:
        for doc in docs:  # again under the lock: another thread may have added the id meanwhile
            if doc.id in self._ids:
                msg = f"duplicate document id {doc.id!r}: ids must be unique; delete it first to replace it"
                raise ValueError(msg)
        faiss_index = self._faiss_index
        if faiss_index is None:
            faiss_index = self._new_index(len(docs))
            faiss_index.train(vectors)
        int_ids = np.arange(self._next_id, self._next_id + len(docs), dtype=np.int64)
        faiss_index.add_with_ids(vectors, int_ids)  # the one step that can fail: nothing else changed yet
        self._faiss_index = faiss_index
        for int_id, doc in zip(int_ids.tolist(), docs, strict=True):
            self._docs[int_id] = doc
            self._ids[doc.id] = int_id
        if self._lexical is not None and tokens is not None:
            self._lexical.set_tokens(int_ids.tolist(), tokens)
        self._next_id += len(docs)

    def delete(self, ids: Iterable[str]) -> None:
        """Remove documents by id without rebuilding; all of them or, on any error, none.

        An id given twice is removed once. KeyError names any unknown id (nothing is removed then);
        a bare string is a TypeError (it would be read as one id per character).
        """
        given = check_sequence(ids, "ids")
        for i, doc_id in enumerate(given):
            if not isinstance(doc_id, str):
                msg = f"ids[{i}] must be a string, got {type(doc_id).__name__}"
                raise TypeError(msg)
        wanted = list(dict.fromkeys(given))
        with self._lock:
            self._delete_locked(wanted)

    def _delete_locked(self, wanted: list[str]) -> None:
        unknown = [i for i in wanted if i not in self._ids]
        if unknown:
            msg = f"cannot delete unknown document ids {unknown[:10]}"
            raise KeyError(msg)
        int_ids = np.asarray([self._ids[i] for i in wanted], dtype=np.int64)
        if len(int_ids) == 0:
            return
        if self.index_type == "hnsw":
            self._deleted.update(int_ids.tolist())
        else:
            removed = self._faiss_index.remove_ids(int_ids)
            if removed != len(int_ids):
                msg = f"FAISS removed {removed} of {len(int_ids)} vectors; the index is unchanged"
                raise RuntimeError(msg)
        for doc_id, int_id in zip(wanted, int_ids.tolist(), strict=True):
            del self._ids[doc_id]
            del self._docs[int_id]
        if self._lexical is not None:
            self._lexical.remove(int_ids.tolist())

    # -- search -------------------------------------------------------------------------------
    def search(
        self, query: str, k: int = 10, *, where: MetadataFilter | None = None, mode: RetrievalMode | None = None
    ) -> list[SearchHit]:
        """The ``k`` best documents for ``query`` (fewer if fewer exist or match ``where``).

        ``mode`` overrides the index's default (``"dense"``, ``"bm25"``, ``"hybrid"``). A hit's score is
        the cosine (dense), the BM25 score (bm25) or the fused score (hybrid).
        """
        check_query(query)
        return self.search_many([query], k, where=where, mode=mode)[0]

    def search_many(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        where: MetadataFilter | None = None,
        mode: RetrievalMode | None = None,
    ) -> list[list[SearchHit]]:
        """Batched :meth:`search`: one embedding pass and one FAISS call for all ``queries``."""
        if isinstance(queries, str):
            msg = "search_many takes a list of query strings; use search() for one query"
            raise TypeError(msg)
        queries = check_sequence(queries, "queries")
        for i, q in enumerate(queries):
            check_query(q, f"queries[{i}]")
        check_search_settings(k, mode, self)  # the same check the retrievers make when built
        _check_where(where)
        mode = self.mode if mode is None else mode  # the index's own mode was checked when it was built
        if not queries:
            return []
        if mode == "bm25":
            return [self._search_lexical(q, k, where) for q in queries]
        depth = k if mode == "dense" else max(k, HYBRID_DEPTH)
        vectors = self.embedder.encode(list(queries), show_progress=False)
        dense = self.search_vectors(vectors, depth, where=where)
        if mode == "dense":
            return dense
        return [
            self._fuse(hits, self._search_lexical(q, depth, where), k) for q, hits in zip(queries, dense, strict=True)
        ]

    def _search_lexical(self, query: str, k: int, where: MetadataFilter | None) -> list[SearchHit]:
        assert self._lexical is not None
        with self._lock:
            allowed = None if where is None else {i for i, d in self._docs.items() if matches(d.metadata, where)}
            found = self._lexical.search(query, k, allowed)
            return [
                SearchHit(self._docs[i].id, score, self._docs[i].text, dict(self._docs[i].metadata))
                for i, score in found
            ]

    def _fuse(self, dense: list[SearchHit], lexical: list[SearchHit], k: int) -> list[SearchHit]:
        """Hybrid: fuse the dense and BM25 lists (a document missing from one list gets nothing from it)."""
        by_id = {h.id: h for h in [*dense, *lexical]}
        w = self.hybrid_weight
        if self.hybrid_fusion == "rrf":
            scores = {h.id: w / (60 + r) for r, h in enumerate(dense, 1)}
            for r, h in enumerate(lexical, 1):
                scores[h.id] = scores.get(h.id, 0.0) + (1 - w) / (60 + r)
        else:
            scores = {}
            for weight, hits in ((w, dense), (1 - w, lexical)):
                if not hits:
                    continue
                hi, lo = hits[0].score, min(h.score for h in hits)
                span = hi - lo
                for h in hits:
                    scores[h.id] = scores.get(h.id, 0.0) + weight * ((h.score - lo) / span if span > 0 else 1.0)
        order = sorted(by_id, key=lambda i: -scores[i])[:k]  # stable: dense order first on ties
        return [SearchHit(i, float(scores[i]), by_id[i].text, dict(by_id[i].metadata)) for i in order]

    @property
    def lexical(self) -> bool:
        """Whether a BM25 index is kept beside the vectors."""
        return self._lexical is not None

    def search_vectors(
        self, vectors: FloatArray, k: int, *, where: MetadataFilter | None = None
    ) -> list[list[SearchHit]]:
        """Search with precomputed unit query vectors of shape ``(n, dimension)``."""
        _check_where(where)
        with self._lock:
            return self._search_vectors_locked(vectors, k, where)

    def _search_vectors_locked(
        self, vectors: FloatArray, k: int, where: MetadataFilter | None
    ) -> list[list[SearchHit]]:
        if len(self._docs) == 0:
            return [[] for _ in range(len(vectors))]
        faiss = _faiss()
        allowed: list[int] | None = None
        if where is not None:
            allowed = [i for i, d in self._docs.items() if matches(d.metadata, where)]
            if len(allowed) < k:
                logger.warning("filter %r matches %d documents, fewer than k=%d", dict(where), len(allowed), k)
            if not allowed:
                return [[] for _ in range(len(vectors))]
        selector = None
        if allowed is not None:
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        elif self._deleted:
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.asarray(sorted(self._deleted), dtype=np.int64)))
        k_eff = min(k, len(self._docs) if allowed is None else len(allowed))
        params = self._search_params(selector)
        scores, int_ids = self._faiss_index.search(
            np.ascontiguousarray(vectors, dtype=np.float32), k_eff, params=params
        )
        results: list[list[SearchHit]] = []
        for row_scores, row_ids in zip(scores, int_ids, strict=True):
            hits = []
            for score, int_id in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
                doc = self._docs.get(int_id)
                if int_id < 0 or doc is None:
                    continue
                hits.append(SearchHit(doc.id, float(score), doc.text, dict(doc.metadata)))
            results.append(hits)
        return results

    def _search_params(self, selector: Any) -> Any:
        faiss = _faiss()
        if self.index_type == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=self.params["ef_search"])
        if self.index_type == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.params["nprobe"])
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index atomically to ``directory`` (see :func:`save_index`)."""
        from ce_rerank_plugins.retrieval._persistence import save_index

        return save_index(self, Path(directory))

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        embedder: Embedder | str | os.PathLike[str] | None = None,
        embedder_runtime: EmbedderRuntime = "torch",
    ) -> FaissIndex:
        """Load an index saved by :meth:`save`, checking its manifest (see :func:`load_index`).

        ``embedder_runtime`` (``"torch"``, ``"onnx"`` or ``"auto"``) says what runs the embedder loaded
        for it; ``"onnx"`` lets a later process embed queries without importing torch.
        """
        from ce_rerank_plugins.retrieval._persistence import load_index

        return load_index(Path(directory), embedder=embedder, embedder_runtime=embedder_runtime)
