"""The package as users get it: a built wheel, installed into a fresh virtual environment, run outside
the checkout. The bundled offline model must load from there, with nothing of the checkout on sys.path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "ce_rerank.json"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("ce_rerank_plugins-*.whl")
    return built


def test_the_wheel_carries_the_model_and_its_card(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {n.rsplit("/", 1)[1] for n in names if n.startswith("ce_rerank_plugins/models/ce-minilm-l6-offline/")}
    assert MODEL_FILES | {"README.md"} <= bundled
    assert "ce_rerank_plugins/data/sample_corpus.jsonl" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_the_bundled_model_loads_from_an_installed_wheel(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # Third-party dependencies come from this test environment's site-packages, added as a plain path
    # (its .pth files, including the editable install of the checkout, are not processed).
    (target / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = textwrap.dedent(
        f"""
        import sys
        import ce_rerank_plugins
        from ce_rerank_plugins.core._loading import default_model
        checkout = [p for p in sys.path if p.startswith({str(REPO)!r}) and "/.venv/" not in p]
        assert not checkout, checkout
        assert ce_rerank_plugins.__file__.startswith({str(target)!r}), ce_rerank_plugins.__file__
        model = default_model()
        assert model.startswith({str(target)!r}), model
        reranker = ce_rerank_plugins.CrossEncoderReranker(model)
        docs = ["Paris is in France.", "Lyon has 522,000 inhabitants."]
        ranked = reranker.rank("How many people live in Lyon?", docs)
        print(model, reranker.fusion, reranker.fusion_weight, [r.corpus_id for r in ranked])
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CE_RERANK_MODEL", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ce-minilm-l6-offline weighted 0.4" in result.stdout
