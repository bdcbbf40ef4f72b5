"""The shipped model's card states exactly the figures of the committed records, and they meet the ship rule."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from ce_rerank_plugins.core import bundled_model_dir

RECORDS = Path(__file__).resolve().parents[1] / "benchmarks" / "default_model"
RUN = RECORDS / "cpu_run_v1415soup"
PREVIOUS = RECORDS / "gpu_run_v3"
DEPTH = 50


@pytest.fixture(scope="module")
def model_dir() -> Path:
    path = bundled_model_dir()
    assert path is not None, "this release bundles a model"
    return path


def ndcg(run: Path, dataset: str) -> dict[str, float]:
    stages = json.loads((run / f"{dataset}_eval.json").read_text())["stages"]
    return {s["name"]: s["metrics"]["ndcg@10"] for s in stages}


def card_rows(card: str, dataset: str) -> dict[str, list[float]]:
    section = card[card.index(f"### {dataset} (") :]
    section = section[: section.index("\n\n", section.index("|---"))]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and re.match(r"^\d", cells[1]):
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
        assert rows[stage["name"]] == pytest.approx(expected, abs=5.1e-5), stage["name"]  # 4 decimals


def test_the_shipped_model_meets_the_ship_rule_in_the_committed_records(model_dir):
    """At the default depth, with the recommended fusion: every clause of the rule, from the records."""
    fusion = json.loads((model_dir / "ce_rerank.json").read_text())
    pipeline = f"rerank@{DEPTH}+{fusion['fusion']}({fusion['fusion_weight']:g})"
    alone = f"rerank@{DEPTH}"
    card = (model_dir / "README.md").read_text()
    wins = 0
    for dataset in ("scifact", "msmarco"):
        ours, before = ndcg(RUN, dataset), ndcg(PREVIOUS, dataset)
        previous_pipeline = next(n for n in before if n.startswith(f"{alone}+"))
        assert ours[pipeline] > ours["retrieval"], dataset
        assert ours[pipeline] >= before[previous_pipeline], dataset
        wins += ours[pipeline] > before[previous_pipeline]
        gain = ours[pipeline] - ours["retrieval"]
        assert f"{dataset} {ours['retrieval']:.4f} -> {ours[pipeline]:.4f} (+{gain:.4f})" in card
    assert wins >= 1
    assert ndcg(RUN, "scifact")[alone] > ndcg(RUN, "scifact")["retrieval"]
    assert ndcg(RUN, "msmarco")[alone] > ndcg(PREVIOUS, "msmarco")[alone]
    demo = (RUN / "demo.txt").read_text()
    assert "(worse)" not in demo and re.search(r"\(coffee-01\): bi-encoder #(\d+) -> reranked #1 \(better\)", demo)
    assert "the package's offline default" in next(line for line in card.splitlines() if line.startswith("# "))


def test_the_recommended_fusion_is_the_one_chosen_on_held_out_questions(model_dir):
    recommended = json.loads((model_dir / "ce_rerank.json").read_text())
    soup = json.loads((RUN / "soup_run.json").read_text())
    assert [recommended["fusion"], recommended["fusion_weight"]] == soup["fusion"]
    card = (model_dir / "README.md").read_text()
    assert f"`{recommended['fusion']}` fusion" in card and f"weight at {recommended['fusion_weight']}" in card


def test_the_card_names_every_source_and_its_licence(model_dir):
    card = (model_dir / "README.md").read_text()
    # The Hub reads a card's licence from its front matter: the weights are not under the code's licence.
    front = card.split("---\n")[1]
    assert card.startswith("---\n") and "license: other\nlicense_name: research-only" in front
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in front
    for source, licence in (
        ("SQuAD", "CC BY-SA 4.0"),
        ("BoolQ", "CC BY-SA 3.0"),
        ("WikiQA", "Microsoft Research data licence"),
        ("SciFact", "CC BY-NC 2.0"),
        ("MS MARCO", "non-commercial research"),
        ("all-MiniLM-L6-v2", "Apache-2.0"),
    ):
        line = next(line for line in card.splitlines() if line.startswith(f"- {source}"))
        assert licence in line, source
    assert "A commercial user" in card


def test_the_shipped_weights_are_the_recorded_soup_of_two_recorded_runs(model_dir):
    """The record names the two runs averaged, the share kept, and its held-out figure, which the card states."""
    soup = json.loads((RUN / "soup_run.json").read_text())
    kept = next(t for t in soup["tried"] if t["weight"] == soup["weight"])
    assert 0 < soup["weight"] < 1
    assert kept["selection"] == max(t["selection"] for t in soup["tried"])
    for name in ("cpu_run_v14", "cpu_run_v15"):
        record = json.loads((RECORDS / name / "training_run.json").read_text())
        assert record["config"]["base_model"].endswith("ce-minilm-l6-offline"), "both fine-tuned from v3"
    card = (model_dir / "README.md").read_text()
    assert f"{1 - soup['weight']:g} x v14 + {soup['weight']:g} x v15" in card
    assert f"**{kept['selection']:.4f}**" in card


def test_the_shipped_weights_are_the_evaluated_ones(model_dir):
    """The figures above were measured on exactly these bytes (hash recorded when the eval ran)."""
    recorded = (RUN / "evaluated_weights.sha256").read_text().split()[0]
    assert hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest() == recorded


def _summary_cells(text: str) -> dict[str, list[list[float]]]:
    """The README's / docs' summary table: row label (bold marks removed) -> per set, its figures by depth."""
    rows = {}
    for line in text[text.index("| nDCG@10 (test sets") :].splitlines()[2:]:
        if not line.strip().startswith("|"):
            break
        label, *cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[label.replace("*", "")] = [[float(x.strip(" *")) for x in cell.split("/")] for cell in cells]
    return rows


def _by_depth(run: Path, suffix: str) -> list[list[float]]:
    return [[ndcg(run, s)[f"rerank@{d}{suffix}"] for d in (20, 50, 100)] for s in ("scifact", "msmarco")]


@pytest.mark.parametrize("doc", ["README.md", "docs/training.md"])
def test_the_summary_tables_state_the_records_at_every_depth(model_dir, doc):
    """Dense, the cross-encoder alone and the default pipeline at 20/50/100, beside the previous default's."""
    rows = _summary_cells((RECORDS.parents[1] / doc).read_text())
    fusion = json.loads((model_dir / "ce_rerank.json").read_text())
    previous_fusion = next(n for n in ndcg(PREVIOUS, "scifact") if n.startswith("rerank@50+"))[len("rerank@50") :]
    expected = {
        "first stage: all-MiniLM-L6-v2, exact FAISS": [[ndcg(RUN, s)["retrieval"]] for s in ("scifact", "msmarco")],
        "+ rerank top 20 / 50 / 100, fused (the default), this model": _by_depth(
            RUN, f"+{fusion['fusion']}({fusion['fusion_weight']:g})"
        ),
        "+ rerank top 20 / 50 / 100, cross-encoder alone, this model": _by_depth(RUN, ""),
        "+ rerank top 20 / 50 / 100, fused, recipe v3 (before)": _by_depth(PREVIOUS, previous_fusion),
        "+ rerank top 20 / 50 / 100, cross-encoder alone, recipe v3 (before)": _by_depth(PREVIOUS, ""),
    }
    assert set(rows) == set(expected), doc
    for label, figures in expected.items():
        assert rows[label] == [pytest.approx(f, abs=5.1e-5) for f in figures], (doc, label)


