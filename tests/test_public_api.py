"""The public names: sorted __all__, importable without any framework, adapters importable on their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ce_rerank_plugins
from ce_rerank_plugins import context, core, retrieval, training


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions, each alphabetical.
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_all_is_sorted_and_importable():
    for module in (ce_rerank_plugins, core, retrieval, context, training):
        assert list(module.__all__) == sorted(module.__all__, key=_isort_key), module.__name__
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


HEAVY = ("torch", "scipy", "sentence_transformers", "transformers", "faiss", "langchain_core", "llama_index")
HEAVY += ("ranx", "matplotlib", "onnxruntime", "onnx", "ray", "fastapi", "uvicorn", "bm25s", "datasets")


@pytest.mark.parametrize(
    "modules",
    [
        "ce_rerank_plugins, ce_rerank_plugins.context",
        "ce_rerank_plugins.cli",
        "ce_rerank_plugins.retrieval, ce_rerank_plugins.pipeline",
        "ce_rerank_plugins.serve, ce_rerank_plugins.ray_data, ce_rerank_plugins.evaluation",
    ],
)
def test_importing_the_package_loads_nothing_heavy_until_used(modules):
    # A cold start pays for torch, transformers and friends only when a model or an index is loaded.
    code = f"import sys, {modules}; bad = [m for m in {HEAVY!r} if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


def test_integrations_do_not_import_each_other():
    for mine, other in (("langchain", "llama_index"), ("llamaindex", "langchain_core")):
        code = f"import sys, ce_rerank_plugins.integrations.{mine}; sys.exit(1 if '{other}' in sys.modules else 0)"
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, mine


def test_missing_extra_names_the_extra():
    code = (
        "import sys; sys.modules['faiss'] = None\n"
        "from ce_rerank_plugins.retrieval import FaissIndex\n"
        "try:\n    FaissIndex()\nexcept ImportError as e:\n"
        "    sys.exit(0 if 'ce-rerank-plugins[faiss]' in str(e) else 1)\n"
        "sys.exit(1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 0


def test_no_pickle_and_no_remote_code_in_the_package():
    from pathlib import Path

    for path in Path(ce_rerank_plugins.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path
        assert "trust_remote_code=True" not in text, path


EXPECTED_ALL = {
    "ce_rerank_plugins": [
        "SHARED_MODELS",
        "CERerankError",
        "CacheInfo",
        "CrossEncoderReranker",
        "IndexFormatError",
        "ModelKey",
        "ModelLoadError",
        "PairClassification",
        "RankedResult",
        "ScoreCache",
        "ScoringError",
        "__version__",
    ],
    "ce_rerank_plugins.core": [
        "HUB_DEFAULT_MODEL",
        "MODEL_ENV_VAR",
        "SHARED_MODELS",
        "THREADS_ENV_VAR",
        "CacheInfo",
        "CrossEncoderReranker",
        "FastStart",
        "FloatArray",
        "Fusion",
        "ModelKey",
        "ModelRegistry",
        "OnnxTextEncoder",
        "PairClassification",
        "Precision",
        "RankedResult",
        "Reranker",
        "ScoreCache",
        "ScoreMode",
        "Threads",
        "applied_fusion",
        "apply_thread_policy",
        "bundled_model_dir",
        "check_first_stage",
        "check_fusion",
        "check_rank_options",
        "check_threads",
        "default_model",
        "default_threads",
        "device_has_native_bf16",
        "fuse_scores",
        "onnx_fast_start",
        "onnx_fast_start_lost",
        "onnx_fast_start_ready",
        "quiet_weight_loading",
        "resolve_device",
        "select_results",
        "set_threads",
        "untrained_cross_encoder",
    ],
    "ce_rerank_plugins.retrieval": [
        "DEFAULT_EMBEDDER_ID",
        "FORMAT_VERSION",
        "RETRIEVAL_MODES",
        "BM25Params",
        "Chunk",
        "Document",
        "Embedder",
        "EmbedderRuntime",
        "FaissIndex",
        "IndexType",
        "LexicalIndex",
        "RetrievalMode",
        "SearchHit",
        "TokenChunker",
        "check_save_target",
    ],
    "ce_rerank_plugins.retrieval.ingest": [
        "SUPPORTED_SUFFIXES",
        "IngestedFiles",
        "SourceRecord",
        "build_index_from_files",
        "collect_files",
        "read_records",
    ],
    "ce_rerank_plugins.context": [
        "POSITION_KEY",
        "SOURCE_KEY",
        "AssembledContext",
        "ContextChunk",
        "Ordering",
        "TokenCounter",
        "approximate_token_count",
        "assemble_context",
        "chunk_from_metadata",
        "with_unique_citations",
    ],
    "ce_rerank_plugins.integrations.langchain": [
        "CrossEncoderCompressor",
        "FaissRetriever",
        "RerankingRetriever",
        "context_runnable",
        "documents_to_context",
    ],
    "ce_rerank_plugins.integrations.llamaindex": [
        "CrossEncoderNodePostprocessor",
        "FaissRetriever",
        "nodes_to_context",
    ],
    "ce_rerank_plugins.serve": [
        "RayServeSettings",
        "RemoteRerankError",
        "RemoteReranker",
        "ServeLimits",
        "create_app",
        "ray_application",
        "run_on_ray",
        "uvicorn_config",
    ],
    "ce_rerank_plugins.evaluation": ["BeirDataset", "load_beir", "read_jsonl", "read_qrels", "read_records"],
    "ce_rerank_plugins.ray_data": [
        "DEFAULT_STALL_TIMEOUT",
        "RayDataStalledError",
        "connect",
        "embed_texts",
        "rerank_rows",
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPECTED_ALL))
def test_public_names_are_pinned(module_name):
    """A change to a public module's names is a deliberate API change: update this list with it."""
    import importlib

    module = importlib.import_module(module_name)
    assert list(module.__all__) == EXPECTED_ALL[module_name]
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.{name} is listed but missing"


