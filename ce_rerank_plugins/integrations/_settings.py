"""What both adapters share: turning their settings into the one shared core reranker."""

from __future__ import annotations

from ce_rerank_plugins.core import CrossEncoderReranker, Precision, ScoreMode, default_model


def build_reranker(
    model: str | None,
    *,
    device: str,
    precision: Precision,
    max_length: int | None,
    batch_size: int | None,
    score_mode: ScoreMode,
    trust_remote_code: bool,
) -> CrossEncoderReranker:
    """A core reranker for these settings; equal settings share one loaded model (the registry)."""
    return CrossEncoderReranker(
        model or default_model(),
        device=device,
        precision=precision,
        max_length=max_length,
        batch_size=batch_size,
        score_mode=score_mode,
        trust_remote_code=trust_remote_code,
    )
