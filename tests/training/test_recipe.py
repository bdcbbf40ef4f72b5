"""The default model's recipe end to end on tiny BEIR sets: groups, listwise training, resume, the command."""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.cli import app
from ce_rerank_plugins.training.recipe import (
    FUSION_GRID,
    GroupSettings,
    ListwiseConfig,
    check_groups,
    decide_fusion,
    overlap_misleads,
    prepare_groups,
    read_training_groups,
    read_validation,
    train_listwise,
    training_order,
    word_sharing_negatives,
    write_derived_groups,
)

CITIES = {
    "Lyon": ("residents", "bouchons", "silk", "rivers"),
    "Porto": ("wine", "bridges", "tiles", "harbour"),
    "Graz": ("clock", "university", "hill", "museum"),
    "Turku": ("castle", "cathedral", "archipelago", "ferries"),
}


def write_beir(root: Path, prefix: str) -> Path:
    """Four articles of four paragraphs; two questions per paragraph that share the article's name."""
    (root / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for city, topics in CITIES.items():
        for p, topic in enumerate(topics):
            doc_id = f"{prefix}-{city}-{p}"
            text = f"{city} is known for its {topic}; the {topic} of {city} draw many visitors every year."
            corpus.append({"_id": doc_id, "title": city, "text": text})
            for n, ask in enumerate((f"What is {city} known for, {topic}?", f"Tell me about the {topic} in {city}")):
                qid = f"{prefix}-q-{city}-{p}-{n}"
                queries.append({"_id": qid, "text": ask})
                qrels.append(f"{qid}\t{doc_id}\t1")
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


@pytest.fixture
def two_sets(tmp_path) -> list[Path]:
    return [write_beir(tmp_path / "set-a", "a"), write_beir(tmp_path / "set-b", "b")]


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


SETTINGS = GroupSettings(negatives=3, same_title=1, depth=10, holdout_fraction=0.25, max_holdout=8, val_depth=6)


def test_groups_hold_out_whole_titles_and_never_use_a_positive_as_negative(two_sets, tmp_path):
    manifest = prepare_groups(two_sets, tmp_path / "groups", settings=SETTINGS)
    groups = read_gz(tmp_path / "groups" / "train_groups.jsonl.gz")
    val = read_gz(tmp_path / "groups" / "val_queries.jsonl.gz")
    texts = {r["key"]: r["text"] for r in read_gz(tmp_path / "groups" / "texts.jsonl.gz")}
    assert manifest["sets"] == {
        "set-a": {"train_groups": 24, "validation_queries": 8, "held_out_titles": 1},
        "set-b": {"train_groups": 24, "validation_queries": 8, "held_out_titles": 1},
    }
    held_titles = {k.split("-")[2] for v in val for k in v["relevant"]}
    for g in groups:
        assert len(g["docs"]) == 4 and len(set(g["docs"])) == 4 and "teacher" not in g  # bm25: no teacher
        positive_title = g["docs"][0].split("-")[2]
        assert positive_title not in held_titles
        # The question's own paragraph is first; the negatives are other paragraphs, one of its article.
        assert sum(d.split("-")[2] == positive_title for d in g["docs"][1:]) >= 1
        assert all(d in texts for d in g["docs"])
    for v in val:
        assert len(v["docs"]) == len(v["first_stage"]) <= 6
        assert v["first_stage"] == sorted(v["first_stage"], reverse=True)


def test_word_sharing_negatives_repeat_the_question_and_borrow_a_non_answering_sentence(two_sets, tmp_path):
    settings = GroupSettings(**{**SETTINGS.__dict__, "mining": "dense", "word_sharing": 2})
    prepare_groups(two_sets[:1], tmp_path / "groups", settings=settings)
    groups = read_gz(tmp_path / "groups" / "train_groups.jsonl.gz")
    texts = {r["key"]: r["text"] for r in read_gz(tmp_path / "groups" / "texts.jsonl.gz")}
    for g in groups:
        assert len(g["docs"]) == 3 + 1 + 2 and len(g.get("teacher", [])) in (0, 4)  # the teacher: real ones only
        mined = [texts[k] for k in g["docs"][1:4]]
        asked, stated = (texts[k] for k in g["docs"][4:])
        assert asked.startswith(g["query"].rstrip("?") + "? ")
        assert stated.split(": ", 1)[0].lower() in g["query"].lower()
        assert not stated.startswith("What is ")  # the question word goes ("Tell me ..." has none to drop)
        for made in (asked, stated):  # the borrowed sentence comes from a mined negative, never the answer
            tail = made.split("? ", 1)[1] if made is asked else made.split(": ", 1)[1]
            assert any(tail.lower().rstrip(".") in m.lower() for m in mined)
            assert tail.lower().rstrip(".") not in texts[g["docs"][0]].lower()
    rng = random.Random(0)
    assert word_sharing_negatives("How many?", ["A sentence of four words."], 2, rng) == []  # no words left
    assert word_sharing_negatives("Where is Lyon?", [], 2, rng) == []  # nothing to borrow
    assert word_sharing_negatives(
        "did houston used to be the capital of texas", ["Austin is the capital now."], 2, rng
    ) == [
        "did houston used to be the capital of texas? Austin is the capital now.",
        "Houston used to be the capital of texas: austin is the capital now.",
    ]
    with pytest.raises(ValueError, match="word_sharing must be an integer >= 0, got -1"):
        prepare_groups(two_sets, tmp_path / "g", settings=GroupSettings(word_sharing=-1))


def test_dense_mining_records_the_bi_encoders_cosines_as_teacher(two_sets, tmp_path):
    prepare_groups(
        two_sets[:1], tmp_path / "groups", settings=GroupSettings(**{**SETTINGS.__dict__, "mining": "dense"})
    )
    groups = read_gz(tmp_path / "groups" / "train_groups.jsonl.gz")
    assert any("teacher" in g for g in groups)
    assert all(-1.0 <= t <= 1.0 for g in groups for t in g.get("teacher", []))


def test_a_continued_build_holds_out_the_earlier_builds_questions(two_sets, tmp_path):
    """Another seed and more held-out questions would move the split; holdout_from keeps the earlier one."""
    prepare_groups(two_sets, tmp_path / "first", settings=SETTINGS)
    first = read_gz(tmp_path / "first" / "val_queries.jsonl.gz")
    later = GroupSettings(
        **{**SETTINGS.__dict__, "seed": 1, "max_queries": 10, "holdout_from": str(tmp_path / "first")}
    )
    manifest = prepare_groups(two_sets, tmp_path / "second", settings=later)
    second = read_gz(tmp_path / "second" / "val_queries.jsonl.gz")
    assert [(v["set"], v["query"]) for v in second] == [(v["set"], v["query"]) for v in first]
    held = {(v["set"], k.split("-")[2]) for v in first for k in v["relevant"]}
    groups = read_gz(tmp_path / "second" / "train_groups.jsonl.gz")
    assert len(groups) == 20 and manifest["settings"]["holdout_from"] == str(tmp_path / "first")
    assert not {(g["set"], g["docs"][0].split("-")[2]) for g in groups} & held
    assert not {(g["set"], g["query"]) for g in groups} & {(v["set"], v["query"]) for v in first}
    # Without it, the new seed holds out another article.
    moved = prepare_groups(
        two_sets, tmp_path / "third", settings=GroupSettings(**{**later.__dict__, "holdout_from": None})
    )
    assert moved["sets"] == manifest["sets"]
    assert {v["query"] for v in read_gz(tmp_path / "third" / "val_queries.jsonl.gz")} != {v["query"] for v in first}
    # A set the earlier build did not have is split afresh.
    prepare_groups(two_sets[:1], tmp_path / "one", settings=SETTINGS)
    grown = prepare_groups(
        two_sets,
        tmp_path / "grown",
        settings=GroupSettings(**{**later.__dict__, "holdout_from": str(tmp_path / "one")}),
    )
    assert grown["sets"]["set-b"]["validation_queries"] == 8
    with pytest.raises(FileNotFoundError, match="holdout_from: .*val_queries.jsonl.gz' is missing"):
        prepare_groups(two_sets, tmp_path / "g", settings=GroupSettings(holdout_from=str(tmp_path / "nowhere")))


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mining": "magic"}, "mining must be 'bm25' or 'dense'"),
        ({"same_title": 5}, r"same_title \(5\) cannot exceed negatives \(3\)"),
    ],
)
def test_bad_group_settings_are_named(two_sets, tmp_path, change, match):
    with pytest.raises(ValueError, match=match):
        prepare_groups(two_sets, tmp_path / "g", settings=GroupSettings(**{**SETTINGS.__dict__, **change}))
    with pytest.raises(ValueError, match="no training data"):
        prepare_groups([], tmp_path / "g")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"groups_per_step": 0}, "groups_per_step must be a positive integer, got 0"),
        ({"eval_steps": 0}, "eval_steps must be a positive integer"),
        ({"max_steps": 2.5}, "max_steps must be a positive integer"),
        ({"learning_rate": float("nan")}, "NaN is neither"),
    ],
)
def test_bad_training_options_are_named_before_anything_loads(two_sets, tmp_path, change, match):
    prepare_groups(two_sets[:1], tmp_path / "groups", settings=SETTINGS)
    config = ListwiseConfig(base_model="/nonexistent", **change)
    with pytest.raises(ValueError, match=match):
        train_listwise(tmp_path / "groups", tmp_path / "run", config)
    assert not (tmp_path / "run").exists()


