"""Print a candidate's figure tables from its evaluation records, for the model card and the docs.

    python benchmarks/default_model/card_tables.py RUN_FOLDER [--baseline gpu_run_v3] [--without-ms]

Reads RUN/scifact_eval.json and RUN/msmarco_eval.json (written by ``ce-rerank eval``) and the baseline's,
and prints (1) the card's per-set tables (every stage: nDCG@10, MRR@10, R@100, median ms), the format
``tests/test_model_card.py`` checks against the same files, and (2) the docs' summary rows at depths
20/50/100, the candidate beside the baseline. Nothing is typed by hand, so a table cannot drift from its
record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ship_rule import fused_stage, stages  # the same reading of a record as the ship rule's

HERE = Path(__file__).resolve().parent
SETS = (("scifact", "SciFact"), ("msmarco", "MS MARCO subset"))
DEPTHS = (20, 50, 100)


def card_table(run: Path, dataset: str, *, with_ms: bool = True) -> str:
    """One set's card table; ``with_ms=False`` leaves out the latency column (for untimed records)."""
    record = json.loads((run / f"{dataset}_eval.json").read_text(encoding="utf-8"))
    lines = [
        f"### {dataset} ({record['queries']} queries)",
        "",
        "| stage | nDCG@10 | MRR@10 | R@100 |" + (" ms |" if with_ms else ""),
        "|---|---:|---:|---:|" + ("---:|" if with_ms else ""),
    ]
    for stage in record["stages"]:
        m = stage["metrics"]
        row = f"| {stage['name']} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | {m['recall@100']:.4f} |"
        if with_ms:
            ms = stage["latency_ms_median"]
            row += f" {'-' if ms is None else format(ms, '.1f')} |"
        lines.append(row)
    return "\n".join(lines)


def _row(ndcg: dict[str, float], fused: bool) -> str:
    cells = []
    for depth in DEPTHS:
        name = fused_stage(ndcg, depth) if fused else f"rerank@{depth}"
        value = f"{ndcg[name]:.4f}"
        cells.append(f"**{value}**" if depth == 50 else value)
    return " / ".join(cells)


def summary_rows(run: Path, baseline: Path, label: str, baseline_label: str) -> str:
    rows: dict[str, list[str]] = {
        "first stage: all-MiniLM-L6-v2, exact FAISS": [],
        f"+ rerank top 20 / **50** / 100, fused (the default), {label}": [],
        f"+ rerank top 20 / 50 / 100, cross-encoder alone, {label}": [],
        f"+ rerank top 20 / 50 / 100, fused, {baseline_label}": [],
        f"+ rerank top 20 / 50 / 100, cross-encoder alone, {baseline_label}": [],
    }
    for dataset, _ in SETS:
        ours, theirs = stages(run, dataset), stages(baseline, dataset)
        cells = [
            f"{ours['retrieval']:.4f}",
            _row(ours, fused=True),
            _row(ours, fused=False),
            _row(theirs, fused=True),
            _row(theirs, fused=False),
        ]
        for key, cell in zip(rows, cells, strict=True):
            rows[key].append(cell)
    header = "| nDCG@10 (test sets, never used for training or selection) | " + " | ".join(n for _, n in SETS) + " |"
    lines = [header, "|---|" + "---:|" * len(SETS)]
    lines += [f"| {key} | " + " | ".join(cells) + " |" for key, cells in rows.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="The candidate's records folder.")
    parser.add_argument(
        "--baseline", default="gpu_run_v3", help="Baseline records folder under benchmarks/default_model."
    )
    parser.add_argument("--label", default="this model")
    parser.add_argument("--baseline-label", default="recipe v3")
    parser.add_argument("--without-ms", action="store_true", help="Leave out latency (records made untimed).")
    args = parser.parse_args()
    for dataset, _ in SETS:
        print(card_table(args.run, dataset, with_ms=not args.without_ms))
        print()
    print(summary_rows(args.run, HERE / args.baseline, args.label, args.baseline_label))


if __name__ == "__main__":
    main()
