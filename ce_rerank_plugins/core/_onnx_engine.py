"""The fast start: a verified ONNX export run with ONNX Runtime and ``tokenizers`` alone.

Importing sentence-transformers costs ~4.5 s on 2 cores (torch, transformers, scikit-learn, scipy),
several times the work of a one-shot query. Once a model's export has passed its probe (recorded in the
cache manifest by ``core._onnx``), a later process scores with it here without importing any of them:
``onnxruntime`` and ``tokenizers`` import in ~0.15 s.

Two models are served this way: a cross-encoder (:class:`OnnxPairEngine`, the same interface as
``core._engine.ScoringEngine``) and a mean-pooled bi-encoder (:class:`OnnxTextEncoder`). Both are
verified on export: the ``tokenizers`` settings must give exactly the token ids sentence-transformers
gives (truncation included), and the scores must rank the probe set like the fp32 model.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ce_rerank_plugins.core._loading import ModelKey
from ce_rerank_plugins.core._microbatch import MicroBatcher, Pair, length_sorted_batches, token_windows
from ce_rerank_plugins.core._onnx import OnnxRunner, find_export, model_input_names, onnx_file, record_runtime
from ce_rerank_plugins.core._probe import (
    DEFAULT_MIN_PROBE_SPEARMAN,
    PROBE_QUERIES,
    ProbeAgreement,
    compare_to_reference,
    probe_pairs,
)
from ce_rerank_plugins.core._scores import FloatArray

logger = logging.getLogger(__name__)

PAIR_KIND = "cross-encoder"
TEXT_KIND = "bi-encoder"
TOKENIZER_FILE = "tokenizer.json"
#: Agreement a bi-encoder export must reach with fp32 sentence-transformers embeddings.
MIN_TEXT_COSINE = 0.9999
MIN_TEXT_SPEARMAN = 0.999

#: Texts whose token ids the fast tokenizer must reproduce exactly: case, accents, CJK, emoji,
#: punctuation runs, and a passage long enough to be truncated.
PARITY_TEXTS = (
    "How many people live in Lyon?",
    "Ça coûte 3,50 € — naïve café, Straße, ΑΒΓ, 東京は日本の首都です。🙂",
    "python list remove duplicates keep order!!! ...??",
    "Caffeine blocks adenosine receptors; its half-life is about five hours. " * 40,
)


#: Why a fast start made earlier cannot run when ONNX Runtime has gone (both the pair and text engines).
NO_ONNX_RUNTIME = "ONNX Runtime is not installed; install it with: pip install 'ce-rerank-plugins[onnx]'"


def fast_start_available() -> bool:
    """True when ONNX Runtime and ``tokenizers`` are installed (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "tokenizers"))


