"""Check a candidate default model against the ship rule, from its committed records only.

    python benchmarks/default_model/ship_rule.py benchmarks/default_model/cpu_run_v14 [--baseline gpu_run_v3]

Reads ``msmarco_eval.json`` and ``scifact_eval.json`` (from ``ce-rerank eval``) and ``demo.txt`` (from
``ce-rerank demo``) in the candidate's folder and the baseline's, prints one line per rule at the
default depth, and writes ``ship_rule.json`` beside the records. Nothing here chooses a model: the
held-out training questions do that; this only says whether the chosen one may ship.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASETS = ("scifact", "msmarco")


def stages(run: Path, dataset: str) -> dict[str, float]:
    """nDCG@10 of each stage of ``run``'s evaluation of ``dataset``."""
    path = run / f"{dataset}_eval.json"
    if not path.is_file():
        msg = f"{path} is missing: run `ce-rerank eval ../shared/data/{dataset} -m MODEL --out-dir ...` first"
        raise SystemExit(msg)
    return {s["name"]: s["metrics"]["ndcg@10"] for s in json.loads(path.read_text())["stages"]}


def fused_stage(names: dict[str, float], depth: int) -> str:
    """The one fused row at ``depth`` (its fusion is the model's recommended one, chosen on held-out questions)."""
    fused = [n for n in names if n.startswith(f"rerank@{depth}+")]
    if len(fused) != 1:
        msg = f"expected one fused row at depth {depth}, found {fused}"
        raise SystemExit(msg)
    return fused[0]


def demo_moves(run: Path) -> dict[str, str]:
    """Each demo question's verdict ("better", "unchanged", "worse") from ``demo.txt``."""
    text = (run / "demo.txt").read_text()
    questions = re.findall(r"^Q: (.+?)\s*$", text, flags=re.MULTILINE)
    verdicts = re.findall(r"^The answering passage .*\((better|unchanged|worse)\)\s*$", text, flags=re.MULTILINE)
    if len(questions) != len(verdicts) or not questions:
        msg = f"{run / 'demo.txt'}: {len(questions)} questions but {len(verdicts)} verdicts"
        raise SystemExit(msg)
    return dict(zip(questions, verdicts, strict=True))


def check(candidate: Path, baseline: Path, depth: int) -> dict[str, Any]:
    cand = {d: stages(candidate, d) for d in DATASETS}
    base = {d: stages(baseline, d) for d in DATASETS}
    alone = f"rerank@{depth}"
    pipe = {d: cand[d][fused_stage(cand[d], depth)] for d in DATASETS}
    base_pipe = {d: base[d][fused_stage(base[d], depth)] for d in DATASETS}
    wins = [d for d in DATASETS if pipe[d] > base_pipe[d]]
    losses = [d for d in DATASETS if pipe[d] < base_pipe[d]]
    moves = demo_moves(candidate)
    coffee = [v for q, v in moves.items() if "brew coffee" in q]  # the question v3 gets wrong
    rules = [
        *(
            (
                f"pipeline beats dense on {d}",
                pipe[d] > cand[d]["retrieval"],
                f"{pipe[d]:.4f} vs {cand[d]['retrieval']:.4f}",
            )
            for d in DATASETS
        ),
        (
            "pipeline beats the baseline's on one set, loses on none",
            bool(wins) and not losses,
            ", ".join(f"{d} {pipe[d]:.4f} vs {base_pipe[d]:.4f}" for d in DATASETS),
        ),
        (
            "cross-encoder alone beats dense on scifact",
            cand["scifact"][alone] > cand["scifact"]["retrieval"],
            f"{cand['scifact'][alone]:.4f} vs {cand['scifact']['retrieval']:.4f}",
        ),
        (
            "cross-encoder alone beats the baseline alone on msmarco",
            cand["msmarco"][alone] > base["msmarco"][alone],
            f"{cand['msmarco'][alone]:.4f} vs {base['msmarco'][alone]:.4f}",
        ),
        ("demo: no question worse", "worse" not in moves.values(), ", ".join(moves.values())),
        ("demo: the coffee question better", coffee == ["better"], ", ".join(coffee) or "no brew-coffee question"),
    ]
    return {
        "candidate": _repository_path(candidate),
        "baseline": _repository_path(baseline),
        "depth": depth,
        "rules": [{"rule": r, "passed": bool(ok), "figures": f} for r, ok, f in rules],
        "ships": all(ok for _, ok, _ in rules),
    }


def _repository_path(folder: Path) -> str:
    """A records folder as the repository names it, so a record holds no machine's absolute path."""
    try:
        return folder.resolve().relative_to(HERE.parents[1]).as_posix()
    except ValueError:
        return str(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", type=Path, help="Folder with the candidate's eval JSONs and demo.txt.")
    parser.add_argument("--baseline", type=Path, default=HERE / "gpu_run_v3", help="The shipped model's records.")
    parser.add_argument("--depth", type=int, default=50, help="The default rerank depth.")
    args = parser.parse_args()
    result = check(args.candidate, args.baseline, args.depth)
    width = max(len(r["rule"]) for r in result["rules"])
    for r in result["rules"]:
        print(f"{'pass' if r['passed'] else 'FAIL'}  {r['rule']:<{width}}  {r['figures']}")
    print(f"ships: {'yes' if result['ships'] else 'no'} (depth {result['depth']}, baseline {args.baseline.name})")
    (args.candidate / "ship_rule.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
