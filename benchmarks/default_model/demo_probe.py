"""Score the demo's answering passages against its distractors, cross-encoder alone, for any models.

    python benchmarks/default_model/demo_probe.py ce_rerank_plugins/models/ce-minilm-l6-offline runs/v8/model \
        --out benchmarks/default_model/cpu_run_v8/demo_probe.json

`ce-rerank demo` shows whether reranking moved each answer up; this shows why not. For the demo's two
failing questions and two rewordings of the first (which take the question's words away from the
distractors), it prints the cross-encoder's score of the answer and of the passages that repeat the
question without answering it. A model that only counts shared words ranks the answer first once the
wording changes; a model that does not know that "how many" asks for a number does not.
"""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path

from sentence_transformers import CrossEncoder

#: question -> (answer id, distractor ids): the demo's passages from the bundled sample corpus.
PROBES: dict[str, tuple[str, tuple[str, ...]]] = {
    "How many people live in Lyon?": ("lyon-00", ("lyon-10", "lyon-11", "lyon-12")),
    "How many residents does Lyon have?": ("lyon-00", ("lyon-10", "lyon-11", "lyon-12")),
    "What is the population of Lyon?": ("lyon-00", ("lyon-10", "lyon-11", "lyon-12")),
    "What water temperature should I use to brew coffee?": ("coffee-01", ("coffee-12", "coffee-11", "coffee-03")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="Cross-encoder folders or names.")
    parser.add_argument("--out", type=Path, help="Where to write the JSON.")
    args = parser.parse_args()
    lines = (files("ce_rerank_plugins") / "data" / "sample_corpus.jsonl").read_text(encoding="utf-8").splitlines()
    texts = {row["id"]: row["text"] for row in map(json.loads, filter(None, lines))}
    record: dict[str, dict[str, dict[str, float]]] = {}
    for name in args.models:
        model = CrossEncoder(name, device="cpu", local_files_only=True)
        print(name)
        record[name] = {}
        for question, (answer, distractors) in PROBES.items():
            ids = [answer, *distractors]
            scores = [float(s) for s in model.predict([(question, texts[i]) for i in ids], show_progress_bar=False)]
            record[name][question] = dict(zip(ids, scores, strict=True))
            rank = 1 + sum(s > scores[0] for s in scores[1:])
            shown = "  ".join(f"{i} {s:.3f}" for i, s in zip(ids, scores, strict=True))
            print(f"  answer #{rank} of {len(ids)}  {question[:52]:52}  {shown}")
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print("wrote", args.out)


if __name__ == "__main__":
    main()