def tokenizer_settings(hf_tokenizer: Any) -> dict[str, Any] | None:
    """What ``tokenizers`` needs to pad and truncate like this transformers tokenizer; None if it is not a fast one."""
    if not getattr(hf_tokenizer, "is_fast", False) or hf_tokenizer.pad_token_id is None:
        return None
    return {
        "pad_token": str(hf_tokenizer.pad_token),
        "pad_id": int(hf_tokenizer.pad_token_id),
        "pad_type_id": int(getattr(hf_tokenizer, "pad_token_type_id", 0) or 0),
        "padding_side": str(hf_tokenizer.padding_side),
        "truncation_side": str(hf_tokenizer.truncation_side),
    }


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` read from a model's ``tokenizer.json``, padded and truncated as recorded."""

    def __init__(self, path: Path, settings: Mapping[str, Any], input_names: Sequence[str]) -> None:
        from tokenizers import Tokenizer

        self.plain = Tokenizer.from_file(str(path))
        self.plain.no_truncation()
        self.plain.no_padding()
        self.batched = Tokenizer.from_file(str(path))
        self.batched.enable_padding(
            direction=settings["padding_side"],
            pad_id=settings["pad_id"],
            pad_type_id=settings["pad_type_id"],
            pad_token=settings["pad_token"],
        )
        self.truncation_side = str(settings["truncation_side"])
        self.input_names = list(input_names)
        self._max_length: int | None = None
        self._strategy: str | None = None

    def encode(
        self, inputs: Sequence[str] | Sequence[tuple[str, str]], max_length: int, strategy: str
    ) -> dict[str, np.ndarray[Any, np.dtype[np.int64]]]:
        """Token ids, attention mask and token types of a batch, padded to its longest member."""
        if (max_length, strategy) != (self._max_length, self._strategy):
            self.batched.enable_truncation(max_length, strategy=strategy, direction=self.truncation_side)
            self._max_length, self._strategy = max_length, strategy
        encodings = self.batched.encode_batch(list(inputs))
        arrays = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: arrays[name] for name in self.input_names}

    def counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts without special tokens."""
        return [len(e.ids) for e in self.plain.encode_batch(list(texts), add_special_tokens=False)]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (no special tokens)."""
        return list(self.plain.encode(text, add_special_tokens=False).offsets)


def _same_ids(expected: Mapping[str, Any], got: Mapping[str, Any]) -> bool:
    for name, array in got.items():
        reference = expected[name]
        reference = reference.detach().cpu().numpy() if hasattr(reference, "detach") else np.asarray(reference)
        if reference.shape != array.shape or not np.array_equal(reference, array):
            return False
    return True


# -- the cross-encoder ---------------------------------------------------------------------------


class OnnxPairEngine:
    """A cross-encoder scored by ONNX Runtime, with the interface of ``ScoringEngine``.

    ``model`` (the sentence-transformers ``CrossEncoder``) is loaded only if someone asks for it;
    scoring never needs it.
    """

    runner: OnnxRunner

    def __init__(
        self,
        key: ModelKey,
        graph: Path,
        runtime: Mapping[str, Any],
        *,
        model: Any | None = None,
        probe: ProbeAgreement | None = None,
    ) -> None:
        self.key = key
        self.precision = "onnx"
        self.probe = probe
        self.fallback_reason: str | None = None
        self.fast_start = True
        self.num_labels: int = int(runtime["num_labels"])
        self.labels: tuple[str, ...] = tuple(str(label) for label in runtime["labels"])
        self.activation_name: str = str(runtime["activation"])
        declared = key.max_length or runtime["max_length"]
        self.max_length: int = int(min(declared, runtime["max_positions"]))
        self.pair_special_tokens: int = int(runtime["pair_special_tokens"])
        self.tokenizer = FastTokenizer(Path(key.model) / TOKENIZER_FILE, runtime["tokenizer"], runtime["input_names"])
        self.runner = OnnxRunner(graph, list(runtime["input_names"]))
        self.lock = threading.RLock()
        self.batcher = MicroBatcher(self.score_logits)
        self._model = model

    @property
    def model(self) -> Any:
        """The fp32 sentence-transformers ``CrossEncoder``, loaded on first access (imports torch)."""
        with self.lock:
            if self._model is None:
                from ce_rerank_plugins.core._loading import load_cross_encoder

                self._model = load_cross_encoder(dataclasses.replace(self.key, precision="fp32"))
            return self._model

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` without special tokens."""
        if not texts:
            return []
        with self.lock:
            return self.tokenizer.counts(texts)

    def passage_windows(self, passage: str, budget: int, overlap: int) -> list[str]:
        """Split ``passage`` into overlapping windows of at most ``budget`` tokens (character slices)."""
        with self.lock:
            offsets = self.tokenizer.offsets(passage)
        return token_windows(passage, offsets, budget, overlap)

    def score_logits(self, pairs: Sequence[Pair], batch_size: int) -> FloatArray:
        """Raw logits of shape ``(len(pairs), num_labels)``; passages truncated to ``max_length``, never queries."""
        out = np.empty((len(pairs), self.num_labels), dtype=np.float32)
        with self.lock:
            for idx in length_sorted_batches(pairs, batch_size):
                features = self.tokenizer.encode([pairs[i] for i in idx], self.max_length, "only_second")
                out[idx] = self.runner(features).reshape(len(idx), -1)
        return out


def _verified_pair_export(model: str, min_probe_spearman: float) -> tuple[Path, dict[str, Any], ProbeAgreement] | None:
    return _pair_export(model, min_probe_spearman)[0]


def _pair_export(
    model: str, min_probe_spearman: float
) -> tuple[tuple[Path, dict[str, Any], ProbeAgreement] | None, str | None]:
    """The verified export and its probe, or None and why an earlier export cannot serve (see ``find_export``)."""
    found, why_not = find_export(Path(model), PAIR_KIND)
    if found is None:
        return None, why_not
    if not fast_start_available():
        return None, NO_ONNX_RUNTIME
    graph, runtime = found
    try:
        probe = ProbeAgreement(**runtime["probe"])
    except (KeyError, TypeError):
        return None, None
    if not probe.acceptable(min_probe_spearman):
        logger.info(
            "the cached ONNX export of %s failed its probe (min Spearman %.4f); not using it",
            model,
            probe.min_spearman,
        )
        return None, f"its ONNX export failed the probe against fp32 (min Spearman {probe.min_spearman:.4f})"
    return (graph, runtime, probe), None


class FastStart(NamedTuple):
    """Whether a model starts without torch (``ready``), and if not, why a fast start made before was ``lost``.

    ``lost`` is None when the start is fast, and when no export was ever made (nothing was lost).
    """

    ready: bool
    lost: str | None


def onnx_fast_start(model: str, min_probe_spearman: float = DEFAULT_MIN_PROBE_SPEARMAN) -> FastStart:
    """:func:`onnx_fast_start_ready` and :func:`onnx_fast_start_lost` in one look (the graph is hashed once)."""
    found, lost = _pair_export(model, min_probe_spearman)
    return FastStart(ready=found is not None, lost=lost)


def onnx_fast_start_ready(model: str, min_probe_spearman: float = DEFAULT_MIN_PROBE_SPEARMAN) -> bool:
    """True when ``CrossEncoderReranker(model, precision="onnx")`` would start without importing torch.

    That is: ``model`` is a local directory whose current files have a cached export that passed the
    probe, and ONNX Runtime is installed.
    """
    return onnx_fast_start(model, min_probe_spearman).ready


def onnx_fast_start_lost(model: str, min_probe_spearman: float = DEFAULT_MIN_PROBE_SPEARMAN) -> str | None:
    """Why ``model`` starts on torch although it was exported for the fast start before; None otherwise.

    None also when it was never exported (nothing was lost). The CLI says this reason, since a start
    that took a second yesterday and takes nine today is otherwise a mystery.
    """
    return onnx_fast_start(model, min_probe_spearman).lost


def load_fast_pair_engine(key: ModelKey, min_probe_spearman: float) -> OnnxPairEngine | None:
    """The torch-free engine for ``key`` if a verified export of its files is cached, else None.

    Only ``precision="onnx"`` on CPU, for a local model directory without remote code, qualifies.
    """
    if key.precision != "onnx" or key.device != "cpu" or key.trust_remote_code:
        return None
    found = _verified_pair_export(key.model, min_probe_spearman)
    if found is None:
        return None
    graph, runtime, probe = found
    try:
        return OnnxPairEngine(key, graph, runtime, probe=probe)
    except Exception as exc:  # a damaged file or a changed runtime: the slow path rebuilds it
        logger.warning("the cached ONNX export of %s could not be loaded (%s); exporting again", key.model, exc)
        return None


def export_pair_engine(
    model: Any, key: ModelKey, reference: FloatArray
) -> tuple[OnnxPairEngine, ProbeAgreement] | None:
    """Export the loaded ``CrossEncoder``; return its torch-free engine and probe figures (recorded too).

    ``reference`` is the fp32 model's logits on ``probe_pairs()``. None (and nothing recorded) when the
    model cannot run this way: not a local directory, no fast tokenizer, or the fast tokenizer does
    not reproduce sentence-transformers' token ids.
    """
    model_dir = Path(key.model)
    settings = tokenizer_settings(model.tokenizer)
    if not model_dir.is_dir() or settings is None or not (model_dir / TOKENIZER_FILE).is_file():
        return None
    names = model_input_names(model)
    graph = onnx_file(model, key.model, "onnx", names)
    config = model.config
    id2label = getattr(config, "id2label", None) or {}
    runtime: dict[str, Any] = {
        "kind": PAIR_KIND,
        "input_names": names,
        "tokenizer": settings,
        "num_labels": int(model.num_labels),
        "labels": [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.num_labels)],
        "activation": type(model.activation_fn).__name__,
        "max_length": int(model.max_seq_length or 512),
        "max_positions": int(getattr(config, "max_position_embeddings", None) or model.max_seq_length or 512),
        "pair_special_tokens": int(model.tokenizer.num_special_tokens_to_add(pair=True)),
    }
    engine = OnnxPairEngine(key, graph, runtime, model=model)
    pairs = [(PARITY_TEXTS[0], text) for text in PARITY_TEXTS]
    for max_length in (engine.max_length, 16):
        processing = {"text": {"truncation": "only_second", "max_length": max_length}}
        expected = model.preprocess([list(p) for p in pairs], processing_kwargs=processing)
        if not _same_ids(expected, engine.tokenizer.encode(pairs, max_length, "only_second")):
            logger.info("tokenizers does not reproduce the token ids of %s; no torch-free start for it", key.model)
            return None
    agreement = compare_to_reference(reference, engine.score_logits(probe_pairs(), batch_size=16))
    engine.probe = agreement
    _record_or_warn(graph, runtime | {"probe": dataclasses.asdict(agreement)})
    return engine, agreement


def _record_or_warn(graph: Path, runtime: Mapping[str, Any]) -> None:
    # The export works in this process either way; an unrecorded one is only exported again next time.
    try:
        record_runtime(graph, runtime)
    except (OSError, ValueError) as exc:
        logger.warning("could not record how to run %s without torch (%s); it will be checked again", graph, exc)


# -- the bi-encoder ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextProbe:
    """How closely an exported bi-encoder follows sentence-transformers on the probe texts."""

    min_cosine: float
    min_spearman: float
    top1_agree: bool

    def acceptable(self) -> bool:
        """True when every embedding points the same way and every probe query ranks its passages alike."""
        return self.top1_agree and self.min_cosine >= MIN_TEXT_COSINE and self.min_spearman >= MIN_TEXT_SPEARMAN


class OnnxTextEncoder:
    """A mean-pooled bi-encoder run by ONNX Runtime: unit vectors, like the sentence-transformers model.

    Get one with :meth:`load_cached` (torch-free, from a verified export) or :meth:`export` (from a
    loaded ``SentenceTransformer``, which exports, checks and records it).
    """

    def __init__(self, model_dir: Path, graph: Path, runtime: Mapping[str, Any]) -> None:
        self.max_length = int(runtime["max_length"])
        self.dimension = int(runtime["dimension"])
        self.normalize = bool(runtime["normalize"])
        self.tokenizer = FastTokenizer(model_dir / TOKENIZER_FILE, runtime["tokenizer"], runtime["input_names"])
        self.runner = OnnxRunner(graph, list(runtime["input_names"]), output="last_hidden_state")
        self.lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int) -> FloatArray:
        """``(len(texts), dimension)`` float32 embeddings."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with self.lock:
            for idx in length_sorted_batches([(t, "") for t in texts], batch_size):
                features = self.tokenizer.encode([texts[i] for i in idx], self.max_length, "longest_first")
                hidden = self.runner(features)
                mask = features["attention_mask"][..., None].astype(np.float32)
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
                if self.normalize:
                    pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
                out[idx] = pooled
        return out

    @staticmethod
    def fast_start(model_dir: Path) -> FastStart:
        """:meth:`is_cached` and :meth:`fast_start_lost` in one look (the graph is hashed once)."""
        found, lost = _text_export(model_dir)
        return FastStart(ready=found is not None, lost=lost)

    @staticmethod
    def is_cached(model_dir: Path) -> bool:
        """True when an export of the directory's current files is cached and passed its probe."""
        return OnnxTextEncoder.fast_start(model_dir).ready

    @staticmethod
    def fast_start_lost(model_dir: Path) -> str | None:
        """Why a bi-encoder exported for the fast start before now embeds on torch; None otherwise."""
        return OnnxTextEncoder.fast_start(model_dir).lost

    @staticmethod
    def load_cached(model_dir: Path) -> OnnxTextEncoder | None:
        """The encoder of a verified cached export, without importing torch; None if there is none."""
        return load_fast_text_encoder(model_dir)

    @staticmethod
    def export(model: Any, source: str) -> tuple[OnnxTextEncoder | None, str]:
        """Export a loaded ``SentenceTransformer`` (see :func:`export_text_encoder`): the encoder, or None and why.

        Raises:
            ImportError: ONNX Runtime is not installed (the ``onnx`` extra).
        """
        if not fast_start_available():
            msg = "runtime='onnx' needs onnxruntime. Install it with: pip install 'ce-rerank-plugins[onnx]'"
            raise ImportError(msg)
        return export_text_encoder(model, source)


