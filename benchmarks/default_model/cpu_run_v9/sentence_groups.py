"""Answer-type sentence groups from question -> paragraph labels, for the recipe v9 probe (no answer spans).

    python benchmarks/default_model/cpu_run_v9/sentence_groups.py runs/v8/data runs/v9/data 557

For a SQuAD question that asks for a number (how many / how much / what year / when ...), the
answering paragraph's sentences that hold no number cannot be the answer. Where exactly one sentence
of the paragraph holds a number, it is taken as the answer sentence and up to four of the others as
its negatives (no teacher). OUT gets these groups plus PARAGRAPH_GROUPS random groups of RUN, RUN's
held-out questions and manifest, so `ce-rerank train` with RUN's --data reuses OUT as its groups.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

from ce_rerank_plugins.training.recipe import read_training_groups, write_derived_groups

NUMERIC_QUESTION = re.compile(
    r"^(how (many|much|long|old|far|tall|large|big|high|often)"
    r"|(in )?(what|which) (year|percentage|percent|temperature|decade|century)|when\b)",
    re.IGNORECASE,
)
NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fifteen|twenty|thirty|forty|"
    "fifty|hundred|thousand|million|billion|dozen|first|second|third|half"
)
HAS_NUMBER = re.compile(rf"\d|\b({NUMBER_WORDS})\b", re.IGNORECASE)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
SOURCES = ("squad-v1.1-dev", "squad-v2.0-train-first10")
TRAIN_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "train"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if len(s.split()) >= 4]


def sentence_groups(
    groups: list[dict[str, Any]], paragraphs: dict[str, str], negatives: int = 4
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    made, texts = [], {}
    for group in groups:
        if group["set"] not in SOURCES or not NUMERIC_QUESTION.search(group["query"].strip()):
            continue
        parts = sentences(paragraphs[group["docs"][0]])
        numeric = [i for i, s in enumerate(parts) if HAS_NUMBER.search(s)]
        others = [i for i in range(len(parts)) if i not in numeric]
        if len(numeric) != 1 or len(others) < 2:
            continue
        keys = []
        for i in [numeric[0], *others[:negatives]]:
            key = f"{group['docs'][0]}#s{i}"
            texts[key] = parts[i]
            keys.append(key)
        made.append({"set": group["set"], "query": group["query"], "docs": keys})
    return made, texts


def main() -> None:
    run, out, mix = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    groups, run_texts = read_training_groups(run)
    paragraphs = {}
    for name in SOURCES:
        for line in (TRAIN_DATA / name / "corpus.jsonl").open(encoding="utf-8"):
            row = json.loads(line)
            paragraphs[f"{name}/{row['_id']}"] = row["text"]
    made, texts = sentence_groups(groups, paragraphs)
    rng = random.Random(9)
    rng.sample(made, 5)  # five examples the run's first version printed: keeps v9's draw of paragraph groups
    mixed = made + rng.sample(groups, mix)
    rng.shuffle(mixed)
    how = f"cpu_run_v9/sentence_groups.py: answer-type sentence groups mixed with {mix} paragraph groups"
    write_derived_groups(run, out, mixed, {**run_texts, **texts}, derivation=how)
    print(f"{len(made)} sentence groups of {len(groups)}; wrote {len(mixed)} groups to {out}")


if __name__ == "__main__":
    main()
