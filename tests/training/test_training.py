"""Training through sentence-transformers' CrossEncoderTrainer on tiny local models, and pair mining."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.training import (
    LabeledPair,
    TrainingConfig,
    inverse_cloze_pairs,
    mine_hard_negatives,
    read_pairs,
    reranking_samples,
    train_cross_encoder,
    write_pairs,
)

TOPICS = ["lyon population", "coffee brewing", "sleep cycles", "river names", "silk weaving", "espresso pressure"]


def relevance_pairs(n_queries: int = 48, seed: int = 0) -> list[LabeledPair]:
    """Positives repeat the query's topic words; negatives are about another topic."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n_queries):
        topic = TOPICS[i % len(TOPICS)]
        other = TOPICS[(i + 1 + rng.randrange(len(TOPICS) - 1)) % len(TOPICS)]
        query = f"question {i} about {topic}"
        pairs.append(LabeledPair(query, f"a passage explaining {topic} in detail", 1.0))
        pairs.append(LabeledPair(query, f"a passage explaining {other} in detail", 0.0))
        pairs.append(LabeledPair(query, f"notes on {other} and more {other}", 0.0))
    return pairs


def quick_config(base_model, output_dir, **overrides) -> TrainingConfig:
    """A few fast fp32 CPU steps on a tiny model, evaluating on a 20% held-out split."""
    settings = {
        "batch_size": 16,
        "learning_rate": 1e-3,
        "eval_fraction": 0.2,
        "precision": "fp32",
        "device": "cpu",
        "show_progress": False,
    }
    return TrainingConfig(base_model=str(base_model), output_dir=str(output_dir), **{**settings, **overrides})


def test_train_save_reload_loss_falls_and_evaluator_runs(tiny_ce_path, tmp_path):
    config = quick_config(tiny_ce_path, tmp_path / "run", max_steps=60, eval_steps=30)
    result = train_cross_encoder(relevance_pairs(), config)
    assert result.global_steps == 60
    assert np.mean(result.loss_history[-3:]) < np.mean(result.loss_history[:3])
    assert len(result.eval_history) == 2
    assert all("eval_heldout_ndcg@10" in e for e in result.eval_history)
    assert result.primary_metric == "eval_heldout_ndcg@10"
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*"))  # checkpoints written

    pairs = [
        ("question 99 about sleep cycles", "a passage explaining sleep cycles in detail"),
        ("question 99 about sleep cycles", "a passage explaining silk weaving in detail"),
    ]
    plain = CrossEncoder(result.model_dir).predict(pairs)
    ours = CrossEncoderReranker(result.model_dir).predict(pairs)
    np.testing.assert_allclose(ours, plain, atol=1e-5)
    assert ours[0] > ours[1]  # it learned the task


def test_resume_from_checkpoint(tiny_ce_path, tmp_path):
    run = tmp_path / "run"
    train_cross_encoder(relevance_pairs(), quick_config(tiny_ce_path, run, eval_steps=10, max_steps=10))
    resumed = train_cross_encoder(
        relevance_pairs(), quick_config(tiny_ce_path, run, eval_steps=10, max_steps=20, resume=True)
    )
    assert resumed.global_steps == 20
    assert len(resumed.eval_history) == 1  # only the evaluation after step 20 ran again


def test_three_class_training(tiny_nli_path, tmp_path):
    labels = ["contradiction", "entailment", "neutral"]
    pairs = []
    for i in range(60):
        pairs.append(LabeledPair(f"claim {i} the sky is blue", "the sky is blue", 1.0))
        pairs.append(LabeledPair(f"claim {i} the sky is blue", "the sky is not blue", 0.0))
        pairs.append(LabeledPair(f"claim {i} the sky is blue", "cats like fish", 2.0))
    result = train_cross_encoder(
        pairs,
        quick_config(tiny_nli_path, tmp_path / "nli", num_labels=3, labels=labels, max_steps=40, eval_steps=40),
    )
    assert result.primary_metric == "eval_heldout_f1_macro"
    assert any("eval_heldout_f1_macro" in e for e in result.eval_history)
    reranker = CrossEncoderReranker(result.model_dir)
    assert reranker.labels == tuple(labels)
    assert reranker.classify([("claim x the sky is blue", "cats like fish")])[0].label in labels


def test_bad_training_input(tiny_ce_path, tmp_path):
    config = TrainingConfig(base_model=str(tiny_ce_path), output_dir=str(tmp_path), device="cpu", precision="fp32")
    with pytest.raises(ValueError, match="no training pairs"):
        train_cross_encoder([], config)
    three = TrainingConfig(base_model=str(tiny_ce_path), output_dir=str(tmp_path), num_labels=3, device="cpu")
    with pytest.raises(ValueError, match=r"class labels must be integers in \[0, 3\)"):
        train_cross_encoder([LabeledPair("a", "b", 0.5)], three)


def test_pairs_files_round_trip_and_errors(tmp_path):
    pairs = relevance_pairs(4)
    for name in ("p.jsonl", "p.jsonl.gz"):
        assert write_pairs(pairs, tmp_path / name) == len(pairs)
        assert read_pairs(tmp_path / name) == pairs
    (tmp_path / "p.tsv").write_text("text_a\ttext_b\tlabel\nq\tp\t1\nq\tn\t0\n")
    assert read_pairs(tmp_path / "p.tsv") == [LabeledPair("q", "p", 1.0), LabeledPair("q", "n", 0.0)]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text_a": "q", "label": 1}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: text_a and text_b must be strings"):
        read_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "bad.tsv").write_text("q\tp\n")
    with pytest.raises(ValueError, match="expected 3 tab-separated columns"):
        read_pairs(tmp_path / "bad.tsv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pairs(tmp_path / "missing.jsonl")


def test_hard_negative_miner_never_returns_a_positive(sample_index):
    queries = {f"q{i}": q for i, q in enumerate(["population of Lyon", "brewing coffee", "sleep at night"])}
    # The retriever's own top-5 are declared positive, so the miner must look past them.
    positives = {qid: {h.id for h in sample_index.search(q, k=5)} for qid, q in queries.items()}
    for seed in range(5):
        negatives = mine_hard_negatives(sample_index, queries, positives, depth=12, num_negatives=4, seed=seed)
        for qid, negs in negatives.items():
            assert len(negs) == 4
            assert not set(negs) & positives[qid]
            assert set(negs) <= {h.id for h in sample_index.search(queries[qid], k=12)}


def test_inverse_cloze_pairs_exclude_their_source(sample_index, sample_records):
    corpus = {
        r["id"]: {
            "title": "",
            "text": f"{r['text']} This note is number {i} of the {r['source']} file. It was kept for test {i} alone.",
        }
        for i, r in enumerate(sample_records)
    }
    pairs = inverse_cloze_pairs(corpus, sample_index, depth=10, num_negatives=2, min_words=6)
    samples = reranking_samples(pairs)
    assert samples and all(len(s["positive"]) == 1 and len(s["documents"]) == 3 for s in samples)
    for s in samples:
        assert s["query"] not in s["positive"][0]  # the sentence was removed from its own positive