def _verified_text_export(model_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    return _text_export(model_dir)[0]


def _text_export(model_dir: Path) -> tuple[tuple[Path, dict[str, Any]] | None, str | None]:
    found, why_not = find_export(model_dir, TEXT_KIND)
    if found is None:
        return None, why_not
    if not fast_start_available():
        return None, NO_ONNX_RUNTIME
    try:
        accepted = TextProbe(**found[1]["probe"]).acceptable()
    except (KeyError, TypeError):
        return None, None
    if not accepted:
        logger.info("the cached ONNX export of %s failed its probe; not using it", model_dir)
        return None, "its ONNX export failed the probe against torch"
    return found, None


def load_fast_text_encoder(model_dir: Path) -> OnnxTextEncoder | None:
    """The torch-free bi-encoder for a local model directory if a verified export is cached, else None."""
    found = _verified_text_export(model_dir)
    if found is None:
        return None
    try:
        return OnnxTextEncoder(model_dir, *found)
    except Exception as exc:
        logger.warning("the cached ONNX export of %s could not be loaded (%s); exporting again", model_dir, exc)
        return None


def _text_probe(reference: FloatArray, candidate: FloatArray) -> TextProbe:
    cosines = (reference * candidate).sum(axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1) + 1e-12
    )
    n_queries = len(PROBE_QUERIES)
    queries_ref, passages_ref = reference[:n_queries], reference[n_queries:]
    queries_cand, passages_cand = candidate[:n_queries], candidate[n_queries:]
    # Score each probe query against its own passages, in probe_pairs() order, and compare the rankings.
    ref_scores, cand_scores, start = [], [], 0
    for q, (_, passages) in enumerate(PROBE_QUERIES):
        stop = start + len(passages)
        ref_scores.append(passages_ref[start:stop] @ queries_ref[q])
        cand_scores.append(passages_cand[start:stop] @ queries_cand[q])
        start = stop
    ranking = compare_to_reference(np.concatenate(ref_scores)[:, None], np.concatenate(cand_scores)[:, None])
    return TextProbe(float(cosines.min()), ranking.min_spearman, ranking.top1_agree)


