"""Sentence-level groups taught by the bi-encoder, for the recipe v10 probe (no answer spans).

    python benchmarks/default_model/cpu_run_v10/answer_sentences.py runs/v10/data runs/v10s/data 1000 1000 [SEED]

The demo's chunks are single sentences, and its distractors repeat the question's words; every
labelled set here pairs a question with a whole paragraph. This splits each training question's
answering paragraph (SQuAD, BoolQ, WikiQA) into sentences and lets the bi-encoder, which puts the
demo's Lyon answer first, say which sentence answers: its best-scoring sentence (for a question
that asks for a number, its best one holding a number) is the positive, when it leads the next by
at least MARGIN; the paragraph's other sentences, which share the question's words, and the best
sentences of the group's mined negative paragraphs (where they score below the positive) are the
negatives, all with the bi-encoder's cosines as the teacher's scores. OUT gets SENTENCE_GROUPS of
these and PARAGRAPH_GROUPS of RUN's groups (both drawn at random), RUN's held-out questions and
manifest, so `ce-rerank train` with RUN's --data reuses OUT as its groups and validates on the
same held-out paragraphs.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ce_rerank_plugins.retrieval import Embedder
from ce_rerank_plugins.training.recipe import read_training_groups, write_derived_groups

NUMERIC_QUESTION = re.compile(
    r"^(how (many|much|long|old|far|tall|large|big|high|often|hot|cold|warm)"
    r"|(in )?(what|which) (year|percentage|percent|temperature|decade|century|population)|when\b)",
    re.IGNORECASE,
)
HAS_NUMBER = re.compile(r"\d")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
SOURCES = ("squad-v1.1-dev", "squad-v2.0-train-first10", "boolq-dev", "wikiqa")
MARGIN = 0.03
SAME_PARAGRAPH = 3
OTHER_PARAGRAPHS = 2


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(text) if len(s.split()) >= 4]


def main() -> None:
    run, out, wanted, paragraphs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    groups, texts = read_training_groups(run)
    embedder = Embedder()
    made: list[dict[str, Any]] = []
    new_texts: dict[str, str] = {}
    rng = random.Random(seed)
    candidates = [g for g in groups if g["set"] in SOURCES and not any("~" in d for d in g["docs"])]
    rng.shuffle(candidates)  # questions in random order until enough groups are made
    for start in range(0, len(candidates), 256):
        if len(made) >= wanted:
            break
        batch = candidates[start : start + 256]
        split = [[sentences(texts[d]) for d in g["docs"][: 1 + OTHER_PARAGRAPHS]] for g in batch]
        flat = [s for parts in split for paragraph in parts for s in paragraph]
        vectors = embedder.encode(flat, show_progress=False) if flat else np.zeros((0, 1))
        questions = embedder.encode([g["query"] for g in batch], show_progress=False)
        at = 0
        for group, parts, q in zip(batch, split, questions, strict=True):
            scored = []
            for paragraph in parts:
                sims = vectors[at : at + len(paragraph)] @ q
                at += len(paragraph)
                scored.append([(float(s), i, paragraph[i]) for i, s in enumerate(sims)])
            gold = sorted(scored[0], reverse=True)
            if len(gold) < 3:
                continue
            eligible = gold
            if NUMERIC_QUESTION.search(group["query"].strip()):
                eligible = [x for x in gold if HAS_NUMBER.search(x[2])]
            if not eligible:
                continue
            best = eligible[0]
            rivals = [x for x in gold if x is not best]
            if best[0] - max(x[0] for x in rivals) < MARGIN and best is gold[0]:
                continue
            if best is not gold[0] and gold[0][0] - best[0] > 0.1:
                continue  # a numeric sentence far below the best one: too unsure
            # A mined paragraph's sentence the bi-encoder prefers to the positive may answer too: left out.
            others = [(max(par), p) for p, par in enumerate(scored) if p > 0 and par and max(par)[0] < best[0]]
            members = [(best, 0), *((x, 0) for x in rivals[:SAME_PARAGRAPH]), *others]
            keys, teacher = [], []
            for (score, i, text), p in members:
                key = f"{group['docs'][p]}#s{i}"
                new_texts[key] = text
                keys.append(key)
                teacher.append(round(score, 6))
            made.append({"set": group["set"], "query": group["query"], "docs": keys, "teacher": teacher})
        print(f"{start + len(batch)}/{len(candidates)} questions, {len(made)} sentence groups", flush=True)
    chosen = made[:wanted]
    mixed = chosen + rng.sample(groups, paragraphs)
    rng.shuffle(mixed)
    how = f"cpu_run_v10/answer_sentences.py: {len(chosen)} sentence + {paragraphs} paragraph groups, seed {seed}"
    write_derived_groups(run, out, mixed, {**texts, **new_texts}, derivation=how)
    per_set: dict[str, int] = {}
    for g in chosen:
        per_set[g["set"]] = per_set.get(g["set"], 0) + 1
    asked = min(start + 256, len(candidates))
    print(f"{len(made)} sentence groups from {asked} questions; {len(chosen)} kept {per_set}")
    print(f"wrote {len(mixed)} groups to {out}")
    for g in rng.sample(chosen, 5):
        print(json.dumps({"query": g["query"], "positive": new_texts[g["docs"][0]], "teacher": g["teacher"]}))


if __name__ == "__main__":
    main()
