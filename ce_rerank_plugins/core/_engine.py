"""The scoring engine: one loaded cross-encoder, its tokenizer, and the only code that touches them.

An engine is what the registry shares. All model and tokenizer use happens under one lock (or on
the micro-batch worker thread, which takes the same lock), so concurrent callers can neither race
the Rust tokenizer ("Already borrowed") nor see each other's settings.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ce_rerank_plugins.core._loading import ModelKey, load_cross_encoder, to_precision
from ce_rerank_plugins.core._microbatch import MicroBatcher, Pair, length_sorted_batches, token_windows
from ce_rerank_plugins.core._onnx import ONNX_PRECISIONS, OnnxRunner, model_input_names, onnx_file
from ce_rerank_plugins.core._onnx_engine import OnnxPairEngine, export_pair_engine, load_fast_pair_engine
from ce_rerank_plugins.core._probe import (
    DEFAULT_MIN_PROBE_SPEARMAN,
    ProbeAgreement,
    compare_to_reference,
    probe_pairs,
    trying_paths_now,
)
from ce_rerank_plugins.core._scores import FloatArray

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MIN_PROBE_SPEARMAN", "FALLBACK_MAX_LENGTH", "ScoringEngine", "build_engine"]

#: Token budget used when a model declares none (BERT-style models handle 512 positions).
FALLBACK_MAX_LENGTH = 512


class ScoringEngine:
    """A loaded cross-encoder that scores (text_a, text_b) pairs into raw logits.

    Build one with :func:`build_engine`; share it through the registry.
    """

    def __init__(
        self,
        model: Any,
        key: ModelKey,
        *,
        precision: str,
        probe: ProbeAgreement | None = None,
        runner: OnnxRunner | None = None,
    ) -> None:
        self.model = model
        self.runner = runner
        self.key = key
        self.precision = precision
        self.probe = probe
        self.fallback_reason: str | None = None
        self.tokenizer = model.tokenizer
        config = model.config
        self.num_labels: int = int(model.num_labels)
        id2label = getattr(config, "id2label", None) or {}
        self.labels: tuple[str, ...] = tuple(str(id2label.get(i, f"LABEL_{i}")) for i in range(self.num_labels))
        self.activation_name: str = type(model.activation_fn).__name__
        declared = key.max_length or model.max_seq_length or FALLBACK_MAX_LENGTH
        positions = getattr(config, "max_position_embeddings", None) or declared
        self.max_length: int = int(min(declared, positions))
        self.pair_special_tokens: int = int(self.tokenizer.num_special_tokens_to_add(pair=True))
        self.lock = threading.RLock()
        self.batcher = MicroBatcher(self.score_logits)

    # -- tokenizer helpers ------------------------------------------------------------------
    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` without special tokens."""
        if not texts:
            return []
        with self.lock:
            encoded = self.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def passage_windows(self, passage: str, budget: int, overlap: int) -> list[str]:
        """Split ``passage`` into overlapping windows of at most ``budget`` tokens (character slices)."""
        with self.lock:
            encoded = self.tokenizer(passage, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        return token_windows(passage, encoded["offset_mapping"], budget, overlap)

    # -- scoring ----------------------------------------------------------------------------
    def score_logits(self, pairs: Sequence[Pair], batch_size: int) -> FloatArray:
        """Raw logits of shape ``(len(pairs), num_labels)``, computed in length-sorted batches.

        Passages are truncated to fit ``max_length`` (``only_second``): the query is never cut.
        """
        import torch

        if not pairs:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        out = np.empty((len(pairs), self.num_labels), dtype=np.float32)
        processing = {"text": {"truncation": "only_second", "max_length": self.max_length}}
        with self.lock, torch.inference_mode():
            for idx in length_sorted_batches(pairs, batch_size):
                batch = [list(pairs[i]) for i in idx]
                features = self.model.preprocess(batch, processing_kwargs=processing)
                if self.runner is not None:
                    out[idx] = self.runner(features).reshape(len(idx), -1)
                    continue
                features = {k: v.to(self.model.device) if torch.is_tensor(v) else v for k, v in features.items()}
                scores = self.model(features)["scores"]
                out[idx] = scores.float().reshape(len(idx), -1).cpu().numpy()
        return out


def _probe_logits(engine_model: Any, key: ModelKey, precision: str, runner: OnnxRunner | None = None) -> FloatArray:
    engine = ScoringEngine(engine_model, key, precision=precision, runner=runner)
    return engine.score_logits(probe_pairs(), batch_size=16)


def _candidate(model: Any, key: ModelKey) -> tuple[Any, OnnxRunner | None]:
    """The model object and, for ONNX paths, the runtime session that replaces its forward pass."""
    if key.precision in ONNX_PRECISIONS:  # on CPU: CrossEncoderReranker refuses another device
        names = model_input_names(model)
        return model, OnnxRunner(onnx_file(model, key.model, key.precision, names), names)
    return to_precision(copy.deepcopy(model), key.precision), None


def build_engine(
    key: ModelKey, *, min_probe_spearman: float = DEFAULT_MIN_PROBE_SPEARMAN
) -> ScoringEngine | OnnxPairEngine:
    """Load the model for ``key`` and prepare its inference path.

    A faster path than fp32 is checked against fp32 on a fixed probe set and replaced by fp32 (with a
    logged reason, kept in ``engine.fallback_reason``) when it would change rankings.

    ``precision="onnx"`` for a local model starts without torch when an export of the model's current
    files has passed the probe before (``core._onnx_engine``); otherwise it is exported and probed here.
    """
    fast = load_fast_pair_engine(key, min_probe_spearman)
    if fast is not None:
        return fast
    model = load_cross_encoder(key)
    if key.precision == "fp32":
        return ScoringEngine(model, key, precision="fp32")
    reference = _probe_logits(model, key, "fp32")
    exported = export_pair_engine(model, key, reference) if key.precision == "onnx" else None
    if exported is not None:  # the torch-free engine, probed with its own tokenizer
        onnx_engine, agreement = exported
        if agreement.acceptable(min_probe_spearman):
            return onnx_engine
    else:
        candidate_model, runner = _candidate(model, key)
        agreement = compare_to_reference(reference, _probe_logits(candidate_model, key, key.precision, runner))
        if agreement.acceptable(min_probe_spearman):
            del model
            return ScoringEngine(candidate_model, key, precision=key.precision, probe=agreement, runner=runner)
    reason = (
        f"{key.precision} changed probe rankings (min Spearman {agreement.min_spearman:.4f} < "
        f"{min_probe_spearman}, top-1 kept: {agreement.top1_agree}); using fp32 for {key.model!r}"
    )
    logger.log(logging.INFO if trying_paths_now() else logging.WARNING, reason)
    engine = ScoringEngine(model, key, precision="fp32", probe=agreement)
    engine.fallback_reason = reason
    return engine
