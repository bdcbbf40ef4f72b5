"""Weight interpolation between a cross-encoder and its fine-tuned descendant, chosen on held-out questions.

Fine-tuning on one kind of question (SQuAD's, say) moves a model away from what it knew of others (web
queries). Averaging the weights of the starting model and the fine-tuned one, ``(1 - w) * start + w * end``,
keeps much of both, more robustly out of distribution than either end (Wortsman et al., 2022, "Robust
fine-tuning of zero-shot models", WiSE-FT). Both must share one architecture and one initialisation (the
end was trained from the start, directly or through intermediate runs), or the average means nothing.

:func:`interpolate_on_holdout` scores each ``w`` of a grid on a recipe build's held-out questions (as the
recipe's validation does) and keeps the best one, with the fusion it recommends, like ``train_listwise``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ce_rerank_plugins.training.recipe import decide_fusion, held_out_metrics, read_validation, save_cross_encoder

logger = logging.getLogger(__name__)

#: Shares of the fine-tuned model tried by default (0.0 is the starting model, 1.0 the fine-tuned one).
DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SOUP_RECORD = "soup_run.json"


@dataclass
class SoupResult:
    """The kept interpolation: its folder, share of the fine-tuned model, held-out figures and fusion."""

    model_dir: str
    weight: float
    selection: float
    fusion: tuple[str, float]
    tried: list[dict[str, Any]] = field(default_factory=list)


def check_weights(weights: Sequence[float]) -> list[float]:
    """The grid as floats in [0, 1], ascending and without repeats; a clear error for anything else."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
        msg = f"weights must be a non-empty list of numbers in [0, 1], got {weights!r}"
        raise ValueError(msg)
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
            msg = f"each weight must be a number in [0, 1], got {w!r}"
            raise ValueError(msg)
        out.append(float(w))
    return sorted(set(out))


def interpolate_state(start: dict[str, Any], end: dict[str, Any], weight: float) -> dict[str, Any]:
    """``(1 - weight) * start + weight * end`` for each floating tensor; other tensors (ids, buffers) from ``end``."""
    if start.keys() != end.keys():
        missing = sorted(set(start) ^ set(end))[:3]
        msg = f"the two models do not share one architecture (parameters only in one of them: {missing})"
        raise ValueError(msg)
    mixed = {}
    for name, b in end.items():
        a = start[name]
        if a.shape != b.shape:
            msg = f"the two models do not share one architecture ({name}: {tuple(a.shape)} vs {tuple(b.shape)})"
            raise ValueError(msg)
        if b.is_floating_point():
            mixed[name] = ((1.0 - weight) * a.float() + weight * b.float()).to(b.dtype)
        else:
            mixed[name] = b.clone()
    return mixed


def interpolate_on_holdout(
    start: str | os.PathLike[str],
    end: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    max_length: int = 256,
    threads: int = 0,
    device: str = "auto",
) -> SoupResult:
    """Score ``(1 - w) * start + w * end`` for each ``w`` on a build's held-out questions; keep the best.

    The best is the highest held-out ``selection`` (the cross-encoder alone's mean nDCG@10 over sets, as
    in training); a tie goes to the smaller ``w``, the one nearer the starting model's breadth. The kept
    model goes to ``out_dir/model`` (fp16 on disk, with its recommended fusion), every ``w``'s figures to
    ``out_dir/soup_run.json``.

    Args:
        start: The starting cross-encoder (folder or Hub id).
        end: A cross-encoder fine-tuned from ``start``; its tokenizer is kept.
        data_dir: A recipe build's data folder (``OUT/data`` of ``ce-rerank train --recipe default``).
        out_dir: Where ``model/`` and the record go; refused if ``model/`` is there already.
        weights: Shares of ``end`` to try, each in [0, 1].
        max_length: Token budget of a pair when scoring (the run's).
        threads: Torch CPU threads (0: torch's default).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ce_rerank_plugins.core import resolve_device

    grid = check_weights(weights)
    kept = Path(out_dir) / "model"
    if kept.exists():  # e.g. --out run with end = run/model: the soup would replace the model it averages
        msg = f"{str(kept)!r} already exists and would be replaced; choose another out_dir"
        raise FileExistsError(msg)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        msg = f"max_length must be a positive integer, got {max_length!r}"
        raise ValueError(msg)
    val, texts = read_validation(data_dir)
    if not val:
        msg = f"{data_dir} holds no held-out questions to choose a weight on"
        raise ValueError(msg)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)

    def load(source: str | os.PathLike[str]) -> tuple[Any, Any]:
        local = Path(source).is_dir()
        tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(source), num_labels=1, dtype=torch.float32, local_files_only=local
        )
        return model, tokenizer

    start_model, start_tokenizer = load(start)
    model, tokenizer = load(end)
    if start_tokenizer.get_vocab() != tokenizer.get_vocab():
        msg = "the two models do not share one tokenizer vocabulary, so their weights cannot be averaged"
        raise ValueError(msg)
    start_state = {k: v.detach().clone() for k, v in start_model.state_dict().items()}
    end_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    del start_model
    interpolate_state(start_state, end_state, 0.0)  # architecture check before any scoring
    model.to(device)
    tried: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for w in grid:
        model.load_state_dict(interpolate_state(start_state, end_state, w))
        metrics = held_out_metrics(model, tokenizer, val, texts, max_length=max_length, device=device)
        tried.append({"weight": w, **metrics})
        logger.info(
            "w=%g: held-out nDCG@10 %.4f (first stage %.4f)", w, metrics["selection"], metrics["mean/first/ndcg@10"]
        )
        if best is None or metrics["selection"] > best["selection"]:
            best = tried[-1]
    assert best is not None  # the grid is never empty
    fusion = decide_fusion(best)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.load_state_dict(interpolate_state(start_state, end_state, best["weight"]))
    save_cross_encoder(model, tokenizer, out / "model", fusion)
    record = {
        "start": str(start),
        "end": str(end),
        "data": str(data_dir),
        "max_length": max_length,
        "weight": best["weight"],
        "fusion": list(fusion),
        "tried": tried,
    }
    tmp = out / f".{SOUP_RECORD}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / SOUP_RECORD)
    return SoupResult(
        model_dir=str(out / "model"),
        weight=best["weight"],
        selection=float(best["selection"]),
        fusion=fusion,
        tried=tried,
    )
