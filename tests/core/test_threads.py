"""torch's intra-op threads: one setting ($CE_RERANK_THREADS, set_threads, --threads), applied once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ce_rerank_plugins.cli import app
from ce_rerank_plugins.core import check_threads, default_threads


def _threads_after_load(model: str, env_value: str | None, before: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CE_RERANK_THREADS"}
    if env_value is not None:
        env["CE_RERANK_THREADS"] = env_value
    code = (
        "import torch\n"
        f"{before}\n"
        "from ce_rerank_plugins import CrossEncoderReranker\n"
        f"CrossEncoderReranker({model!r}, precision='fp32').rank('q', ['a', 'b'])\n"
        "print('threads', torch.get_num_threads())\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize(
    ("env_value", "before", "expected"),
    [
        ("1", "", 1),
        (None, "", default_threads()),  # the default, "auto": half the CPUs
        ("auto", "", default_threads()),
        ("torch", "torch.set_num_threads(3)", 3),  # left alone
        ("1", "from ce_rerank_plugins.core import set_threads; set_threads(3)", 3),  # explicit call wins
    ],
)
def test_the_thread_setting_is_applied_at_the_first_model_load(tiny_ce_path, env_value, before, expected):
    result = _threads_after_load(str(tiny_ce_path), env_value, before)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"threads {expected}" in result.stdout


def test_a_bad_thread_setting_is_a_clear_error_naming_its_source(tiny_ce_path):
    result = _threads_after_load(str(tiny_ce_path), "many")
    assert result.returncode != 0
    assert "$CE_RERANK_THREADS must be a positive integer, 'auto' or 'torch', got 'many'" in result.stderr


@pytest.mark.parametrize("bad", [0, -2, True, 1.5, "x", None])
def test_check_threads_refuses_what_is_not_a_count(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer, 'auto' or 'torch'"):
        check_threads(bad, "threads")
    assert check_threads("4", "threads") == 4 and check_threads("auto", "threads") == "auto"


def test_cli_threads_option_is_checked_before_anything_loads(tmp_path):
    result = CliRunner().invoke(app, ["--threads", "0", "index", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--threads must be a positive integer" in result.output
