"""The documentation site builds strictly, and its API reference covers every public name."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
PUBLIC_MODULES = [
    "ce_rerank_plugins",
    "ce_rerank_plugins.core",
    "ce_rerank_plugins.retrieval",
    "ce_rerank_plugins.retrieval.ingest",
    "ce_rerank_plugins.context",
    "ce_rerank_plugins.integrations.langchain",
    "ce_rerank_plugins.integrations.llamaindex",
    "ce_rerank_plugins.serve",
    "ce_rerank_plugins.ray_data",
    "ce_rerank_plugins.training",
    "ce_rerank_plugins.evaluation",
    "ce_rerank_plugins.errors",
]


def inventory(site: Path) -> set[str]:
    """The objects mkdocstrings documented, read from the Sphinx inventory it writes."""
    raw = (site / "objects.inv").read_bytes()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then zlib-compressed entries
        header_end = raw.index(b"\n", header_end) + 1
    return {line.split()[0] for line in zlib.decompress(raw[header_end:]).decode().splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def test_the_site_builds_strictly_to_static_html(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("index.html")}
    assert {"index.html", "getting-started/index.html", "api/core/index.html", "troubleshooting/index.html"} <= pages


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_the_api_reference_covers_every_public_name(site, module):
    documented = inventory(site)
    missing = [name for name in importlib.import_module(module).__all__ if f"{module}.{name}" not in documented]
    assert not missing, f"{module}: not in the API reference: {missing}"


def test_readme_is_one_screen_with_the_two_commands():
    lines = README.splitlines()
    assert len(lines) < 200
    first_screen = "\n".join(lines[:15])
    assert "make demo" in first_screen and "make test" in first_screen


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert (REPO / target).exists(), f"README links to a missing file: {target}"


def test_product_text_speaks_of_the_product():
    # How or where the package was built is no reader's business; these phrases crept in before.
    texts = [README, *(p.read_text(encoding="utf-8") for p in (REPO / "docs").rglob("*.md"))]
    texts.append((REPO / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline" / "README.md").read_text())
    for phrase in ("our build machines", "our machines", "this session", "a lent GPU", "the workplace", "shared/data"):
        assert not any(phrase in text for text in texts), phrase
