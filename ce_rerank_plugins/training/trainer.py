"""Training or fine-tuning a cross-encoder with sentence-transformers' own ``CrossEncoderTrainer``.

We add no training loop: the trainer brings checkpoints, resume, bf16, early stopping and progress
bars; this module chooses the loss and evaluator from the labels and wires the options.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ce_rerank_plugins._optional import require
from ce_rerank_plugins.core import device_has_native_bf16, resolve_device
from ce_rerank_plugins.training.pairs import LabeledPair, reranking_samples

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Options of one training run (all recorded in the run's ``training_config.json``).

    Attributes:
        base_model: A cross-encoder or a plain transformer backbone (a new head is added), path or id.
        output_dir: Where checkpoints and the final model go (final model in ``output_dir/final``).
        num_labels: 1 for relevance scores (binary cross-entropy), > 1 for classes (cross-entropy).
        epochs: Passes over the training pairs.
        max_steps: Stop after this many optimiser steps (-1: run all epochs).
        batch_size: Pairs per step.
        learning_rate: Peak learning rate (linear warm-up then decay).
        warmup_ratio: Fraction of steps spent warming up.
        max_length: Token budget of a pair.
        eval_fraction: Share of queries (or pairs, for classes) held out for evaluation when no
            evaluation pairs are given.
        eval_steps: Evaluate (and checkpoint) every this many steps; None: once per epoch.
        early_stopping_patience: Stop after this many evaluations without improvement; None: never.
        seed: Seed for data splits, shuffling and initialisation.
        precision: ``"auto"`` (bf16 where the device supports it natively), ``"bf16"`` or ``"fp32"``.
        resume: Resume from the last checkpoint in ``output_dir``.
        labels: Class names for ``num_labels > 1`` (stored as the model's ``id2label``).
        show_progress: Show the trainer's progress bar.
    """

    base_model: str
    output_dir: str
    num_labels: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    eval_fraction: float = 0.05
    eval_steps: int | None = None
    early_stopping_patience: int | None = None
    seed: int = 12
    precision: str = "auto"
    resume: bool = False
    labels: Sequence[str] | None = None
    show_progress: bool = True
    device: str = "auto"


@dataclass
class TrainingResult:
    """What a run produced: the saved model, the loss curve and the evaluation history."""

    model_dir: str
    loss_history: list[float] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    primary_metric: str = ""
    best_metric: float | None = None
    global_steps: int = 0


def _split(
    pairs: Sequence[LabeledPair], fraction: float, seed: int, *, by_query: bool
) -> tuple[list[LabeledPair], list[LabeledPair]]:
    if not 0 < fraction < 1:
        msg = f"eval_fraction must be between 0 and 1, got {fraction}"
        raise ValueError(msg)
    rng = random.Random(seed)
    if by_query:
        queries = sorted({p.text_a for p in pairs})
        rng.shuffle(queries)
        held = set(queries[: max(1, int(len(queries) * fraction))])
        return [p for p in pairs if p.text_a not in held], [p for p in pairs if p.text_a in held]
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    cut = max(1, int(len(shuffled) * fraction))
    return shuffled[cut:], shuffled[:cut]