def export_text_encoder(model: Any, source: str) -> tuple[OnnxTextEncoder | None, str]:
    """Export a loaded ``SentenceTransformer`` bi-encoder and return its torch-free encoder, or None and why.

    Only the plain layout is supported: a transformer, mean pooling, and optionally normalisation.
    """
    model_dir = Path(source)
    layout = [type(module).__name__ for module in model]
    pooling = getattr(model[1], "pooling_mode", None) if len(layout) > 1 else None
    if layout not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) or pooling != "mean":
        return None, f"only transformer + mean pooling (+ normalize) bi-encoders can run on ONNX, not {layout}"
    settings = tokenizer_settings(model.tokenizer)
    if not model_dir.is_dir() or settings is None or not (model_dir / TOKENIZER_FILE).is_file():
        return None, "the ONNX runtime needs a local model directory with a fast tokenizer (tokenizer.json)"
    features = model.preprocess(["a"])
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in features]
    graph = onnx_file(model, source, "onnx", names, output="last_hidden_state")
    runtime: dict[str, Any] = {
        "kind": TEXT_KIND,
        "input_names": names,
        "tokenizer": settings,
        "max_length": int(model.max_seq_length),
        "dimension": int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()),
        "normalize": layout[-1] == "Normalize",
    }
    encoder = OnnxTextEncoder(model_dir, graph, runtime)
    expected = model.preprocess(list(PARITY_TEXTS))
    if not _same_ids(expected, encoder.tokenizer.encode(PARITY_TEXTS, encoder.max_length, "longest_first")):
        return None, "tokenizers does not reproduce this model's token ids"
    texts = [query for query, _ in PROBE_QUERIES] + [p for _, passages in PROBE_QUERIES for p in passages]
    reference = np.asarray(model.encode(texts, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
    probe = _text_probe(reference, encoder.encode(texts, batch_size=8))
    _record_or_warn(graph, runtime | {"probe": dataclasses.asdict(probe)})
    if not probe.acceptable():
        return None, (
            f"the ONNX export changed embeddings (min cosine {probe.min_cosine:.6f}, "
            f"min Spearman {probe.min_spearman:.4f}, top-1 kept: {probe.top1_agree})"
        )
    return encoder, ""
