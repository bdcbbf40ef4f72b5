"""Ray Data on a real local Ray: embedding and batch reranking equal the single-process path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from typer.testing import CliRunner

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.cli import app
from ce_rerank_plugins.retrieval import Embedder, FaissIndex

QUESTIONS = [
    "How many people live in Lyon?",
    "What water temperature should I use to brew coffee?",
    "Why does an afternoon coffee keep me awake at night?",
]


def test_embed_texts_equals_encode_in_input_order(local_ray, sample_records):
    from ce_rerank_plugins import ray_data

    texts = [r["text"] for r in sample_records] * 3  # 90 texts over several blocks and two actors
    got = ray_data.embed_texts(texts, actors=2, batch_size=8)
    want = Embedder().encode(texts)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ray_data.embed_texts([], actors=1).shape == (0, want.shape[1])


def test_index_with_ray_gives_the_same_top_10(local_ray, tmp_path, sample_records):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for r in sample_records:
        (corpus / f"{r['id']}.txt").write_text(r["text"], encoding="utf-8")
    runner = CliRunner()
    for name, extra in (("local", []), ("ray", ["--ray", "--actors", "2"])):
        result = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    local, distributed = FaissIndex.load(tmp_path / "local"), FaissIndex.load(tmp_path / "ray")
    assert local.ids == distributed.ids
    for question in QUESTIONS:
        want = [(h.id, h.score) for h in local.search(question, k=10)]
        got = [(h.id, h.score) for h in distributed.search(question, k=10)]
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


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


def test_cli_ray_options_are_usage_errors_without_ray(tmp_path):
    result = CliRunner().invoke(app, ["index", str(tmp_path), "--out", str(tmp_path / "o"), "--address", "auto"])
    assert result.exit_code == 2 and "--address is for --ray" in result.output
    served = CliRunner().invoke(app, ["serve", "--replicas", "2"])
    assert served.exit_code == 2 and "are for --ray" in served.output
