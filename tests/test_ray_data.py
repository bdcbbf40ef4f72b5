"""Ray Data on a real local Ray: embedding and batch reranking equal the single-process path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from typer.testing import CliRunner

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.cli import app
from ce_rerank_plugins.retrieval import Embedder

pytestmark = pytest.mark.starts_ray

QUESTIONS = [
    "How many people live in Lyon?",
    "What water temperature should I use to brew coffee?",
    "Why does an afternoon coffee keep me awake at night?",
]


def test_a_module_that_starts_ray_runs_on_the_ray_worker(request):
    # tests/conftest.py turns the starts_ray mark into xdist's group, which --dist loadgroup keeps on one worker.
    group = request.node.get_closest_marker("xdist_group")
    if not request.config.pluginmanager.hasplugin("xdist"):
        assert group is None  # without xdist the hook adds nothing: the mark would be unknown there
        return
    assert group.args == ("ray",)
    if request.config.getoption("dist", "no") == "loadgroup":
        assert request.node.nodeid.endswith("@ray")


def test_embed_texts_equals_encode_in_input_order(local_ray, sample_records):
    from ce_rerank_plugins import ray_data

    texts = [r["text"] for r in sample_records] * 3  # 90 texts over several blocks and two actors
    got = ray_data.embed_texts(texts, actors=2, batch_size=8)
    want = Embedder().encode(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ray_data.embed_texts([], actors=1).shape == (0, want.shape[1])


def test_rerank_rows_equals_the_core_and_keeps_the_rows(local_ray, tiny_ce_path, sample_records):
    from ce_rerank_plugins import ray_data

    texts = [r["text"] for r in sample_records]
    rows = [{"query": q, "candidates": texts[i : i + 12], "qid": f"q{i}"} for i, q in enumerate(QUESTIONS * 3)] + [
        {"query": "nothing to rank", "candidates": []}
    ]
    before = copy.deepcopy(rows)
    out = ray_data.rerank_rows(rows, str(tiny_ce_path), actors=2, rows_per_batch=2)
    assert rows == before, "the caller's rows were changed"
    core = CrossEncoderReranker(tiny_ce_path, precision="fp32")
    assert len(out) == len(rows)
    for row, got in zip(rows, out, strict=True):
        assert {k: got[k] for k in row} == row  # every input key kept, in input order of rows
        ranked = core.rank(row["query"], row["candidates"]) if row["candidates"] else []
        assert got["ranking"] == [r.corpus_id for r in ranked]
        assert [got["scores"][r.corpus_id] for r in ranked] == pytest.approx([r.score for r in ranked], abs=1e-5)


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        ("a string", TypeError, "rows must be a list"),
        ([("q", ["a"])], TypeError, r"rows\[0\] must be a mapping"),
        ([{"query": "q"}], ValueError, r"rows\[0\] needs the keys 'query' and 'candidates'"),
        ([{"query": "q", "candidates": "abc"}], TypeError, "candidates'] must be a list"),
        ([{"query": "q", "candidates": ["ok", "bad\ud800"]}], ValueError, r"candidates'\]\[1\]"),
        ([{"query": "q", "candidates": ["a"], "scores": [1]}], ValueError, "would overwrite"),
        ([{"query": "", "candidates": ["a"]}], ValueError, r"rows\[0\]\['query'\] is empty"),
    ],
)
def test_rerank_rows_refuses_bad_rows_before_starting_work(rows, error, message):
    from ce_rerank_plugins import ray_data

    with pytest.raises(error, match=message):
        ray_data.rerank_rows(rows, "unused-model")


def test_pool_settings_are_checked():
    from ce_rerank_plugins import ray_data

    with pytest.raises(ValueError, match="actors must be a positive integer"):
        ray_data.embed_texts(["a"], actors=0)
    with pytest.raises(TypeError, match="texts must be a list"):
        ray_data.embed_texts("a bare string")
    with pytest.raises(ValueError, match="cpus_per_actor"):
        ray_data.rerank_rows([{"query": "q", "candidates": ["a"]}], actors=1, cpus_per_actor=0)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "60"):
        with pytest.raises(ValueError, match="stall_timeout must be a positive, finite number"):
            ray_data.embed_texts(["a"], stall_timeout=bad)


def test_a_run_that_stops_making_progress_is_given_up_not_waited_on_forever():
    """A lost node's actors may never be placed again: the results stop coming, and the wait is bounded."""
    import threading
    import time

    from ce_rerank_plugins.ray_data import RayDataStalledError, _watched

    never = threading.Event()

    def stalls_after_two():
        yield 1
        yield 2
        never.wait(30)  # a batch that never finishes
        yield 3

    got: list[int] = []
    started = time.monotonic()
    with pytest.raises(RayDataStalledError, match=r"no batch finished for 0.5 s.*returned nothing"):
        got.extend(_watched(stalls_after_two(), 0.5, "embedding 3 texts"))
    assert got == [1, 2] and time.monotonic() - started < 10
    never.set()
    assert list(_watched(iter(range(5)), 0.5, "x")) == [0, 1, 2, 3, 4]

    def fails():
        yield 1
        raise KeyError("a failed batch")

    with pytest.raises(KeyError, match="a failed batch"):
        list(_watched(fails(), 5, "x"))


def test_cli_ray_options_are_usage_errors_without_ray(tmp_path):
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "o"), "--address", "auto"])
    assert result.exit_code == 2 and "--address and --stall-timeout are for --ray" in result.output
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "o"), "--stall-timeout", "5"])
    assert result.exit_code == 2 and "are for --ray" in result.output
    for bad in ("0", "inf", "nan"):
        args = ["index", str(tmp_path), "--out", str(tmp_path / "o"), "--ray", "--stall-timeout", bad]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "--stall-timeout must be a positive, finite number" in result.output, bad
    served = CliRunner().invoke(app, ["serve", "--replicas", "2"])
    assert served.exit_code == 2 and "are for --ray" in served.output
