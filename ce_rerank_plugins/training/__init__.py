"""Training cross-encoders: pairs, hard-negative mining, and a thin wrapper over the ST trainer."""

from __future__ import annotations

from ce_rerank_plugins.training.pairs import (
    CLIMATE_FEVER_LABELS,
    LabeledPair,
    beir_training_pairs,
    climate_fever_pairs,
    inverse_cloze_pairs,
    mine_hard_negatives,
    read_pairs,
    reranking_samples,
    write_pairs,
)
from ce_rerank_plugins.training.trainer import TrainingConfig, TrainingResult, config_to_dict, train_cross_encoder

__all__ = [
    "CLIMATE_FEVER_LABELS",
    "LabeledPair",
    "TrainingConfig",
    "TrainingResult",
    "beir_training_pairs",
    "climate_fever_pairs",
    "config_to_dict",
    "inverse_cloze_pairs",
    "mine_hard_negatives",
    "read_pairs",
    "reranking_samples",
    "train_cross_encoder",
    "write_pairs",
]
