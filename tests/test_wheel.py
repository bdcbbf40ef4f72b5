"""The package as users get it: a built wheel, installed into a fresh virtual environment, run outside
the checkout. The bundled offline model must load from there, with nothing of the checkout on sys.path."""

from __future__ import annotations

import json
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


def _fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A new virtual environment outside the checkout: its python and its site-packages folder."""
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
    return python, target


def _install_wheel(wheel: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )


def _install(wheel: Path, tmp_path: Path) -> tuple[Path, Path]:
    python, target = _fresh_venv(tmp_path)
    # Third-party dependencies come from this test environment's site-packages, added as a plain path
    # (its .pth files, including the editable install of the checkout, are not processed).
    (target / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _install_wheel(wheel, target)
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


BUNDLED = "ce_rerank_plugins/models/ce-minilm-l6-offline/"
LYON = "How many people live in Lyon?"
LYON_PASSAGES = [
    "Lyon is famous for its bouchons.",
    "Paris is the capital of France.",
    "Lyon counted 522,000 residents.",
]


def test_the_released_wheel_bundles_the_trained_model_and_loads_it_outside_the_checkout(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for part in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "ce_rerank.json"):
        assert BUNDLED + part in names, part
    assert BUNDLED + "README.md" in names  # the model card travels with the weights
    assert not any(n.startswith(BUNDLED + "onnx/") for n in names)  # a local ONNX cache never ships
    # One bundled model, and a wheel small enough for any index: weights of another run never ride along.
    assert [n for n in names if n.endswith((".safetensors", ".bin", ".onnx", ".pt"))] == [BUNDLED + "model.safetensors"]
    assert wheel.stat().st_size < 60_000_000, f"{wheel.stat().st_size / 1e6:.1f} MB"
    assert "ce_rerank_plugins/data/sample_corpus.jsonl" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    python, target = _install(wheel, tmp_path)
    result = _run(
        python,
        target,
        """
        import json
        from ce_rerank_plugins.core import default_model
        model = default_model()
        reranker = ce_rerank_plugins.CrossEncoderReranker(model, precision="fp32")
        scores = reranker.predict([(QUERY, p) for p in PASSAGES])
        print(model, reranker.fusion, reranker.fusion_weight, json.dumps([float(x) for x in scores]))
        """.replace("QUERY", repr(LYON)).replace("PASSAGES", repr(LYON_PASSAGES)),
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model, fusion, weight, scores = result.stdout.strip().splitlines()[-1].split(" ", 3)
    assert model == str(target / BUNDLED.rstrip("/"))
    assert (fusion, weight) == ("weighted", "0.5")
    # The same trained weights as the checkout's: equal scores, and the answer above the unrelated passage.
    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.core import bundled_model_dir

    here = CrossEncoderReranker(bundled_model_dir(), precision="fp32").predict([(LYON, p) for p in LYON_PASSAGES])
    assert json.loads(scores) == pytest.approx([float(x) for x in here], abs=1e-5)
    assert json.loads(scores)[2] > json.loads(scores)[1]


def test_the_version_has_one_source(wheel):
    import ce_rerank_plugins

    assert wheel.name.startswith(f"ce_rerank_plugins-{ce_rerank_plugins.__version__}-")
    assert 'dynamic = ["version"]' in (REPO / "pyproject.toml").read_text()


# -- the wheel with only what it declares ------------------------------------------------------------


def _declared_closure(wheel: Path, extras: set[str]) -> list[str]:
    """Distributions the wheel's metadata asks for (with ``extras``), followed through their own metadata.

    Raises if a declared requirement is not installed here, so a test never passes on a missing package.
    """
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    with zipfile.ZipFile(wheel) as archive:
        (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(meta_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]
    wanted: dict[str, set[str]] = {}
    pending: list[tuple[list[str], set[str]]] = [(requires, set(extras) | {""})]
    self_name = canonicalize_name("ce-rerank-plugins")
    while pending:
        reqs, active = pending.pop()
        for raw in reqs:
            req = Requirement(raw)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in active):
                continue
            if req.marker is None and "" not in active:
                continue
            name = canonicalize_name(req.name)
            if name == self_name:  # "ce-rerank-plugins[faiss]" inside an extra: follow our own extras
                new = set(req.extras) - extras
                extras |= new
                if new:
                    pending.append((requires, new))
                continue
            before = wanted.get(name)
            if before is not None and set(req.extras) <= before:
                continue
            wanted[name] = (before or set()) | set(req.extras)
            dist = metadata.distribution(name)  # PackageNotFoundError: declared but not installed here
            pending.append((dist.requires or [], ({""} if before is None else set()) | set(req.extras)))
    return sorted(wanted)


def _install_declared(wheel: Path, tmp_path: Path, extras: set[str]) -> tuple[Path, Path]:
    """A fresh venv holding the wheel and exactly the installed distributions its metadata declares."""
    from importlib import metadata

    python, target = _fresh_venv(tmp_path)
    for name in _declared_closure(wheel, extras):
        dist = metadata.distribution(name)
        root = Path(dist.locate_file("")).resolve()
        for file in dist.files or []:
            if ".." in file.parts or file.suffix == ".pth":
                continue
            source, link = root / file, target / file
            if source.exists() and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(source)
    _install_wheel(wheel, target)
    return python, target


#: For each extra, code that needs it, run where the extra is not installed.
EXTRA_USES = {
    "faiss": "from ce_rerank_plugins.retrieval import FaissIndex; FaissIndex()",
    "hybrid": "from ce_rerank_plugins.retrieval._lexical import LexicalIndex; LexicalIndex().tokenize(['a'])",
    "langchain": "import ce_rerank_plugins.integrations.langchain",
    "llamaindex": "import ce_rerank_plugins.integrations.llamaindex",
    "eval": "from ce_rerank_plugins.evaluation.rerank_eval import ranx_metrics; ranx_metrics({}, {})",
    "onnx": "from ce_rerank_plugins.core._onnx import onnx_file; onnx_file(None, 'm', 'onnx', [])",
    "train": "from ce_rerank_plugins.training.trainer import train_cross_encoder; train_cross_encoder([], None)",
    "serve": "from ce_rerank_plugins.serve import create_app",
    "ray": "from ce_rerank_plugins import ray_data; ray_data.embed_texts(['a'])",
}


def test_the_core_wheel_runs_on_its_declared_dependencies_and_names_each_missing_extra(wheel, tmp_path):
    python, target = _install_declared(wheel, tmp_path, set())
    checks = "\n".join(
        f"""
