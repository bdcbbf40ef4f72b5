"""Sentence groups in the recipe: the bi-encoder picks the answering sentence; held-out questions never move."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ce_rerank_plugins.cli import app
from ce_rerank_plugins.training.recipe import GroupSettings, check_groups, prepare_groups, read_training_groups
from ce_rerank_plugins.training.sentences import (
    REPEATED_MARK,
    SENTENCE_MARK,
    add_repeated_questions,
    split_sentences,
)

# Each paragraph: one sentence answers its question, three share the question's words and do not.
ARTICLES = {
    "Lyon": [
        (
            "How many people live in Lyon?",
            "Lyon is a large city in the east of France on two rivers. About 520,000 people live in Lyon "
            "according to the latest census count. The old town of Lyon has narrow streets and silk workshops. "
            "Visitors to Lyon often ask where the best bouchons can be found.",
        ),
        (
            "Which rivers meet in Lyon?",
            "The Rhone and the Saone rivers meet in the middle of Lyon. The city of Lyon was founded by the "
            "Romans long ago. Many bridges in Lyon were rebuilt after the war ended. The people of Lyon "
            "celebrate a festival of lights each winter.",
        ),
        (
            "What is Lyon famous for in cooking?",
            "Lyon is famous for its cooking, served in small restaurants called bouchons. The football club of "
            "Lyon plays in a new stadium outside the city. Lyon has a large university with many foreign "
            "students. A metro line in Lyon climbs the steep hill of Fourviere.",
        ),
    ],
    "Porto": [
        (
            "How long is the Douro river near Porto?",
            "Porto lies where the Douro river meets the Atlantic Ocean. The Douro river is about 897 "
            "kilometres long from Spain to Porto. Port wine from Porto is aged in cellars along the river "
            "banks. Tourists in Porto ride old trams through the steep streets.",
        ),
        (
            "What covers the walls of churches in Porto?",
            "Blue and white painted tiles cover the walls of many churches in Porto. Porto is the second "
            "largest city of Portugal after Lisbon. The harbour of Porto was busy with ships for centuries. "
            "Many students in Porto study at its old university.",
        ),
        (
            "Who designed the iron bridge in Porto?",
            "The iron bridge in Porto was designed by a student of Gustave Eiffel. Porto has six bridges that "
            "cross the river between its two banks. People in Porto like to watch the sunset from the bridge. "
            "A cable car in Porto runs beside the river.",
        ),
    ],
}


def write_paragraph_set(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for city, items in ARTICLES.items():
        for p, (question, text) in enumerate(items):
            doc_id = f"{city}-{p}"
            corpus.append({"_id": doc_id, "title": city, "text": text})
            queries.append({"_id": f"q-{doc_id}", "text": question})
            qrels.append(f"q-{doc_id}\t{doc_id}\t1")
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in corpus) + "\n")
    (root / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in queries) + "\n")
    (root / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n")
    return root


def read_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# One title held out, so each build has training questions in the other article.
BASE = {"mining": "dense", "negatives": 2, "same_title": 1, "depth": 6, "holdout_fraction": 0.5, "max_holdout": 3}


@pytest.fixture
def paragraph_set(tmp_path) -> Path:
    return write_paragraph_set(tmp_path / "cities")


def test_sentence_groups_pick_the_answering_sentence_and_leave_held_out_questions_alone(paragraph_set, tmp_path):
    plain = prepare_groups([paragraph_set], tmp_path / "plain", settings=GroupSettings(**BASE))
    built = prepare_groups([paragraph_set], tmp_path / "sent", settings=GroupSettings(**BASE, sentence_groups=10))
    # The held-out questions, their candidates and the paragraph groups are the build's own.
    assert read_gz(tmp_path / "sent" / "val_queries.jsonl.gz") == read_gz(tmp_path / "plain" / "val_queries.jsonl.gz")
    groups, texts = read_training_groups(tmp_path / "sent")
    plain_groups, _ = read_training_groups(tmp_path / "plain")
    paragraph = [g for g in groups if not any(SENTENCE_MARK in d for d in g["docs"])]
    sentence = [g for g in groups if all(SENTENCE_MARK in d for d in g["docs"])]
    assert len(paragraph) + len(sentence) == len(groups)
    assert sorted(map(json.dumps, paragraph)) == sorted(map(json.dumps, plain_groups))
    assert sentence, "the bi-encoder is sure of at least one answering sentence"
    assert built["sets"]["cities"]["sentence_groups"] == len(sentence)
    assert (
        built["sets"]["cities"]["train_groups"]
        == len(groups)
        == plain["sets"]["cities"]["train_groups"] + len(sentence)
    )
    answers = {q: f"{city} {t}" for city, items in ARTICLES.items() for q, t in items}  # the title leads, as indexed
    answer_key = {q: f"cities/{city}-{p}" for city, items in ARTICLES.items() for p, (q, _) in enumerate(items)}
    for group in sentence:
        paragraph_key = group["docs"][0].split(SENTENCE_MARK)[0]
        positive = texts[group["docs"][0]]
        assert positive in split_sentences(answers[group["query"]]), "the positive is a sentence of the answer"
        assert paragraph_key == answer_key[group["query"]]
        assert len(group["teacher"]) == len(group["docs"]) >= 4
        same_paragraph = [texts[d] for d in group["docs"][1:] if d.startswith(f"{paragraph_key}{SENTENCE_MARK}")]
        assert len(same_paragraph) == 3 and positive not in same_paragraph
        if group["query"].startswith(("How many", "How long")):
            assert any(c.isdigit() for c in positive), "a question asking for a number gets a sentence with one"
    check_groups(groups, texts)


def test_repeated_questions_and_a_paragraph_draw(paragraph_set, tmp_path):
    settings = GroupSettings(**BASE, sentence_groups=10, paragraph_groups=2, repeated_questions=True)
    built = prepare_groups([paragraph_set], tmp_path / "g", settings=settings)
    groups, texts = read_training_groups(tmp_path / "g")
    sentence = [g for g in groups if SENTENCE_MARK in g["docs"][1]]
    assert len(groups) - len(sentence) == 2, "paragraph groups are drawn down to paragraph_groups"
    assert built["settings"]["sentence_groups"] == 10 and built["settings"]["repeated_questions"] is True
    for group in sentence:
        added = group["docs"][-1]
        assert REPEATED_MARK in added and texts[added].startswith(group["query"].strip())
        assert len(group["teacher"]) == len(group["docs"]) - 1, "the added member is after the scored ones"
    both = sum(REPEATED_MARK in g["docs"][0] for g in sentence)
    for group in sentence:  # each copy of a shared sentence starts with its own group's question
        assert all(texts[d].startswith(group["query"].strip()) for d in group["docs"] if REPEATED_MARK in d)
    assert both == len(sentence) // 2
    check_groups(groups, texts)


def test_add_repeated_questions_leaves_its_arguments_unchanged():
    groups = [
        {"set": "s", "query": f"Question {n}?", "docs": ["s/a#s0", "s/a#s1"], "teacher": [0.5, 0.1]} for n in range(2)
    ]
    texts = {"s/a#s0": "The answer.", "s/a#s1": "Not the answer."}
    before = json.dumps(groups), dict(texts)
    out, new = add_repeated_questions(groups, texts, random.Random(0))
    assert (json.dumps(groups), texts) == before
    assert out[0]["docs"] == ["s/a#s0", "s/a#s1", f"s/a#s1{REPEATED_MARK}1"]
    assert out[1]["docs"] == [f"s/a#s0{REPEATED_MARK}2", "s/a#s1", f"s/a#s1{REPEATED_MARK}2"]
    assert new[f"s/a#s1{REPEATED_MARK}1"] == "Question 0? Not the answer."
    assert new[f"s/a#s1{REPEATED_MARK}2"] == "Question 1? Not the answer."
    assert new[f"s/a#s0{REPEATED_MARK}2"] == "Question 1? The answer."


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"sentence_groups": -1}, ValueError, "sentence_groups must be an integer >= 0, got -1"),
        ({"paragraph_groups": 1.5}, ValueError, "paragraph_groups must be an integer >= 0, got 1.5"),
        ({"sentence_groups": 5, "sentence_sets": ("nope",)}, ValueError, "sentence_sets names 'nope'.*cities"),
        ({"sentence_groups": 5, "sentence_sets": "cities"}, TypeError, "sentence_sets must be a tuple of set names"),
        ({"repeated_questions": True}, ValueError, "set sentence_groups too"),
        ({"sentence_sets": ("cities",)}, ValueError, "set sentence_groups too"),
    ],
)
def test_bad_sentence_settings_are_named_before_anything_loads(paragraph_set, tmp_path, change, error, match):
    with pytest.raises(error, match=match):
        prepare_groups([paragraph_set], tmp_path / "g", settings=GroupSettings(**{**BASE, **change}))
    assert not (tmp_path / "g").exists()


def test_train_command_builds_sentence_groups_and_reuses_them_only_when_asked_the_same(
    paragraph_set, tmp_path, tiny_ce_path
):
    runner = CliRunner()
    args = ["train", "--recipe", "default", "--out", str(tmp_path / "run"), "--base", str(tiny_ce_path)]
    args += ["--data", str(paragraph_set), "--mining", "dense", "--negatives", "2", "--depth", "6"]
    args += ["--eval-fraction", "0.5", "--max-holdout", "3", "--max-length", "64", "--device", "cpu"]
    args += ["--groups-per-step", "2", "--eval-steps", "1", "--threads", "1"]
    sentences = ["--sentence-groups", "10", "--sentence-sets", "cities", "--repeated-questions"]
    done = runner.invoke(app, [*args, *sentences, "--max-steps", "1"])
    assert done.exit_code == 0, done.output
    manifest = json.loads((tmp_path / "run" / "data" / "data.json").read_text())
    assert manifest["settings"]["sentence_sets"] == ["cities"] and manifest["sets"]["cities"]["sentence_groups"] > 0
    resumed = runner.invoke(app, [*args, *sentences, "--max-steps", "2", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "reusing the training groups" in resumed.output
    other = runner.invoke(app, [*args, "--sentence-groups", "3", "--max-steps", "3", "--resume"])
    assert other.exit_code == 2 and "sentence_groups: built 10, asked 3" in other.output