def test_an_unfinished_group_build_is_never_reused(two_sets, tmp_path):
    """The manifest is removed first and written last, so a build cut short is not taken for a finished one."""
    prepare_groups(two_sets[:1], tmp_path / "groups", settings=SETTINGS)
    assert (tmp_path / "groups" / "data.json").is_file()
    with pytest.raises(FileNotFoundError, match="does not exist"):  # the second set fails mid-build
        prepare_groups([two_sets[0], tmp_path / "missing"], tmp_path / "groups", settings=SETTINGS)
    assert not (tmp_path / "groups" / "data.json").exists()
    with pytest.raises(FileNotFoundError, match="data.json"):
        train_listwise(tmp_path / "groups", tmp_path / "run", ListwiseConfig(base_model="/nonexistent"))


def test_derived_groups_keep_the_sources_held_out_questions_and_name_a_missing_text(two_sets, tmp_path):
    source, derived = tmp_path / "groups", tmp_path / "derived"
    prepare_groups(two_sets, source, settings=SETTINGS)
    groups, texts = read_training_groups(source)
    written = f"{groups[0]['docs'][1]}~rewritten"
    mine = [{**groups[0], "docs": [*groups[0]["docs"], written]}, groups[1]]
    with pytest.raises(ValueError, match=f"training group 0 .*: no text for '{written}'"):
        write_derived_groups(source, derived, mine, texts)
    members_only = {k: texts[k] for g in groups for k in g["docs"]} | {written: "A rewritten member."}
    with pytest.raises(ValueError, match="no text for .* \\(held-out question"):
        write_derived_groups(source, derived, mine, members_only)
    with pytest.raises(ValueError, match="folder of their own"):
        write_derived_groups(source, source, mine, texts)
    assert not (derived / "data.json").exists()

    written_manifest = write_derived_groups(
        source, derived, mine, {**texts, written: "A rewritten member."}, derivation="one member rewritten"
    )
    again, again_texts = read_training_groups(derived)
    assert again == mine and again_texts[written] == "A rewritten member."
    (val, val_texts), (source_val, source_texts) = read_validation(derived), read_validation(source)
    assert val == source_val and all(val_texts[k] == source_texts[k] for v in val for k in v["docs"])
    # The manifest says what these groups are: the source's settings, the new counts, and where they came from.
    manifest, source_manifest = (json.loads((d / "data.json").read_text()) for d in (derived, source))
    assert manifest == written_manifest and manifest["settings"] == source_manifest["settings"]
    assert sum(info["train_groups"] for info in manifest["sets"].values()) == len(mine)
    for name, info in source_manifest["sets"].items():
        assert manifest["sets"][name]["validation_queries"] == info["validation_queries"]
        assert manifest["derived_from"]["train_groups"][name] == info["train_groups"]
    assert manifest["derived_from"]["data"] == str(source)
    assert manifest["derived_from"]["derivation"] == "one member rewritten"
    (derived / "data.json").unlink()  # as a write cut short leaves it
    with pytest.raises(FileNotFoundError, match="data.json"):
        read_training_groups(derived)


