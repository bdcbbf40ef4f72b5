"""Training cross-encoders: the default recipe and its soup, pairs, hard-negative mining, the ST trainer."""

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
from ce_rerank_plugins.training.recipe import (
    GroupSettings,
    ListwiseConfig,
    ListwiseResult,
    check_groups,
    decide_fusion,
    prepare_groups,
    read_training_groups,
    train_listwise,
    write_derived_groups,
)
from ce_rerank_plugins.training.soup import SoupResult, interpolate_on_holdout
from ce_rerank_plugins.training.trainer import TrainingConfig, TrainingResult, config_to_dict, train_cross_encoder

__all__ = [
    "CLIMATE_FEVER_LABELS",
    "GroupSettings",
    "LabeledPair",
    "ListwiseConfig",
    "ListwiseResult",
    "SoupResult",
    "TrainingConfig",
    "TrainingResult",
    "beir_training_pairs",
    "check_groups",
    "climate_fever_pairs",
    "config_to_dict",
    "decide_fusion",
    "interpolate_on_holdout",
    "inverse_cloze_pairs",
    "mine_hard_negatives",
    "prepare_groups",
    "read_pairs",
    "read_training_groups",
    "reranking_samples",
    "train_cross_encoder",
    "train_listwise",
    "write_derived_groups",
    "write_pairs",
]