def test_the_cards_recipe_commands_use_the_recorded_settings(model_dir):
    """The commands the card gives to remake the model name the options its two runs recorded."""
    card = (model_dir / "README.md").read_text()
    block = card[card.index("\nSETS=") : card.index("```", card.index("\nSETS="))]
    build = dict(re.findall(r"--([a-z-]+) ([^\s\"\\]+)", block[block.index("BUILD=") : block.index("TRAIN=")]))
    train = dict(re.findall(r"--([a-z-]+) ([^\s\"\\]+)", block[block.index("TRAIN=") : block.index("ce-rerank train")]))
    settings = json.loads((RECORDS / "cpu_run_v14" / "data.json").read_text())["settings"]
    for option in ("mining", "negatives", "same-title", "depth", "max-holdout"):
        assert build[option] == str(settings[option.replace("-", "_")]), option
    for run, steps in (("v14", 500), ("v15", 1000)):
        config = json.loads((RECORDS / f"cpu_run_{run}" / "training_run.json").read_text())["config"]
        assert f"--base v3 --out {run} --max-steps {config['max_steps']} " in block and config["max_steps"] == steps
        assert float(train["lr"]) == config["learning_rate"]
        for option in ("misleading-share", "distill-weight", "eval-steps", "groups-per-step", "max-length"):
            assert float(train[option]) == config[option.replace("-", "_")], (run, option)