def train_cross_encoder(
    train_pairs: Sequence[LabeledPair],
    config: TrainingConfig,
    *,
    eval_pairs: Sequence[LabeledPair] | None = None,
) -> TrainingResult:
    """Train a cross-encoder and save it where ``CrossEncoder(path)`` and our reranker load it.

    Relevance models (``num_labels == 1``) are evaluated with nDCG@10 / MRR@10 on held-out queries
    (sentence-transformers' reranking evaluator); classifiers with accuracy / macro-F1.

    Returns:
        The saved model directory and the loss / evaluation history.
    """
    require("datasets", "train", purpose="train_cross_encoder")
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import (
        CrossEncoderClassificationEvaluator,
        CrossEncoderRerankingEvaluator,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, CrossEntropyLoss
    from transformers import EarlyStoppingCallback, TrainerCallback

    if not train_pairs:
        msg = "no training pairs given"
        raise ValueError(msg)
    if config.num_labels < 1:
        msg = f"num_labels must be >= 1, got {config.num_labels}"
        raise ValueError(msg)
    if config.num_labels > 1:
        bad = sorted({p.label for p in train_pairs if p.label != int(p.label) or not 0 <= p.label < config.num_labels})
        if bad:
            msg = f"class labels must be integers in [0, {config.num_labels}), got {bad[:5]}"
            raise ValueError(msg)
    if eval_pairs is None:
        train_pairs, eval_pairs = _split(
            train_pairs, config.eval_fraction, config.seed, by_query=config.num_labels == 1
        )
    device = resolve_device(config.device)
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device_has_native_bf16(device))

    config_kwargs: dict[str, Any] = {}
    if config.num_labels > 1 and config.labels:
        if len(config.labels) != config.num_labels:
            msg = f"{len(config.labels)} label names given for num_labels={config.num_labels}"
            raise ValueError(msg)
        config_kwargs = {
            "id2label": dict(enumerate(config.labels)),
            "label2id": {name: i for i, name in enumerate(config.labels)},
        }
    model = CrossEncoder(
        config.base_model,
        num_labels=config.num_labels,
        max_length=config.max_length,
        device=device,
        config_kwargs=config_kwargs or None,
        local_files_only=Path(config.base_model).is_dir(),
    )
    if config.num_labels == 1:
        if not reranking_samples(eval_pairs):
            msg = (
                "the evaluation split has no query with a positive and at least two passages; "
                "raise eval_fraction or add negatives"
            )
            raise ValueError(msg)
        loss: Any = BinaryCrossEntropyLoss(model)
        evaluator: Any = CrossEncoderRerankingEvaluator(
            reranking_samples(eval_pairs), at_k=10, always_rerank_positives=False, name="heldout", batch_size=64
        )
        primary = "eval_heldout_ndcg@10"
    else:
        loss = CrossEntropyLoss(model)
        evaluator = CrossEncoderClassificationEvaluator(
            [[p.text_a, p.text_b] for p in eval_pairs], [int(p.label) for p in eval_pairs], name="heldout"
        )
        primary = "eval_heldout_f1_macro"

    def to_dataset(pairs: Sequence[LabeledPair]) -> Any:
        labels = [int(p.label) for p in pairs] if config.num_labels > 1 else [float(p.label) for p in pairs]
        return Dataset.from_dict(
            {"text_a": [p.text_a for p in pairs], "text_b": [p.text_b for p in pairs], "label": labels}
        )

    strategy = "steps" if config.eval_steps else "epoch"
    args = CrossEncoderTrainingArguments(
        output_dir=config.output_dir,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio (transformers >= 5)
        use_cpu=device == "cpu",
        bf16=use_bf16,
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps,
        save_steps=config.eval_steps or 500,  # unused with the "epoch" strategy
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=primary,
        greater_is_better=True,
        logging_steps=max(1, (config.eval_steps or 50) // 5),
        seed=config.seed,
        disable_tqdm=not config.show_progress,
        report_to="none",
        dataloader_drop_last=False,
    )

    losses: list[float] = []
    evals: list[dict[str, float]] = []

    class _Recorder(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_evaluate(
            self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None, **kw: Any
        ) -> None:
            if metrics:
                evals.append({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})

    callbacks: list[Any] = [_Recorder()]
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = CrossEncoderTrainer(
        model=model,
        args=args,
        train_dataset=to_dataset(train_pairs),
        loss=loss,
        evaluator=evaluator,
        callbacks=callbacks,
    )
    resume: bool | None = (config.resume and any(Path(config.output_dir).glob("checkpoint-*"))) or None
    trainer.train(resume_from_checkpoint=resume)
    final_dir = os.path.join(config.output_dir, "final")
    model.save(final_dir)
    best = trainer.state.best_metric
    return TrainingResult(
        model_dir=final_dir,
        loss_history=losses,
        eval_history=evals,
        primary_metric=primary,
        best_metric=None if best is None else float(best),
        global_steps=int(trainer.state.global_step),
    )


def config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """JSON-ready copy of a config, for model cards and run records."""
    out = asdict(config)
    out["labels"] = list(config.labels) if config.labels else None
    return out