def test_decide_fusion_prefers_the_cross_encoder_alone_unless_fusion_clearly_wins():
    metrics = {"mean/ce/ndcg@10": 0.70} | {f"mean/fused{w:g}/ndcg@10": 0.701 for w in FUSION_GRID[:-1]}
    assert decide_fusion(metrics) == ("none", 1.0)
    metrics["mean/fused0.6/ndcg@10"] = 0.75
    assert decide_fusion(metrics) == ("weighted", 0.6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"teacher": [0.9, float("nan")]}, "'teacher' must be finite numbers"),
        ({"teacher": [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]}, "at most one per member"),
        ({"teacher": "0.9"}, "'teacher' must be finite numbers"),
        ({"docs": "lyon-00"}, "'docs' must list the answer's key and at least one negative's"),
        ({"query": ""}, "'query' must be a non-empty string"),
    ],
)
def test_a_group_the_loss_cannot_take_stops_the_run_before_its_first_step(
    two_sets, tmp_path, tiny_ce_path, change, message
):
    prepare_groups(two_sets, tmp_path / "groups", settings=SETTINGS)
    groups, texts = read_training_groups(tmp_path / "groups")
    check_groups(groups, texts)  # what the recipe builds passes
    groups[1] = {**groups[1], "docs": groups[1]["docs"][:3], **change}
    with gzip.open(tmp_path / "groups" / "train_groups.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(g) + "\n" for g in groups)
    config = ListwiseConfig(base_model=str(tiny_ce_path), max_steps=2, groups_per_step=2, threads=1, device="cpu")
    with pytest.raises(ValueError, match=f"training group 1 .*{message}"):
        train_listwise(tmp_path / "groups", tmp_path / "run", config)
    assert not (tmp_path / "run" / "checkpoint").exists(), "refused before any model was loaded or saved"


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def test_an_interrupted_run_resumes_to_the_same_weights(two_sets, tmp_path, tiny_ce_path):
    """Stopped after its step-2 checkpoint and started again, a run ends where an uninterrupted one does."""
    prepare_groups(two_sets, tmp_path / "groups", settings=SETTINGS)
    config = ListwiseConfig(
        base_model=str(tiny_ce_path),
        max_steps=6,
        groups_per_step=4,
        learning_rate=5e-4,
        max_length=64,
        eval_steps=3,
        checkpoint_steps=2,
        threads=1,
        device="cpu",
    )
    whole = train_listwise(tmp_path / "groups", tmp_path / "whole", config)
    assert whole.steps == 6 and [h["step"] for h in whole.history] == [0, 3, 6]

    class Interrupted(Exception):
        pass

    def stop_at_three(step: int) -> None:
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_listwise(tmp_path / "groups", tmp_path / "cut", config, on_step=stop_at_three)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    resumed = train_listwise(tmp_path / "groups", tmp_path / "cut", config)
    assert resumed.steps == 6 and resumed.best_step == whole.best_step
    assert [h["step"] for h in resumed.history] == [0, 3, 6]
    a, b = weights(tmp_path / "whole" / "checkpoint"), weights(tmp_path / "cut" / "checkpoint")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-6, err_msg=name)
    # The kept model loads in the package with its recommended fusion, fp16 on disk, fp32 to run.
    model_dir = tmp_path / "cut" / "model"
    recommended = json.loads((model_dir / "ce_rerank.json").read_text())
    assert recommended["fusion"] in ("none", "weighted")
    assert json.loads((model_dir / "config.json").read_text())["dtype"] == "float32"
    assert {str(v.dtype) for v in weights(model_dir).values()} == {"float16"}
    assert all(f.stat().st_mode & 0o444 == 0o444 for f in model_dir.iterdir()), "readable by every user"
    # The run's --max-length (64) is not saved as the tokenizer's own truncation.
    base_truncation = json.loads((tiny_ce_path / "tokenizer.json").read_text()).get("truncation")
    saved_truncation = json.loads((model_dir / "tokenizer.json").read_text())["truncation"]
    limit = json.loads((model_dir / "tokenizer_config.json").read_text()).get("model_max_length")
    assert saved_truncation is None or saved_truncation["max_length"] == limit != 64, (base_truncation, limit)
    reranker = CrossEncoderReranker(model_dir, precision="fp32")
    assert reranker.fusion == recommended["fusion"]
    assert len(reranker.rank("What is Lyon known for?", ["Lyon silk", "Porto wine"])) == 2
    record = json.loads((tmp_path / "cut" / "training_run.json").read_text())
    assert record["steps"] == 6 and len(record["losses"]) == 6 and record["data"]["sets"]


