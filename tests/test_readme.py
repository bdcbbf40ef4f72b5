"""The README's LangChain and LlamaIndex examples run as written (model taken from $CE_RERANK_MODEL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def example(tag: str) -> str:
    match = re.search(rf"<!-- tested: {tag} -->\s*```python\n(.*?)```", README, re.S)
    assert match, f"README has no tested {tag} example"
    return match.group(1)


@pytest.mark.parametrize("tag", ["langchain", "llamaindex"])
def test_readme_example_runs(tag, tiny_ce_path, monkeypatch, capsys):
    monkeypatch.setenv("CE_RERANK_MODEL", str(tiny_ce_path))
    exec(compile(example(tag), f"README:{tag}", "exec"), {})
    out = capsys.readouterr().out
    if tag == "langchain":
        assert "[lyon.md]" in out and "Question: How many people live in Lyon?" in out  # cited context in prompt
    else:
        assert out.strip().startswith("[(") and out.count("(") == 2  # (rerank score, retrieval score) per node


def test_readme_first_screen_has_the_two_commands():
    first_screen = "\n".join(README.splitlines()[:12])
    assert "make demo" in first_screen and "make test" in first_screen
