"""The ONNX Runtime paths: local export, the hash-keyed cache next to the model, parity and fallback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.core._onnx import cache_dir_for, weights_sha256

PAIRS = [
    ("how does caffeine affect sleep", "Caffeine blocks adenosine receptors and delays sleep onset."),
    ("how does caffeine affect sleep", "Lyon is a city in France."),
    ("lyon population", "About half a million people live in the city of Lyon itself, more in its metropolis. " * 4),
    ("lyon population", "short"),
    ("a much longer query that has quite a few more words than the others do", "A passage of middling length."),
]


@pytest.fixture
def model_copy(tiny_ce_path, tmp_path):
    """A private copy of the tiny model, so its onnx/ cache starts empty."""
    target = tmp_path / "model"
    shutil.copytree(tiny_ce_path, target)
    return target


def test_onnx_matches_fp32_and_caches_next_to_the_model(model_copy, fresh_registry):
    reference = CrossEncoderReranker(model_copy, precision="fp32").predict(PAIRS)
    reranker = CrossEncoderReranker(model_copy, precision="onnx")
    assert reranker.precision == "onnx"
    assert reranker.engine.runner is not None
    # Mixed lengths in one batch: padding must not change a pair's score.
    for batch_size in (1, len(PAIRS)):
        batched = CrossEncoderReranker(model_copy, precision="onnx", batch_size=batch_size, micro_batching=False)
        np.testing.assert_allclose(batched.predict(PAIRS), reference, atol=1e-5)

    manifest = json.loads((model_copy / "onnx" / "manifest.json").read_text())
    assert manifest["model_sha256"] == weights_sha256(reranker.model[0].model)
    assert set(manifest["files"]) == {"model.onnx"}
    exported = (model_copy / "onnx" / "model.onnx").stat().st_mtime_ns

    fresh_registry.clear()
    CrossEncoderReranker(model_copy, precision="onnx")
    assert (model_copy / "onnx" / "model.onnx").stat().st_mtime_ns == exported, "a valid cache must be reused"


def test_corrupt_or_stale_cache_is_rebuilt(model_copy, fresh_registry):
    reference = CrossEncoderReranker(model_copy, precision="fp32").predict(PAIRS)
    CrossEncoderReranker(model_copy, precision="onnx")
    (model_copy / "onnx" / "model.onnx").write_bytes(b"not an onnx graph")
    fresh_registry.clear()
    rebuilt = CrossEncoderReranker(model_copy, precision="onnx")
    np.testing.assert_allclose(rebuilt.predict(PAIRS), reference, atol=1e-5)

    # A manifest for other weights (a retrained model) must not be trusted either.
    manifest_path = model_copy / "onnx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    fresh_registry.clear()
    CrossEncoderReranker(model_copy, precision="onnx")
    assert json.loads(manifest_path.read_text())["model_sha256"] != "0" * 64


def test_onnx_int8_is_probe_checked(model_copy, fresh_registry, caplog):
    reference = CrossEncoderReranker(model_copy, precision="fp32").predict(PAIRS)
    kept = CrossEncoderReranker(model_copy, precision="onnx-int8", min_probe_spearman=-1.0)
    if kept.precision == "onnx-int8":  # kept when top-1 of every probe query survives quantisation
        manifest = json.loads((model_copy / "onnx" / "manifest.json").read_text())
        assert set(manifest["files"]) == {"model.onnx", "model_int8.onnx"}
        scores = kept.predict(PAIRS)
        assert scores.shape == reference.shape
        assert not np.allclose(scores, reference, atol=1e-6), "int8 weights should change scores a little"
    fresh_registry.clear()
    with caplog.at_level("WARNING"):
        strict = CrossEncoderReranker(model_copy, precision="onnx-int8", min_probe_spearman=1.01)
    assert strict.precision == "fp32"
    assert "onnx-int8 changed probe rankings" in strict.engine.fallback_reason
    np.testing.assert_allclose(strict.predict(PAIRS), reference, atol=1e-6)


def test_hub_models_cache_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    directory = cache_dir_for("cross-encoder/ms-marco-MiniLM-L6-v2", "ab" * 32)
    assert directory == tmp_path / "cache" / "ce_rerank_plugins" / "onnx" / ("ab" * 8)


def test_the_bundled_model_is_never_written_into(tmp_path, monkeypatch, tiny_ce_path):
    """Its folder belongs to the installer: the ONNX export goes to the user cache even if it is writable."""
    from ce_rerank_plugins.core import bundled_model_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundled = bundled_model_dir()
    assert bundled is not None and os.access(bundled, os.W_OK)  # writable here, so only the rule keeps it clean
    assert cache_dir_for(str(bundled), "cd" * 32) == tmp_path / "cache" / "ce_rerank_plugins" / "onnx" / ("cd" * 8)
    assert cache_dir_for(str(tiny_ce_path), "cd" * 32) == Path(tiny_ce_path) / "onnx"  # a user's own model


def test_weights_hash_changes_with_the_weights(tiny_ce_path):
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_ce_path), device="cpu")
    before = weights_sha256(model[0].model)
    with torch.no_grad():
        next(model[0].model.parameters()).add_(1e-3)
    assert weights_sha256(model[0].model) != before


def test_the_quantiser_silences_only_its_own_root_logging(tmp_path, monkeypatch, caplog):
    import logging
    import threading

    from onnxruntime import quantization

    from ce_rerank_plugins.core import _onnx

    def fake_quantize(source, target, weight_type):
        logging.warning("advice from the quantiser")  # root logger, this thread: dropped
        other = threading.Thread(target=lambda: logging.warning("another thread's warning"))
        other.start()
        other.join()
        Path(target).write_bytes(b"int8")

    monkeypatch.setattr(quantization, "quantize_dynamic", fake_quantize)
    source = tmp_path / "model.onnx"
    source.write_bytes(b"fp32")
    with caplog.at_level(logging.WARNING):
        _onnx._quantize_int8(source, tmp_path / "model_int8.onnx")
    assert "another thread's warning" in caplog.text
    assert "advice from the quantiser" not in caplog.text
    assert (tmp_path / "model_int8.onnx").read_bytes() == b"int8"
    logging.warning("after it")
    assert "after it" in caplog.text  # the filter is gone