def test_train_command_runs_the_recipe_and_refuses_to_mix_runs(two_sets, tmp_path, tiny_ce_path):
    runner = CliRunner()
    args = ["train", "--recipe", "default", "--out", str(tmp_path / "run"), "--base", str(tiny_ce_path)]
    for d in two_sets:
        args += ["--data", str(d)]
    options = ["--max-steps", "2", "--eval-steps", "2", "--groups-per-step", "2", "--negatives", "2"]
    options += ["--max-length", "64", "--max-holdout", "4", "--device", "cpu", "--threads", "1"]
    done = runner.invoke(app, args + options)
    assert done.exit_code == 0, done.output
    assert "set-a: " in done.output and "held-out nDCG@10" in done.output
    assert "step 2: selection" in done.output, "each validation is reported while the run goes on"
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    again = runner.invoke(app, args + options)
    assert again.exit_code == 2 and "pass --resume" in again.output
    resumed = runner.invoke(app, [*args, *options, "--resume", "--max-steps", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert "reusing the training groups" in resumed.output
    assert json.loads((tmp_path / "run" / "training_run.json").read_text())["steps"] == 3
    # Groups built with other options are not reused for a run that asks for different ones.
    shutil.copytree(tmp_path / "run" / "data", tmp_path / "run3" / "data")
    other_args = [*args[:4], str(tmp_path / "run3"), *args[5:]]
    changed = runner.invoke(app, [*other_args, *options, "--negatives", "3"])
    assert changed.exit_code == 2 and "negatives: built 2, asked 3" in changed.output
    assert not (tmp_path / "run3" / "checkpoint").exists()
    reseeded = runner.invoke(app, [*other_args, *options, "--seed", "5", "--max-steps", "1"])
    assert reseeded.exit_code == 0, reseeded.output
    assert "built with seed 12; --seed 5 seeds the training" in reseeded.output
    continued = [*args[:4], str(tmp_path / "run2"), "--base", str(tmp_path / "run" / "model"), *args[7:]]
    continued += [*options, "--holdout-from", str(tmp_path / "run" / "data")]
    done = runner.invoke(app, ["--quiet", *continued])
    assert done.exit_code == 0, done.output
    assert "selection" not in done.output, "--quiet leaves out the progress lines"
    first = read_gz(tmp_path / "run" / "data" / "val_queries.jsonl.gz")
    assert read_gz(tmp_path / "run2" / "data" / "val_queries.jsonl.gz") == first
    other = runner.invoke(app, ["train", "--recipe", "magic", "--out", str(tmp_path / "x"), "--data", str(two_sets[0])])
    assert other.exit_code == 2 and "--recipe must be 'default'" in other.output
    missing = runner.invoke(app, ["train", "--recipe", "default", "--out", str(tmp_path / "y")])
    assert missing.exit_code == 2 and "no training data" in missing.output


def test_soup_keeps_the_held_out_best_interpolation_and_reproduces_both_ends(two_sets, tmp_path, tiny_ce_path):
    """w=0 scores as the start, w=1 as the fine-tuned end; the kept model is the chosen mix, fp16 on disk."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ce_rerank_plugins.training.recipe import held_out_metrics, read_validation
    from ce_rerank_plugins.training.soup import interpolate_on_holdout

    prepare_groups(two_sets, tmp_path / "groups", settings=SETTINGS)
    config = ListwiseConfig(
        base_model=str(tiny_ce_path), max_steps=4, groups_per_step=4, learning_rate=1e-3, max_length=64,
        eval_steps=4, threads=1, device="cpu",
    )  # fmt: skip
    trained = tmp_path / "run" / "checkpoint"  # the last weights, whatever validation kept
    train_listwise(tmp_path / "groups", tmp_path / "run", config)
    result = interpolate_on_holdout(
        tiny_ce_path, trained, tmp_path / "groups", tmp_path / "soup", weights=[1, 0.5, 0], max_length=64,
        threads=1, device="cpu",
    )  # fmt: skip
    assert [row["weight"] for row in result.tried] == [0.0, 0.5, 1.0]
    val, texts = read_validation(tmp_path / "groups")
    for source, row in ((tiny_ce_path, result.tried[0]), (trained, result.tried[-1])):
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
        expected = held_out_metrics(model, AutoTokenizer.from_pretrained(source), val, texts, max_length=64)
        assert row["selection"] == expected["selection"], source
    best = max(result.tried, key=lambda row: row["selection"])  # max() keeps the first (smallest w) of a tie
    assert result.weight == best["weight"] and result.selection == best["selection"]
    record = json.loads((tmp_path / "soup" / "soup_run.json").read_text())
    assert record["weight"] == result.weight and len(record["tried"]) == 3
    a, b, kept = weights(tiny_ce_path), weights(trained), weights(tmp_path / "soup" / "model")
    w = result.weight
    for name in kept:
        mixed = (1 - w) * a[name].astype(np.float32) + w * b[name].astype(np.float32)
        np.testing.assert_allclose(kept[name].astype(np.float32), mixed, atol=2e-3, rtol=2e-3, err_msg=name)
    reranker = CrossEncoderReranker(tmp_path / "soup" / "model", precision="fp32")
    assert reranker.fusion == record["fusion"][0]
    args = ["soup", str(trained), "--start", str(tiny_ce_path), "--data", str(tmp_path / "groups")]
    args += ["--out", str(tmp_path / "s2")]
    done = CliRunner().invoke(
        app, [*args, "--weights", "1,0", "--max-length", "64", "--threads", "1", "--device", "cpu"]
    )
    assert done.exit_code == 0, done.output
    assert "w=0: held-out nDCG@10" in done.output and "w=1: held-out nDCG@10" in done.output
    kept = json.loads((tmp_path / "s2" / "soup_run.json").read_text())["weight"]
    assert f"saved {tmp_path / 's2' / 'model'}: w={kept:g}" in done.output
    assert len(reranker.rank("What is Lyon known for?", ["Lyon silk", "Porto wine"])) == 2
    # A soup never replaces a model already there, least of all the one it averages (--out run, END run/model).
    before = (tmp_path / "run" / "model" / "model.safetensors").read_bytes()
    over = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "run"), "--weights", "0", "--device", "cpu"])
    assert over.exit_code == 1 and "already exists and would be replaced" in over.output
    assert (tmp_path / "run" / "model" / "model.safetensors").read_bytes() == before
    with pytest.raises(FileExistsError, match="choose another out_dir"):
        interpolate_on_holdout(tiny_ce_path, trained, tmp_path / "groups", tmp_path / "soup", weights=[0])


@pytest.mark.parametrize(
    ("grid", "match"),
    [([], "non-empty"), ("0.5", "non-empty"), ([0.5, float("nan")], "nan"), ([1.5], "1.5"), ([True], "True")],
)
def test_soup_weights_must_be_numbers_in_the_unit_interval(grid, match):
    from ce_rerank_plugins.training.soup import check_weights

    with pytest.raises(ValueError, match=match):
        check_weights(grid)


def test_soup_refuses_models_of_different_shape(tmp_path, tiny_ce_path, tiny_nli_path):
    from ce_rerank_plugins.training.soup import interpolate_state

    a, b = weights(tiny_ce_path), weights(tiny_nli_path)
    import torch

    start = {k: torch.from_numpy(v) for k, v in a.items()}
    end = {k: torch.from_numpy(v) for k, v in b.items()}
    with pytest.raises(ValueError, match="do not share one architecture"):
        interpolate_state(start, end, 0.5)
    with pytest.raises(ValueError, match="do not share one architecture"):
        interpolate_state(start, {k: v for k, v in start.items() if "classifier" not in k}, 0.5)
    mid = interpolate_state(start, start, 0.5)
    assert all(torch.equal(mid[k], start[k]) for k in start) and all(mid[k] is not start[k] for k in start)


def test_soup_command_checks_its_options_before_loading(tmp_path):
    runner = CliRunner()
    base = [
        "soup",
        "/nonexistent/b",
        "--start",
        "/nonexistent/a",
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    bad = runner.invoke(app, [*base, "--weights", "0,half"])
    assert bad.exit_code == 2 and "--weights must be comma-separated numbers" in bad.output
    outside = runner.invoke(app, [*base, "--weights", "0,2"])
    assert outside.exit_code == 2 and "in [0, 1], got 2.0" in outside.output
    missing = runner.invoke(app, base)
    assert missing.exit_code == 1 and "val_queries.jsonl.gz" in missing.output and "is missing" in missing.output


def test_overlap_misleads_when_a_negative_shares_more_of_the_questions_content_words():
    question = "How many people live in Lyon?"
    census = "Lyon counted roughly 522,000 residents at the last census."
    assert overlap_misleads(question, census, ["Many people who live in Lyon work in health."])
    assert not overlap_misleads(question, census, ["Porto is known for its wine."])
    # Function words ("how", "in") do not count; an equal count does not mislead.
    assert not overlap_misleads(question, "People live in Lyon.", ["How many, in Lyon, live?"])


def test_training_order_repeats_misleading_groups_up_to_the_share_and_keeps_every_group():
    texts = {"ans": "Lyon counted 522,000 residents.", "far": "Porto wine.", "near": "People live in Lyon and work."}
    misleading = {"query": "How many people live in Lyon?", "docs": ["ans", "near", "far"]}
    plain = {"query": "How many people live in Lyon?", "docs": ["ans", "far"]}
    groups = [misleading, *[plain] * 9]
    assert training_order(groups, texts, 0.0, seed=3) == training_order(groups, texts, 0.0, seed=3)
    assert sorted(training_order(groups, texts, 0.0, seed=3)) == list(range(10)), "each group once"
    order = training_order(groups, texts, 0.5, seed=3)
    assert sorted(set(order)) == list(range(10)) and order.count(0) == 9, "nine plain groups, nine misleading"
    assert order == training_order(groups, texts, 0.5, seed=3), "a resumed run walks the same order"
    assert training_order(groups, texts, 0.05, seed=3).count(0) == 1, "never fewer than the data holds"


@pytest.mark.parametrize("share", [1.0, -0.1, float("nan"), True, "0.5"])
def test_a_bad_misleading_share_is_named_before_anything_loads(tmp_path, share):
    config = ListwiseConfig(base_model="/nonexistent", misleading_share=share)
    with pytest.raises(ValueError, match="misleading_share must be a number in"):
        train_listwise(tmp_path / "groups", tmp_path / "run", config)
