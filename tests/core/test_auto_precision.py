"""precision="auto" measures each verified path once per machine and model, and remembers the winner."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ce_rerank_plugins import CrossEncoderReranker
from ce_rerank_plugins.core import _auto_precision as auto
from ce_rerank_plugins.core._engine import build_engine
from ce_rerank_plugins.core._loading import ModelKey
from tests.conftest import build_tiny_cross_encoder


@pytest.fixture
def model(tmp_path, monkeypatch, tiny_ce_path, fresh_registry) -> Path:
    """A private copy of the tiny model, an empty user cache, and no precision override."""
    monkeypatch.delenv(auto.PRECISION_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copy = tmp_path / "model"
    shutil.copytree(tiny_ce_path, copy, ignore=shutil.ignore_patterns("onnx"))
    return copy


@pytest.fixture
def measurements(monkeypatch) -> list[str]:
    """The models measured in this process, in order."""
    seen: list[str] = []
    measure = auto._measure

    def counted(key, *args, **kwargs):
        seen.append(key.model)
        return measure(key, *args, **kwargs)

    monkeypatch.setattr(auto, "_measure", counted)
    return seen


def records(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "ce_rerank_plugins" / "precision").glob("*.json"))


def key_for(model: Path) -> ModelKey:
    return ModelKey(str(model), None, "cpu", "auto", None, False)


def test_the_choice_is_recorded_and_a_second_process_does_not_measure(model, tmp_path):
    script = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from ce_rerank_plugins import CrossEncoderReranker\n"
        f"r = CrossEncoderReranker({str(model)!r})\n"
        "print(r.precision, r.batch_size, r.precision_reason, sep='|')\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "CE_RERANK_THREADS": "1"}
    env.pop(auto.PRECISION_ENV_VAR, None)
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=600)
        for _ in range(2)
    ]
    first, second = (r.stdout.strip().split("|") for r in runs)
    assert "precision auto: timed fp32" in runs[0].stderr and "precision auto: timed" not in runs[1].stderr
    assert first[0] == second[0] and first[1] == second[1]  # same path, same batch size
    assert first[2].startswith("measured: ") and second[2].startswith("measured on this machine (record ")
    [record] = records(tmp_path)
    saved = json.loads(record.read_text())
    assert saved["choice"] == {"precision": first[0], "batch_size": int(first[1])}
    assert {f"fp32@{b}" for b in auto.BATCH_SIZES} <= set(saved["seconds_per_workload"])
    assert saved["key"]["threads"] == 1


def test_the_measured_path_is_the_fastest_timed_and_its_engine_is_kept(model, measurements, fresh_registry):
    reranker = CrossEncoderReranker(model)
    assert measurements == [str(model)]
    [record] = records(model.parent)
    seconds = json.loads(record.read_text())["seconds_per_workload"]
    best = min(seconds, key=seconds.__getitem__)
    assert f"{reranker.precision}@{reranker.batch_size}" == best
    assert fresh_registry.load_count(reranker.key) == 1  # the measured engine was kept, not loaded again
    CrossEncoderReranker(model)
    assert measurements == [str(model)]  # and the process remembers the choice


def test_new_weights_threads_or_library_versions_measure_again(model, measurements, monkeypatch):
    import torch

    CrossEncoderReranker(model)
    first = auto.record_path(auto.measurement_key(key_for(model)))
    build_tiny_cross_encoder(model.parent / "retrained", seed=7)
    shutil.rmtree(model)
    shutil.copytree(model.parent / "retrained" / "cross-encoder", model)
    assert auto.record_path(auto.measurement_key(key_for(model))) != first
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert auto.record_path(auto.measurement_key(key_for(model))) != first
    finally:
        torch.set_num_threads(threads)
    versions = auto._versions()
    monkeypatch.setattr(auto, "_versions", lambda: {**versions, "onnxruntime": "99.0"})
    upgraded = auto.record_path(auto.measurement_key(key_for(model)))
    assert upgraded != first
    auto.choose_precision(key_for(model), build_engine)
    assert measurements == [str(model), str(model)] and upgraded.exists()


def test_a_corrupt_record_falls_back_to_the_rule_and_says_why(model, measurements, caplog):
    CrossEncoderReranker(model)
    [record] = records(model.parent)
    record.write_text('{"key": ')
    auto_choice = auto.choose_precision(key_for(model), build_engine)
    assert auto_choice.precision == auto.rule_precision("cpu")
    assert "is unreadable" in auto_choice.reason and str(record) in auto_choice.reason
    assert any("precision auto: rule: the recorded measurement" in r.message for r in caplog.records)
    assert measurements == [str(model)]  # not measured again, and the record is left for a person to see
    assert record.read_text() == '{"key": '


def test_a_record_naming_a_path_not_available_here_is_refused(model, measurements):
    CrossEncoderReranker(model)
    [record] = records(model.parent)
    saved = json.loads(record.read_text())
    saved["choice"]["precision"] = "tpu-int4"
    record.write_text(json.dumps(saved))
    assert "tpu-int4" in auto.choose_precision(key_for(model), build_engine).reason


def test_a_cache_that_cannot_be_written_skips_measuring(model, measurements, caplog):
    blocked = model.parent / "cache" / "ce_rerank_plugins" / "precision"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING):
        reranker = CrossEncoderReranker(model)
    assert measurements == []
    # The rule's choice; the engine may still serve fp32 where this random tiny model fails the bf16 probe.
    assert reranker.key.precision == auto.rule_precision("cpu")
    assert "not measured" in auto.choose_precision(key_for(model), build_engine).reason
    assert measurements == []
    assert any("cannot record" in r.message for r in caplog.records)


def test_explicit_precision_and_the_environment_skip_measuring(model, measurements, monkeypatch):
    explicit = CrossEncoderReranker(model, precision="fp32", batch_size=4)
    assert (explicit.precision, explicit.batch_size) == ("fp32", 4)
    assert explicit.precision_reason == "precision='fp32' was asked for"
    monkeypatch.setenv(auto.PRECISION_ENV_VAR, "fp32")
    from_env = CrossEncoderReranker(model, max_length=64)
    assert from_env.precision == "fp32" and from_env.precision_reason == "$CE_RERANK_PRECISION=fp32"
    monkeypatch.setenv(auto.PRECISION_ENV_VAR, "fastest")
    with pytest.raises(ValueError, match=r"\$CE_RERANK_PRECISION must be one of .*'rule'.*got 'fastest'"):
        CrossEncoderReranker(model, max_length=32)
    assert measurements == [] and records(model.parent) == []


def test_a_path_that_fails_the_probe_is_never_chosen(model, monkeypatch, caplog):
    # Every path but fp32 "times" twice as fast; only the probe stands between them and the choice.
    monkeypatch.setattr(
        auto, "_time_once", lambda engine, pairs, batch: (1.0 if engine.precision == "fp32" else 0.5) + batch / 1000
    )
    monkeypatch.setattr(auto, "available_paths", lambda device: ["fp32", "onnx"])
    passing = auto.choose_precision(key_for(model), build_engine)
    assert passing.precision == "onnx"
    for record in records(model.parent):
        record.unlink()
    failing_probe = functools.partial(build_engine, min_probe_spearman=1.01)  # no path can agree that well
    with caplog.at_level("INFO", logger="ce_rerank_plugins.core._engine"):
        refused = auto.choose_precision(key_for(model), failing_probe)
    assert refused.precision == "fp32"
    [record] = records(model.parent)
    assert "changed probe rankings" in json.loads(record.read_text())["refused"]["onnx"]
    # Nobody asked for onnx: its refusal is recorded and logged at INFO, not warned about.
    tried = [r for r in caplog.records if "changed probe rankings" in r.getMessage()]
    assert tried and {r.levelname for r in tried} == {"INFO"}
    caplog.clear()
    with caplog.at_level("INFO", logger="ce_rerank_plugins.core._engine"):
        asked = failing_probe(dataclasses.replace(key_for(model), precision="onnx"))
    assert asked.precision == "fp32" and "changed probe rankings" in str(asked.fallback_reason)
    assert [r.levelname for r in caplog.records if "changed probe rankings" in r.getMessage()] == ["WARNING"]
