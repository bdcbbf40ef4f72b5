"""The shared cross-encoder core: no LangChain or LlamaIndex imports here."""

from __future__ import annotations

from ce_rerank_plugins.core._cache import CacheInfo, ScoreCache
from ce_rerank_plugins.core._fusion import Fusion, applied_fusion, check_first_stage, check_fusion, fuse_scores
from ce_rerank_plugins.core._hardware import (
    THREADS_ENV_VAR,
    Threads,
    apply_thread_policy,
    check_threads,
    default_threads,
    device_has_native_bf16,
    resolve_device,
    set_threads,
)
from ce_rerank_plugins.core._loading import (
    HUB_DEFAULT_MODEL,
    MODEL_ENV_VAR,
    ModelKey,
    bundled_model_dir,
    default_model,
    quiet_weight_loading,
    untrained_cross_encoder,
)
from ce_rerank_plugins.core._onnx_engine import (
    FastStart,
    OnnxTextEncoder,
    onnx_fast_start,
    onnx_fast_start_lost,
    onnx_fast_start_ready,
)
from ce_rerank_plugins.core._registry import ModelRegistry
from ce_rerank_plugins.core._scores import FloatArray, ScoreMode
from ce_rerank_plugins.core.reranker import (
    SHARED_MODELS,
    CrossEncoderReranker,
    PairClassification,
    Precision,
    RankedResult,
    Reranker,
    check_rank_options,
    select_results,
)

__all__ = [
    "HUB_DEFAULT_MODEL",
    "MODEL_ENV_VAR",
    "SHARED_MODELS",
    "THREADS_ENV_VAR",
    "CacheInfo",
    "CrossEncoderReranker",
    "FastStart",
    "FloatArray",
    "Fusion",
    "ModelKey",
    "ModelRegistry",
    "OnnxTextEncoder",
    "PairClassification",
    "Precision",
    "RankedResult",
    "Reranker",
    "ScoreCache",
    "ScoreMode",
    "Threads",
    "applied_fusion",
    "apply_thread_policy",
    "bundled_model_dir",
    "check_first_stage",
    "check_fusion",
    "check_rank_options",
    "check_threads",
    "default_model",
    "default_threads",
    "device_has_native_bf16",
    "fuse_scores",
    "onnx_fast_start",
    "onnx_fast_start_lost",
    "onnx_fast_start_ready",
    "quiet_weight_loading",
    "resolve_device",
    "select_results",
    "set_threads",
    "untrained_cross_encoder",
]