@pytest.mark.parametrize(
    ("blocked", "code", "extra"),
    [
        ("fastapi", "from ce_rerank_plugins.serve import create_app", "serve"),
        ("bm25s", "from ce_rerank_plugins.retrieval import FaissIndex; FaissIndex(lexical=True)", "hybrid"),
        ("langchain_core", "import ce_rerank_plugins.integrations.langchain", "langchain"),
        ("llama_index", "import ce_rerank_plugins.integrations.llamaindex", "llamaindex"),
        ("ray", "from ce_rerank_plugins import ray_data; ray_data.embed_texts(['a'])", "ray"),
        ("ray", "from ce_rerank_plugins.serve import ray_application", "ray"),
    ],
)
def test_each_missing_extra_is_named(blocked, code, extra):
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    {code}\nexcept ImportError as e:\n"
        f"    sys.exit(0 if 'ce-rerank-plugins[{extra}]' in str(e) else 2)\n"
        "sys.exit(1)"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_module_imports_another_packages_private_names():
    """What several packages need is public (or in a package-level ``ce_rerank_plugins._x`` module)."""
    import ast
    from pathlib import Path

    root = Path(ce_rerank_plugins.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        own_package = ".".join(rel.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ce_rerank_plugins."):
                parts = node.module.split(".")
                private = [i for i, p in enumerate(parts) if p.startswith("_")]
                if not private:
                    continue
                owner = ".".join(parts[: private[0]])  # the package that owns the private module
                if owner != "ce_rerank_plugins" and not own_package.startswith(owner):
                    offenders.append(f"{rel}: from {node.module} import ...")
    for notebook in (root.parent / "notebooks").glob("*.ipynb"):
        if "ce_rerank_plugins.core._" in notebook.read_text():
            offenders.append(f"{notebook.name} imports a private core module")
    assert not offenders, offenders