try:
    {code}
    print("{extra}: no error")
except ImportError as exc:
    print("{extra}:", "names it" if "ce-rerank-plugins[{extra}]" in str(exc) else f"unnamed: {{exc}}")
except Exception as exc:
    print("{extra}: wrong error", type(exc).__name__, exc)
"""
        for extra, code in EXTRA_USES.items()
    )
    help_call = """
        import sys
        from importlib.metadata import entry_points
        (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ce-rerank"]
        sys.argv = ["ce-rerank", "--help"]
        try:
            script.load()()
        except SystemExit as exc:
            print("help exit", exc.code)
        """
    result = _run(python, target, textwrap.dedent(help_call) + checks, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "help exit 0" in result.stdout and "index" in result.stdout and "serve" in result.stdout
    for extra in EXTRA_USES:
        assert f"{extra}: names it" in result.stdout, result.stdout[-3000:]


def test_the_wheel_with_extras_indexes_queries_and_reranks_through_both_adapters(wheel, tmp_path, tiny_ce_path):
    python, target = _install_declared(wheel, tmp_path, {"hybrid", "langchain", "llamaindex", "serve", "eval"})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "lyon.txt").write_text("Lyon counted roughly 522,000 residents at the last census.", encoding="utf-8")
    (corpus / "coffee.md").write_text("Coffee brews best at 92 to 96 degrees Celsius.", encoding="utf-8")
    result = _run(
        python,
        target,
        f"""
        import sys
        from importlib.metadata import entry_points
        (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ce-rerank"]
        main = script.load()

        def cli(*args):
            sys.argv = ["ce-rerank", *args]
            try:
                main()
            except SystemExit as exc:
                assert exc.code in (0, None), (args, exc.code)

        cli("index", {str(corpus)!r}, "--out", "idx", "--mode", "hybrid")
        model = {str(tiny_ce_path)!r}
        cli("query", "idx", "How many people live in Lyon?", "-k", "2", "-n", "2", "--json", "-m", model)
        from langchain_core.documents import Document
        from llama_index.core.schema import NodeWithScore, TextNode

        from ce_rerank_plugins import CrossEncoderReranker
        from ce_rerank_plugins.integrations.langchain import CrossEncoderCompressor
        from ce_rerank_plugins.integrations.llamaindex import CrossEncoderNodePostprocessor

        reranker = CrossEncoderReranker({str(tiny_ce_path)!r})
        texts = ["Lyon has 522,000 residents.", "Paris is in France.", "Coffee is a drink."]
        docs = CrossEncoderCompressor(reranker=reranker, top_n=2).compress_documents(
            [Document(page_content=t) for t in texts], "Lyon population"
        )
        nodes = CrossEncoderNodePostprocessor(reranker=reranker, top_n=2).postprocess_nodes(
            [NodeWithScore(node=TextNode(text=t), score=0.0) for t in texts], query_str="Lyon population"
        )
        same = sorted(d.page_content for d in docs) == sorted(n.node.get_content() for n in nodes)
        print("adapters", len(docs), len(nodes), same)

        from fastapi.testclient import TestClient
        from ce_rerank_plugins.serve import create_app
        with TestClient(create_app(reranker)) as client:
            served = client.post("/v1/rerank", json={{"query": "Lyon", "documents": texts, "top_n": 1}})
        print("served", served.status_code, len(served.json()["results"]))

        from ce_rerank_plugins.evaluation.rerank_eval import ranx_metrics
        metrics = ranx_metrics({{"q": {{"d1": 1}}}}, {{"q": {{"d1": 2.0, "d2": 1.0}}}})
        print("ndcg", round(metrics["ndcg@10"], 3))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "indexed 2 chunks from 2 files into idx" in result.stderr, result.stderr[-2000:]
    # Both chunks retrieved and reranked (a random tiny model: which comes first is not the point here).
    assert '"source": "lyon.txt"' in result.stdout and '"source": "coffee.md"' in result.stdout
    assert "adapters 2 2 True" in result.stdout
    assert "served 200 1" in result.stdout and "ndcg 1.0" in result.stdout


def test_the_sdist_holds_what_a_packager_needs(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    import tarfile

    (sdist,) = tmp_path.glob("ce_rerank_plugins-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for needed in ("LICENSE", "README.md", "pyproject.toml", "tests/conftest.py", "tests/test_wheel.py"):
        assert needed in names, needed
    assert "ce_rerank_plugins/__init__.py" in names and "ce_rerank_plugins/py.typed" in names
    assert not any(n.startswith((".venv/", "benchmarks/", ".git/")) for n in names)
