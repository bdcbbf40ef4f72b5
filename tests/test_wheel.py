"""The package as users get it: a built wheel, installed into a fresh virtual environment, run outside
the checkout. The bundled offline model must load from there, with nothing of the checkout on sys.path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _build(source: Path, out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("ce_rerank_plugins-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, as released."""
    return _build(REPO, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def wheel_with_bundled_model(tmp_path_factory, tiny_ce_path) -> Path:
    """The same sources with a (tiny) model at the bundled-model location, to test the mechanism."""
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "ce_rerank_plugins", source / "ce_rerank_plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    bundled = source / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline"
    shutil.copytree(tiny_ce_path, bundled)
    (bundled / "ce_rerank.json").write_text(json.dumps({"fusion": "weighted", "fusion_weight": 0.4}))
    return _build(source, tmp_path_factory.mktemp("dist-bundled"))


def _install(wheel: Path, tmp_path: Path) -> tuple[Path, Path]:
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
    return python, target


def _run(python: Path, target: Path, body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import sys
        import ce_rerank_plugins
        checkout = [p for p in sys.path if p.startswith({str(REPO)!r}) and "/.venv/" not in p]
        assert not checkout, checkout
        assert ce_rerank_plugins.__file__.startswith({str(target)!r}), ce_rerank_plugins.__file__
        """
    ) + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k not in ("CE_RERANK_MODEL", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False
    )


def test_the_released_wheel_bundles_no_model_and_says_so(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not any(n.startswith("ce_rerank_plugins/models/") for n in names)
    assert "ce_rerank_plugins/data/sample_corpus.jsonl" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    python, target = _install(wheel, tmp_path)
    result = _run(
        python,
        target,
        """
        from ce_rerank_plugins import ModelLoadError
        from ce_rerank_plugins.core._loading import default_model
        try:
            default_model()
        except ModelLoadError as exc:
            print("refused:", exc)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused: no cross-encoder configured" in result.stdout and "bundles no model" in result.stdout


def test_a_bundled_model_loads_from_an_installed_wheel(wheel_with_bundled_model, tmp_path):
    names = set(zipfile.ZipFile(wheel_with_bundled_model).namelist())
    assert "ce_rerank_plugins/models/ce-minilm-l6-offline/model.safetensors" in names
    python, target = _install(wheel_with_bundled_model, tmp_path)
    result = _run(
        python,
        target,
        f"""
        from ce_rerank_plugins.core._loading import default_model
        model = default_model()
        assert model.startswith({str(target)!r}), model
        reranker = ce_rerank_plugins.CrossEncoderReranker(model)
        ranked = reranker.rank("How many people live in Lyon?", ["Paris is in France.", "Lyon has 522,000."])
        print(model, reranker.fusion, reranker.fusion_weight, sorted(r.corpus_id for r in ranked))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ce-minilm-l6-offline weighted 0.4 [0, 1]" in result.stdout


def test_the_version_has_one_source(wheel):
    import ce_rerank_plugins

    assert wheel.name.startswith(f"ce_rerank_plugins-{ce_rerank_plugins.__version__}-")
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()
