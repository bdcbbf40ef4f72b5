"""CrossEncoderReranker through the real CrossEncoder(path) loading path on small local models."""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from ce_rerank_plugins import CrossEncoderReranker, ModelLoadError, RankedResult, ScoreCache, ScoringError

QUERY = "How many people live in Lyon?"
PASSAGES = [
    "Lyon had about 522,000 inhabitants in the city proper at the last census.",
    "Lyon is known for its traditional bouchons and silk-weaving history.",
    "The metropolitan area of Lyon counts roughly 2.3 million residents.",
    "The Rhône and the Saône rivers meet in the centre of Lyon.",
    "Population growth in French cities slowed during the 1970s and recovered later.",
    "Paris is the capital of France.",
]
PAIRS = [(QUERY, p) for p in PASSAGES] + [("What causes the seasons?", "Earth's axis is tilted.")]


def assert_same_rankings(got, expected):
    """Same order exactly; scores equal up to float noise from a different batch padding (<= 1e-6)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert [r.corpus_id for r in a] == [r.corpus_id for r in b]
        assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-6)


def test_predict_matches_sentence_transformers(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, precision="fp32")
    ours = reranker.predict(PAIRS)
    theirs = CrossEncoder(str(tiny_ce_path)).predict(PAIRS)
    assert ours.dtype == np.float32
    assert ours.shape == (len(PAIRS),)
    assert np.max(np.abs(ours - theirs)) <= 1e-5


def test_rank_matches_sentence_transformers(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, precision="fp32")
    ours = reranker.rank(QUERY, PASSAGES, return_documents=True)
    theirs = CrossEncoder(str(tiny_ce_path)).rank(QUERY, PASSAGES, return_documents=True)
    assert [r.corpus_id for r in ours] == [t["corpus_id"] for t in theirs]
    for r, t in zip(ours, theirs, strict=True):
        assert isinstance(r.score, float)
        assert abs(r.score - t["score"]) <= 1e-5
        assert r.text == PASSAGES[r.corpus_id] == t["text"]
    assert [r.score for r in ours] == sorted((r.score for r in ours), reverse=True)


def test_rank_top_n_and_to_dict(tiny_ce_path):
    ranked = CrossEncoderReranker(tiny_ce_path).rank(QUERY, PASSAGES, top_n=2)
    assert len(ranked) == 2
    assert ranked[0].to_dict() == {"corpus_id": ranked[0].corpus_id, "score": ranked[0].score}


def test_ties_keep_input_order(tiny_ce_path):
    ranked = CrossEncoderReranker(tiny_ce_path).rank(QUERY, ["same text", "other", "same text", "same text"])
    same = [r.corpus_id for r in ranked if r.corpus_id in (0, 2, 3)]
    assert same == [0, 2, 3]


def test_caller_inputs_unchanged(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path)
    docs = list(PASSAGES)
    pairs = [tuple(p) for p in PAIRS]
    docs_before, pairs_before = copy.deepcopy(docs), copy.deepcopy(pairs)
    reranker.rank(QUERY, docs, top_n=3)
    reranker.predict(pairs)
    assert docs == docs_before
    assert pairs == pairs_before


def test_empty_inputs(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path)
    assert reranker.rank(QUERY, []) == []
    assert reranker.predict([]).shape == (0,)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.rank(QUERY, ["ok", None]), TypeError, r"documents\[1\] must be a string"),
        (lambda r: r.rank(None, ["ok"]), TypeError, "query must be a string"),
        (lambda r: r.rank(QUERY, "not a list"), TypeError, "documents must be a list"),
        (lambda r: r.predict([("a", "b"), ("c", 3)]), TypeError, r"pairs\[1\]\[1\] must be a string"),
        (lambda r: r.predict([("a",)]), TypeError, r"pairs\[0\] must be a \(text_a, text_b\) pair"),
        (lambda r: r.rank(QUERY, ["a"], top_n=0), ValueError, "top_n must be >= 1"),
        (lambda r: r.rank(QUERY, ["a"], top_n=1.5), TypeError, "top_n must be an int"),
        (lambda r: r.predict([("a", "b")], score_mode="softmax"), ValueError, "needs a model with num_labels > 1"),
        (lambda r: r.predict([("a", "b")], score_mode="probit"), ValueError, "score_mode must be one of"),
        (lambda r: r.classify([("a", "b")]), ValueError, "classify\\(\\) needs a model with num_labels > 1"),
        (lambda r: r.rank(QUERY, ["a"], score_threshold=float("nan")), ValueError, "score_threshold is NaN"),
        (lambda r: r.rank(QUERY, ["a"], score_threshold="0.5"), TypeError, "score_threshold must be a number"),
        (lambda r: r.rank(QUERY, [], score_threshold="0.5"), TypeError, "score_threshold must be a number"),
        (lambda r: r.rank(QUERY, ["a"], min_keep=-1), ValueError, "min_keep must be a non-negative integer"),
        (
            lambda r: r.rank(QUERY, ["ok", "bad\udc80"]),
            ValueError,
            r"documents\[1\] is not valid Unicode text: character 3",
        ),
        (lambda r: r.rank("q\ud800", ["ok"]), ValueError, "query is not valid Unicode text: character 1"),
        (lambda r: r.predict([("a", "\udfff")]), ValueError, r"pairs\[0\]\[1\] is not valid Unicode text"),
    ],
)
def test_bad_inputs_raise_clear_errors(tiny_ce_path, call, error, match):
    with pytest.raises(error, match=match):
        call(CrossEncoderReranker(tiny_ce_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"max_length": 2}, "max_length must be an integer >= 8"),
        ({"min_keep": -1}, "min_keep must be a non-negative integer"),
        ({"score_threshold": float("nan")}, "score_threshold is NaN"),
        ({"precision": "onnx", "device": "cuda"}, "runs on CPU only"),  # refused before anything is exported
        ({"precision": "onnx-int8", "device": "cuda:1"}, "runs on CPU only"),
    ],
)
def test_bad_settings_raise(tiny_ce_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossEncoderReranker(tiny_ce_path, **kwargs)


def test_missing_local_model_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no cross-encoder model directory at .*no-such-model"):
        CrossEncoderReranker(str(missing) + "/")


def test_unreachable_hub_model_explains_local_path():
    with pytest.raises(ModelLoadError, match=r"(?s)could not load cross-encoder 'org/not-here'.*pass a local model"):
        CrossEncoderReranker("org/not-here")


def test_score_modes(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path)
    assert reranker.score_mode == "sigmoid"  # the model's own activation
    logits = reranker.predict(PAIRS, score_mode="logits")
    sigmoid = reranker.predict(PAIRS, score_mode="sigmoid")
    assert np.allclose(sigmoid, 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert np.allclose(reranker.predict(PAIRS), sigmoid)
    assert not np.allclose(logits, sigmoid)


def test_threshold_in_score_space_and_min_keep(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, score_mode="logits")
    scores = sorted((r.score for r in reranker.rank(QUERY, PASSAGES)), reverse=True)
    cut = (scores[1] + scores[2]) / 2  # between the 2nd and 3rd best
    kept = reranker.rank(QUERY, PASSAGES, score_threshold=cut)
    assert len(kept) == 2
    assert all(r.score >= cut for r in kept)
    above_all = scores[0] + 1.0
    assert reranker.rank(QUERY, PASSAGES, score_threshold=above_all) == []
    assert len(reranker.rank(QUERY, PASSAGES, score_threshold=above_all, min_keep=3)) == 3
    thresholded = CrossEncoderReranker(tiny_ce_path, score_mode="logits", score_threshold=cut, min_keep=4)
    assert len(thresholded.rank(QUERY, PASSAGES)) == 4
    assert len(thresholded.rank(QUERY, PASSAGES, top_n=1)) == 1


def test_classification_labels_and_probabilities(tiny_nli_path):
    reranker = CrossEncoderReranker(tiny_nli_path, precision="fp32")
    assert reranker.num_labels == 3
    assert reranker.labels == ("contradiction", "entailment", "neutral")
    results = reranker.classify(PAIRS)
    raw = CrossEncoder(str(tiny_nli_path)).predict(PAIRS, apply_softmax=True)
    for result, row in zip(results, raw, strict=True):
        assert result.label == reranker.labels[int(np.argmax(row))]
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert [result.probabilities[label] for label in reranker.labels] == pytest.approx(row.tolist(), abs=1e-5)
    softmax = reranker.predict(PAIRS, score_mode="softmax")
    assert softmax.shape == (len(PAIRS), 3)
    assert np.allclose(softmax.sum(axis=1), 1.0, atol=1e-5)


def test_classification_rank_needs_a_label(tiny_nli_path):
    with pytest.raises(ValueError, match="pass rank_label"):
        CrossEncoderReranker(tiny_nli_path).rank(QUERY, PASSAGES)
    by_entailment = CrossEncoderReranker(tiny_nli_path, rank_label="entailment", score_mode="softmax")
    ranked = by_entailment.rank(QUERY, PASSAGES)
    probs = by_entailment.predict([(QUERY, p) for p in PASSAGES])[:, 1]
    assert [r.corpus_id for r in ranked] == list(np.argsort(-probs, kind="stable"))
    with pytest.raises(ValueError, match="rank_label must be one of"):
        CrossEncoderReranker(tiny_nli_path, rank_label="maybe")


def test_one_model_per_key_shared_and_loaded_once_under_16_threads(tiny_ce_path, fresh_registry):
    barrier = threading.Barrier(16)

    def make() -> CrossEncoderReranker:
        barrier.wait()
        return CrossEncoderReranker(tiny_ce_path, batch_size=8, score_threshold=0.1)

    with ThreadPoolExecutor(16) as pool:
        rerankers = list(pool.map(lambda _: make(), range(16)))
    assert len({id(r.model) for r in rerankers}) == 1
    assert fresh_registry.load_count(rerankers[0].key) == 1
    other_length = CrossEncoderReranker(tiny_ce_path, max_length=64)
    assert other_length.model is not rerankers[0].model  # max_length is part of the key


def test_sixteen_threads_give_sequential_results(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path)
    queries = [f"question {i} about Lyon and its {i * 7} inhabitants" for i in range(32)]
    docs = PASSAGES + [p.upper() for p in PASSAGES]
    sequential = [reranker.rank(q, docs) for q in queries]
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(lambda q: reranker.rank(q, docs), queries))
    assert_same_rankings(threaded, sequential)
    assert reranker.engine.batcher.stats.max_requests_per_run > 1  # callers were really batched together


def test_threads_without_micro_batching_give_sequential_results(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, micro_batching=False)
    queries = [f"q{i}" for i in range(16)]
    sequential = [reranker.predict([(q, p) for p in PASSAGES]) for q in queries]
    with ThreadPoolExecutor(16) as pool:
        threaded = list(pool.map(lambda q: reranker.predict([(q, p) for p in PASSAGES]), queries))
    for a, b in zip(threaded, sequential, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


async def test_async_gather_equals_sequential_and_loads_once(tiny_ce_path, fresh_registry):
    reranker = CrossEncoderReranker(tiny_ce_path)
    queries = [f"async question {i}" for i in range(12)]
    sequential = [reranker.rank(q, PASSAGES, top_n=3) for q in queries]
    gathered = await asyncio.gather(*(reranker.arank(q, PASSAGES, top_n=3) for q in queries))
    assert_same_rankings(gathered, sequential)
    pairs = [[(q, p) for p in PASSAGES] for q in queries]
    predicted = await asyncio.gather(*(reranker.apredict(p) for p in pairs))
    for got, p in zip(predicted, pairs, strict=True):
        np.testing.assert_allclose(got, reranker.predict(p), rtol=0, atol=1e-6)
    assert fresh_registry.load_count(reranker.key) == 1


@pytest.mark.parametrize("micro_batching", [True, False])
async def test_cancelled_async_calls_stop_computing(tiny_ce_path, fresh_registry, micro_batching):
    # A slow model (each batch takes 20 ms) and a count of the pairs it really scores.
    reranker = CrossEncoderReranker(tiny_ce_path, batch_size=8, micro_batching=micro_batching)
    scored: list[int] = []
    engine = reranker.engine
    real = engine.score_logits

    def slow(pairs, batch_size):
        scored.append(len(pairs))
        time.sleep(0.02 * -(-len(pairs) // batch_size))
        return real(pairs, batch_size)

    engine.score_logits = slow
    engine.batcher._score_fn = slow
    docs = [f"passage number {i} about Lyon" for i in range(800)]
    tasks = [asyncio.create_task(reranker.arank(f"question {i}", docs)) for i in range(3)]
    await asyncio.sleep(0.3)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    await asyncio.sleep(0.3)  # whatever was already running finishes its step
    settled = sum(scored)
    assert settled < 3 * len(docs) / 4, f"{settled} pairs scored for callers that left"
    small = await reranker.arank("How many people live in Lyon?", PASSAGES, top_n=1)
    assert len(small) == 1 and sum(scored) == settled + len(PASSAGES)  # nothing abandoned ran meanwhile


def test_duplicates_scored_once_and_cache_hits(tiny_ce_path):
    cache = ScoreCache(maxsize=100)
    reranker = CrossEncoderReranker(tiny_ce_path, cache=cache)
    docs = ["alpha", "beta", "alpha", "gamma", "beta"]
    first = reranker.rank(QUERY, docs)
    info = reranker.cache_info()
    assert info.misses == 3 and info.hits == 0 and info.currsize == 3  # duplicates looked up once
    second = reranker.rank(QUERY, docs)
    assert reranker.cache_info().hits == 3
    assert first == second
    scores = {r.corpus_id: r.score for r in first}
    assert scores[0] == scores[2] and scores[1] == scores[4]
    # Another reranker on the same model and cache reuses the raw logits in its own score space.
    logits_view = CrossEncoderReranker(tiny_ce_path, cache=cache, score_mode="logits")
    logits_view.rank(QUERY, docs)
    assert cache.info().hits == 6


def test_a_shared_cache_never_mixes_truncated_and_windowed_scores(tiny_ce_path):
    cache = ScoreCache(maxsize=100)
    long_passage = " ".join(["unrelated filler words"] * 40) + " Lyon has 522,000 inhabitants."
    truncating = CrossEncoderReranker(tiny_ce_path, max_length=48, cache=cache)
    windowed = CrossEncoderReranker(tiny_ce_path, max_length=48, cache=cache, long_document=True, window_overlap=8)
    first = truncating.predict([(QUERY, long_passage)])
    second = windowed.predict([(QUERY, long_passage)])
    fresh = CrossEncoderReranker(tiny_ce_path, max_length=48, long_document=True, window_overlap=8)
    assert second[0] == pytest.approx(fresh.predict([(QUERY, long_passage)])[0], abs=1e-6)
    assert second[0] != pytest.approx(first[0], abs=1e-6)
    assert cache.info().hits == 0


def test_cache_is_bounded():
    cache = ScoreCache(maxsize=2)
    for i in range(3):
        cache.put(("k", "q", str(i)), np.zeros(1, dtype=np.float32))
    assert cache.info().currsize == 2
    assert cache.get(("k", "q", "0")) is None
    with pytest.raises(ValueError, match="maxsize must be a positive integer"):
        ScoreCache(0)


def test_truncation_warns_once_and_never_cuts_the_query(tiny_ce_path, caplog):
    reranker = CrossEncoderReranker(tiny_ce_path, max_length=32)
    long_passage = "Lyon " + "word " * 200
    with caplog.at_level(logging.WARNING, logger="ce_rerank_plugins"):
        reranker.rank(QUERY, [long_passage, "short", long_passage + "x"])
        reranker.rank(QUERY, [long_passage])
    warnings = [r for r in caplog.records if "exceed max_length=32" in r.getMessage()]
    assert len(warnings) == 1
    assert "2 of 3 passages" in warnings[0].getMessage()
    # The query survives intact: a long passage scores as if truncated only on its side.
    tokens = reranker.model.tokenizer(QUERY, long_passage, truncation="only_second", max_length=32)
    decoded = reranker.model.tokenizer.decode(tokens["input_ids"])
    assert "how many people live in lyon?" in decoded
    with pytest.raises(ValueError, match="the query alone has .* tokens"):
        reranker.rank("word " * 40, ["passage"])


def test_long_document_mode_scores_the_best_window(tiny_ce_path):
    plain = CrossEncoderReranker(tiny_ce_path, max_length=48)
    windowed = CrossEncoderReranker(tiny_ce_path, max_length=48, long_document=True, window_overlap=8)
    filler = " ".join(f"filler{i}" for i in range(120))
    key_sentence = "Lyon had about 522,000 inhabitants in the city proper."
    long_doc = filler + " " + key_sentence
    windows = windowed.engine.passage_windows(long_doc, budget=30, overlap=8)
    assert len(windows) > 3
    assert key_sentence.split()[-1] in windows[-1]
    got = windowed.predict([(QUERY, long_doc)])[0]
    budget = 48 - windowed.engine.pair_special_tokens - windowed.engine.token_counts([QUERY])[0]
    expected_windows = windowed.engine.passage_windows(long_doc, budget, 8)
    expected = plain.predict([(QUERY, w) for w in expected_windows]).max()
    assert got == pytest.approx(float(expected), abs=1e-6)
    short = windowed.predict([(QUERY, "short passage")])[0]
    assert short == pytest.approx(float(plain.predict([(QUERY, "short passage")])[0]), abs=1e-6)


def test_long_document_mode_needs_single_score_model(tiny_nli_path):
    with pytest.raises(ValueError, match="long_document mode needs a single-score model"):
        CrossEncoderReranker(tiny_nli_path, long_document=True)


def test_nan_scores_are_an_error(tiny_ce_path):
    reranker = CrossEncoderReranker(tiny_ce_path, micro_batching=False, max_length=40)
    engine = reranker.engine
    original = engine.score_logits

    def poisoned(pairs, batch_size):
        out = original(pairs, batch_size)
        out[1] = np.nan
        return out

    engine.score_logits = poisoned  # the real engine, with one poisoned output row
    try:
        with pytest.raises(ScoringError, match=r"NaN or infinite scores for 1 of 3 pairs \(positions \[1\]\)"):
            reranker.rank("nan query", ["a", "b", "c"])
    finally:
        del engine.score_logits


def test_bf16_precision_falls_back_when_rankings_change(tiny_ce_path, caplog):
    # A random-weight model's scores are nearly equal, so bf16 reorders them: the probe must catch it.
    with caplog.at_level(logging.WARNING):
        reranker = CrossEncoderReranker(tiny_ce_path, precision="bf16", max_length=128)
    assert reranker.precision == "fp32"
    assert "changed probe rankings" in reranker.engine.fallback_reason
    assert any("changed probe rankings" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_bf16_kept_when_probe_agrees(tmp_path, monkeypatch):
    # A real-size MiniLM-L6 cross-encoder (bundled backbone, seeded head) ranks the probe set the same
    # in bf16, so bf16 is kept and the weights really are bf16.
    import torch

    from ce_rerank_plugins.core._loading import untrained_cross_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    reranker = CrossEncoderReranker(untrained_cross_encoder(), precision="bf16", device="cpu")
    assert reranker.precision == "bf16"
    assert reranker.engine.fallback_reason is None
    assert reranker.engine.probe.acceptable(0.99)
    assert next(reranker.model.parameters()).dtype == torch.bfloat16
    fp32 = CrossEncoderReranker(untrained_cross_encoder(), precision="fp32", device="cpu")
    pairs = [(QUERY, p) for p in PASSAGES]
    np.testing.assert_allclose(reranker.predict(pairs), fp32.predict(pairs), atol=5e-3)


def test_trust_remote_code_off_by_default(tiny_ce_path):
    assert CrossEncoderReranker(tiny_ce_path).key.trust_remote_code is False


def test_auto_precision_follows_the_hardware(tiny_ce_path):
    from ce_rerank_plugins.core._hardware import device_has_native_bf16

    reranker = CrossEncoderReranker(tiny_ce_path, device="cpu")
    assert reranker.key.precision == ("bf16" if device_has_native_bf16("cpu") else "fp32")
    # Whatever was asked, the path in use ranks the probe set like fp32 (or is fp32).
    assert reranker.precision == "fp32" or reranker.engine.probe.acceptable(0.99)


def test_ranked_result_is_immutable():
    result = RankedResult(0, 1.0)
    with pytest.raises(AttributeError):
        result.score = 2.0  # type: ignore[misc]


def test_bf16_keeps_the_scoring_head_in_fp32(tiny_ce_path):
    # The encoder goes to bf16; pooler and classifier stay fp32, the hidden state is cast up to enter them.
    import torch
    from sentence_transformers import CrossEncoder

    from ce_rerank_plugins.core._loading import to_precision

    model = CrossEncoder(str(tiny_ce_path), device="cpu")
    pairs = [(QUERY, p) for p in PASSAGES]
    reference = model.predict(pairs, activation_fn=torch.nn.Identity())
    to_precision(model, "bf16")
    hf = model[0].model
    assert hf.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    assert hf.bert.encoder.layer[0].output.LayerNorm.weight.dtype == torch.bfloat16
    assert hf.bert.pooler.dense.weight.dtype == torch.float32 and hf.classifier.weight.dtype == torch.float32
    scores = model.predict(pairs, activation_fn=torch.nn.Identity())
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, reference, atol=2e-2)


@pytest.mark.parametrize(("flags", "warned"), [(frozenset(), True), (frozenset({"amx_bf16"}), False)])
def test_explicit_bf16_on_a_cpu_without_native_bf16_is_warned_about(tiny_ce_path, monkeypatch, caplog, flags, warned):
    from ce_rerank_plugins.core import _hardware

    monkeypatch.setattr(_hardware, "cpu_flags", lambda: flags)
    with caplog.at_level(logging.WARNING, logger="ce_rerank_plugins.core.reranker"):
        CrossEncoderReranker(tiny_ce_path, device="cpu", precision="bf16", cache=None)
        auto = CrossEncoderReranker(tiny_ce_path, device="cpu", precision="auto", cache=None)
    assert ("without AMX or AVX512-BF16" in caplog.text) is warned
    assert auto.key.precision == ("bf16" if flags else "fp32")  # auto never picks emulated bf16


def test_an_isa_cap_below_bf16_counts_as_no_native_bf16(monkeypatch):
    from ce_rerank_plugins.core import _hardware

    monkeypatch.setattr(_hardware, "cpu_flags", lambda: frozenset({"amx_bf16", "avx512_bf16"}))
    assert _hardware.cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni")
    assert not _hardware.cpu_has_native_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert _hardware.cpu_has_native_bf16()
