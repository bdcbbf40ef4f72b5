"""The candidate model's card states exactly the figures of the committed evaluation records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model" / "gpu_run_v2"


def card_rows(dataset: str) -> dict[str, list[float]]:
    text = (RUN / "model" / "README.md").read_text()
    section = text[text.index(f"### {dataset} (") :]
    section = section[: section.index("\n\n", section.index("|---"))]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and re.match(r"^\d", cells[1]):
            rows[cells[0]] = [float(c) for c in cells[1:]]
    return rows


@pytest.mark.parametrize("dataset", ["scifact", "msmarco"])
def test_card_figures_equal_the_committed_eval_json(dataset):
    evaluation = json.loads((RUN / f"{dataset}_eval.json").read_text())
    rows = card_rows(dataset)
    assert list(rows) == [s["name"] for s in evaluation["stages"]]
    for stage in evaluation["stages"]:
        m = stage["metrics"]
        expected = [m["ndcg@10"], m["mrr@10"], m["recall@100"]]
        assert rows[stage["name"]][:3] == pytest.approx(expected, abs=5.1e-5), stage["name"]  # 4 decimals
        assert rows[stage["name"]][3] == pytest.approx(stage["latency_ms_median"], abs=0.051)  # 1 decimal


def test_card_states_the_recommended_fusion_of_the_model_directory():
    recommended = json.loads((RUN / "model" / "ce_rerank.json").read_text())
    tuned = json.loads((RUN / "fusion_tuning.json").read_text())["chosen"]
    assert recommended == tuned
    card = (RUN / "model" / "README.md").read_text()
    assert f"`{tuned['fusion']}` fusion" in card and f"weight at {tuned['fusion_weight']}" in card
