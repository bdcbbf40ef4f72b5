"""Every Python and shell example in the README and the docs runs as printed, offline, on the bundled model.

Each page runs top to bottom, as a reader following it would: its Python blocks share one namespace, its
shell blocks run with the project's environment on ``PATH``, both in a fresh folder that holds what the
pages name (``my-docs/``: the bundled sample corpus as Markdown files; ``scifact-sample/``: the sample the
notebooks use; ``my-labels/``: a small labelled set in BEIR layout). A comment line just before a block
changes how it runs:

- ``<!-- docs-test: background port=N [path=/health] [in-repo] -->``: a server; it starts in the background,
  the page goes on once ``http://127.0.0.1:N/path`` answers 200, and it is stopped when the page ends;
- ``<!-- docs-test: in-repo -->``: runs in the repository (``make`` targets);
- ``<!-- docs-test: check-extras -->``: ``pip install`` lines; each extra they name must exist;
- ``<!-- docs-test: not-run -->``: only for ``make test``, the command that runs this very file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib
from markdown_it import MarkdownIt

from tests.training.test_recipe import write_beir

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN = {"python", "bash"}
INERT = {"text", "json", "toml", "yaml"}  # outputs, file layouts and configuration shown, not run
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->", re.S)
BIN = Path(sys.executable).parent


@dataclass
class Example:
    page: Path
    line: int
    lang: str
    code: str
    options: dict[str, str] = field(default_factory=dict)

    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse_options(text: str) -> dict[str, str]:
    options = {}
    for word in shlex.split(text):
        key, _, value = word.partition("=")
        options[key] = value
    return options


def examples(page: Path) -> list[Example]:
    found, pending = [], None
    for token in MarkdownIt("commonmark").parse(page.read_text(encoding="utf-8")):
        if token.type == "html_block" and (match := DIRECTIVE.search(token.content)):
            assert pending is None, f"{page.name}:{token.map[0] + 1}: two directives in a row"
            pending = parse_options(match.group(1))
        elif token.type == "fence":
            lang = token.info.split()[0] if token.info.strip() else ""
            line = token.map[0] + 1
            assert lang in RUN | INERT, f"{page.name}:{line}: a code block needs a language from {sorted(RUN | INERT)}"
            if lang in RUN:
                found.append(Example(page, line, lang, token.content, pending or {}))
            else:
                assert pending is None, f"{page.name}:{line}: a directive before a {lang} block"
            pending = None
    assert pending is None, f"{page.name}: a directive with no code block after it"
    return found


def test_every_page_has_examples_and_only_known_directives():
    known = {"background", "port", "path", "in-repo", "check-extras", "not-run"}
    for page in PAGES:
        for example in examples(page):
            assert set(example.options) <= known, f"{example.where()}: unknown directive {example.options}"
            if "not-run" in example.options:
                commands = [ln for ln in example.code.splitlines() if ln.strip() and not ln.startswith("#")]
                assert all(ln.startswith("make test") for ln in commands), f"{example.where()} may not be skipped"
    assert sum(len(examples(p)) for p in PAGES) >= 40


@pytest.fixture(scope="session")
def reader_cache(tmp_path_factory) -> Path:
    """One reader's user cache, empty at the first page: they read the pages on one machine, so the
    first page that loads the model pays ``precision="auto"``'s one-time measurement and the rest read
    its record (and reuse its ONNX exports), as they would."""
    return tmp_path_factory.mktemp("reader-cache")


@pytest.fixture
def workdir(tmp_path, monkeypatch, reader_cache):
    """A reader's folder: the files the pages name, their user cache, offline, the bundled default model."""
    docs = tmp_path / "my-docs"
    docs.mkdir()
    by_source: dict[str, list[str]] = {}
    sample = REPO / "ce_rerank_plugins" / "data" / "sample_corpus.jsonl"
    for line in sample.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_source.setdefault(record["source"], []).append(record["text"])
    for source, texts in by_source.items():
        (docs / source).write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "scifact-sample").symlink_to(REPO / "notebooks" / "data" / "scifact-sample")
    write_beir(tmp_path / "my-labels", "doc")
    monkeypatch.chdir(tmp_path)
    for name in ("CE_RERANK_MODEL", "CE_RERANK_DATA", "CE_RERANK_PRECISION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(reader_cache))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def wait_for(url: str, server: subprocess.Popen[bytes], example: Example, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read().decode(errors="replace") if server.stdout else ""
            pytest.fail(f"{example.where()}: the server exited with {server.returncode}\n{output[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"{example.where()}: {url} did not answer 200 within {timeout:.0f} s")


def stop(server: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGTERM, 20), (signal.SIGKILL, 20)):
        if server.poll() is not None:
            return
        os.killpg(server.pid, sig)
        try:
            server.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def check_extras(example: Example) -> None:
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    lines = [ln for ln in example.code.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("pip install ") for ln in lines), example.where()
    for named in re.findall(r"ce-rerank-plugins\[([^\]]+)\]", example.code):
        unknown = set(named.split(",")) - declared
        assert not unknown, f"{example.where()}: no extra named {sorted(unknown)}"


def run_shell(example: Example, servers: list[subprocess.Popen[bytes]]) -> None:
    cwd = REPO if "in-repo" in example.options else Path.cwd()
    command = ["bash", "-euo", "pipefail", "-c", example.code]
    if "background" in example.options:
        server = subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        servers.append(server)
        path = example.options.get("path") or "/health"
        wait_for(f"http://127.0.0.1:{example.options['port']}{path}", server, example)
        return
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, (
        f"{example.where()} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )


def _starts_ray(page: Path) -> bool:
    """Whether an example the test runs starts Ray (``--ray`` outside a comment)."""
    return any(
        "--ray" in line.split("#")[0]
        for example in examples(page)
        if "not-run" not in example.options
        for line in example.code.splitlines()
    )


def _page_param(page: Path) -> object:
    marks = [pytest.mark.starts_ray] if _starts_ray(page) else []
    return pytest.param(page, marks=marks, id=page.relative_to(REPO).with_suffix("").as_posix())


def test_the_pages_that_start_ray_share_the_ray_worker():
    assert [p.name for p in PAGES if _starts_ray(p)] == ["serving.md"]


@pytest.mark.slow
@pytest.mark.parametrize("page", [_page_param(p) for p in PAGES])
def test_page_examples_run_as_printed(page, workdir):
    namespace: dict[str, object] = {"__name__": "__main__"}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for example in examples(page):
            if "not-run" in example.options:
                continue
            if "check-extras" in example.options:
                check_extras(example)
            elif example.lang == "python":
                exec(compile(example.code, example.where(), "exec"), namespace)
            else:
                run_shell(example, servers)
    finally:
        for server in servers:
            stop(server)
