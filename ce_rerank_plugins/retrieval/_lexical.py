"""A BM25 index kept beside the FAISS index (``bm25s``, English stop words, Snowball stemmer).

It holds one row per live document, in the FAISS index's internal id order. ``bm25s`` cannot add or
remove documents, so a change marks the index stale and the next lexical search (or save) rebuilds it
from the stored token lists: cheap at the corpus sizes this package targets (about a second for 5,000
passages on 2 cores), and always exactly the index a fresh build would give.

Saved as two files of the index's generation, both checksummed in its manifest, neither a pickle:
``lexical.npz`` (the sparse score matrix and the row -> document map, loaded with
``allow_pickle=False``) and ``lexical.json`` (parameters and vocabulary).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ce_rerank_plugins._optional import require

LEXICAL_ARRAYS = "lexical.npz"
LEXICAL_META = "lexical.json"


@dataclass(frozen=True)
class BM25Params:
    """BM25's saturation ``k1`` and length normalisation ``b`` (0.9 / 0.4: the Anserini defaults)."""

    k1: float = 0.9
    b: float = 0.4


def _bm25s() -> Any:
    return require("bm25s", "hybrid", purpose="BM25 (lexical) retrieval")


class LexicalIndex:
    """BM25 over the live documents of a :class:`FaissIndex`, rebuilt lazily after changes."""

    def __init__(self, params: BM25Params | None = None) -> None:
        _bm25s()
        self.params = params or BM25Params()
        self._tokens: dict[int, list[str]] = {}  # internal id -> stemmed tokens
        self._model: Any = None
        self._rows: np.ndarray = np.zeros(0, dtype=np.int64)  # row -> internal id
        self._stale = True

    def _stemmer(self) -> Any:
        return require("Stemmer", "hybrid", purpose="BM25 (lexical) retrieval").Stemmer("english")

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """Stemmed, stop-word-free tokens of each text (as strings, so they survive any rebuild)."""
        if not texts:
            return []
        bm25s = _bm25s()
        out = bm25s.tokenize(
            list(texts), stopwords="en", stemmer=self._stemmer(), return_ids=False, show_progress=False
        )
        return [list(t) for t in out]

    def set_tokens(self, int_ids: Sequence[int], tokens: Sequence[list[str]]) -> None:
        """Index these documents' tokens (from :meth:`tokenize`) under their internal ids."""
        for int_id, doc_tokens in zip(int_ids, tokens, strict=True):
            self._tokens[int_id] = doc_tokens
        self._stale = True

    def remove(self, int_ids: Sequence[int]) -> None:
        for int_id in int_ids:
            self._tokens.pop(int_id, None)
        self._stale = True

    def _build(self) -> None:
        if not self._stale:
            return
        bm25s = _bm25s()
        rows = np.asarray(sorted(self._tokens), dtype=np.int64)
        model = bm25s.BM25(k1=self.params.k1, b=self.params.b)
        if len(rows):
            corpus = [self._tokens[int(i)] or [""] for i in rows]
            model.index(corpus, show_progress=False)
        self._model, self._rows, self._stale = model, rows, False

    def search(self, query: str, k: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """The ``k`` best (internal id, BM25 score) with a positive score, optionally only among ``allowed``."""
        self._build()
        if not len(self._rows):
            return []
        tokens = self.tokenize([query])[0]
        if not tokens:
            return []
        scores = np.asarray(self._model.get_scores(tokens), dtype=np.float64)
        if allowed is not None:
            scores = np.where(np.isin(self._rows, np.fromiter(allowed, dtype=np.int64)), scores, 0.0)
        candidates = np.flatnonzero(scores > 0)
        if not len(candidates):
            return []
        top = candidates[np.argsort(-scores[candidates], kind="stable")[:k]]
        return [(int(self._rows[i]), float(scores[i])) for i in top]

    # -- persistence ---------------------------------------------------------------------------
    def to_files(self) -> dict[str, bytes]:
        """The two files of a saved lexical index."""
        self._build()
        vocab = sorted(self._model.vocab_dict.items(), key=lambda kv: kv[1]) if len(self._rows) else []
        scores = self._model.scores if len(self._rows) else {}
        buffer = io.BytesIO()
        np.savez(
            buffer,
            data=np.asarray(scores.get("data", np.zeros(0)), dtype=np.float32),
            indices=np.asarray(scores.get("indices", np.zeros(0)), dtype=np.int32),
            indptr=np.asarray(scores.get("indptr", np.zeros(1)), dtype=np.int64),
            rows=self._rows,
        )
        meta = {
            "k1": self.params.k1,
            "b": self.params.b,
            "stopwords": "en",
            "stemmer": "snowball-english",
            "num_docs": int(scores.get("num_docs", 0)),
            "vocab": [token for token, _ in vocab],
            "tokens": {str(i): self._tokens[int(i)] for i in self._rows},
        }
        return {LEXICAL_ARRAYS: buffer.getvalue(), LEXICAL_META: json.dumps(meta, ensure_ascii=False).encode("utf-8")}

    @classmethod
    def from_files(cls, blobs: Mapping[str, bytes], live_ids: set[int]) -> LexicalIndex:
        """Rebuild the in-memory index from saved bytes; ValueError names what does not fit."""
        bm25s = _bm25s()
        meta = json.loads(blobs[LEXICAL_META].decode("utf-8"))
        if not isinstance(meta, dict):
            msg = f"{LEXICAL_META} is not a JSON object"
            raise ValueError(msg)
        with np.load(io.BytesIO(blobs[LEXICAL_ARRAYS]), allow_pickle=False) as arrays:
            data, indices, indptr, rows = (arrays[k] for k in ("data", "indices", "indptr", "rows"))
        index = cls(BM25Params(float(meta["k1"]), float(meta["b"])))
        index._tokens = {int(i): [str(t) for t in tokens] for i, tokens in meta["tokens"].items()}
        if set(index._tokens) != live_ids or sorted(index._tokens) != rows.tolist():
            msg = "the lexical index does not cover exactly the stored documents"
            raise ValueError(msg)
        vocab = [str(t) for t in meta["vocab"]]
        # bm25s's vocabulary may hold an extra empty token without a column of its own.
        fits = len(vocab) <= len(indptr) <= len(vocab) + 1 and indptr[-1] == len(data) == len(indices)
        if len(rows) and (not fits or (len(indices) and int(indices.max()) >= len(rows))):
            msg = "the lexical index's arrays do not fit its vocabulary"
            raise ValueError(msg)
        model = bm25s.BM25(k1=index.params.k1, b=index.params.b)
        if len(rows):
            model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": int(meta["num_docs"])}
            model.vocab_dict = {token: i for i, token in enumerate(vocab)}
            model.unique_token_ids_set = set(model.vocab_dict.values())
            model.nonoccurrence_array = None  # only BM25L / BM25+ use it; this index is Lucene BM25
        index._model, index._rows, index._stale = model, rows.astype(np.int64), False
        return index
