"""The shipped model's card states exactly the figures of the committed evaluation records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ce_rerank_plugins.core import bundled_model_dir

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model" / "gpu_run_v3"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = bundled_model_dir()
    assert path is not None, "this release bundles a model"
    return path


def card_rows(card: str, dataset: str) -> dict[str, list[float]]:
    section = card[card.index(f"### {dataset} (") :]
    section = section[: section.index("\n\n", section.index("|---"))]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and re.match(r"^\d", cells[1]):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


@pytest.mark.parametrize("dataset", ["scifact", "msmarco"])
def test_card_figures_equal_the_committed_eval_json(model_dir, dataset):
    evaluation = json.loads((RUN / f"{dataset}_eval.json").read_text())
    rows = card_rows((model_dir / "README.md").read_text(), dataset)
    assert list(rows) == [s["name"] for s in evaluation["stages"]]
    for stage in evaluation["stages"]:
        m = stage["metrics"]
        expected = [m["ndcg@10"], m["mrr@10"], m["recall@100"]]
        assert rows[stage["name"]][:3] == pytest.approx(expected, abs=5.1e-5), stage["name"]  # 4 decimals
        assert rows[stage["name"]][3] == pytest.approx(stage["latency_ms_median"], abs=0.051)  # 1 decimal


def test_the_shipped_model_meets_the_rule_in_the_committed_records(model_dir):
    """The default pipeline (depth 50, the recommended fusion) beats the first stage on both test sets."""
    fusion = json.loads((model_dir / "ce_rerank.json").read_text())
    row = f"rerank@50+{fusion['fusion']}({fusion['fusion_weight']:g})"
    card = (model_dir / "README.md").read_text()
    for dataset in ("scifact", "msmarco"):
        stages = {
            s["name"]: s["metrics"]["ndcg@10"] for s in json.loads((RUN / f"{dataset}_eval.json").read_text())["stages"]
        }
        assert stages[row] > stages["retrieval"], dataset
        assert f"{dataset} {stages['retrieval']:.4f} -> {stages[row]:.4f}" in card
    assert "the package's offline default" in card.splitlines()[0]


def test_card_states_the_recommended_fusion_and_the_training_data_licences(model_dir):
    recommended = json.loads((model_dir / "ce_rerank.json").read_text())
    tuned = json.loads((RUN / "fusion_tuning.json").read_text())["chosen"]
    assert recommended == tuned
    card = (model_dir / "README.md").read_text()
    assert f"`{tuned['fusion']}` fusion" in card and f"weight at {tuned['fusion_weight']}" in card
    for licence in ("CC BY-NC 2.0", "non-commercial research", "Apache-2.0"):
        assert licence in card


def test_the_shipped_weights_are_the_recorded_soup(model_dir):
    """The training record names the runs averaged into the weights that ship, and their scores on validation."""
    record = json.loads((RUN / "training_run.json").read_text())
    assert len(record["soup_of"]) == len(record["ingredients"]) == 3
    assert {r["variants"][0]["name"] for r in record["ingredients"]} == {"a", "b", "c"}
    assert 0.0 < record["validation"]["scifact-val/dense/fused"] <= 1.0


def test_the_shipped_weights_are_the_evaluated_ones(model_dir):
    """The figures above were measured on exactly these bytes (hash recorded when the eval ran)."""
    import hashlib

    recorded = (RUN / "evaluated_weights.sha256").read_text().split()[0]
    assert hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest() == recorded
