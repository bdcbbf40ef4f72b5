"""Sentence groups with a negative that repeats the question, for the recipe v11 probe.

    python benchmarks/default_model/cpu_run_v11/echo_questions.py runs/v11s/data runs/v11/data [SEED]

In every labelled set here the question was written, or chosen, beside its passage, so the
answering passage is also the one that shares the most of the question's words, and a model
trained on them learns that overlap pays. A passage that poses the question and goes on to say
something else is the plainest case where it does not. IN is the output of
``cpu_run_v10/answer_sentences.py``; each of its sentence groups (members keyed ``...#s<n>``)
gains one member: the question followed by one of the group's negative sentences. In every
other such group the positive is written the same way (question, then the answering sentence),
so repeating the question is not itself a sign of a wrong passage; what follows it decides. The
added member comes after the members the bi-encoder scored, so its teacher scores still match
(the recipe distils only the members the teacher scored). Paragraph groups, the held-out
questions and the manifest are copied unchanged.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from ce_rerank_plugins.training.recipe import read_training_groups, write_derived_groups


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 11)
    groups, texts = read_training_groups(source)
    echoed = both = 0
    for group in groups:
        if not all("#s" in key for key in group["docs"]) or len(group["docs"]) < 2:
            continue  # a paragraph group
        question = group["query"].strip()
        negative = rng.choice(group["docs"][1:])
        key = f"{negative}~echo"
        texts[key] = f"{question} {texts[negative]}"
        group["docs"] = [*group["docs"], key]
        echoed += 1
        if echoed % 2 == 0:  # the question repeated before the answer too
            positive = f"{group['docs'][0]}~echo"
            texts[positive] = f"{question} {texts[group['docs'][0]]}"
            group["docs"][0] = positive
            both += 1
    how = "cpu_run_v11/echo_questions.py: a member repeating the question in each sentence group"
    write_derived_groups(source, out, groups, texts, derivation=how)
    print(f"{len(groups)} groups; {echoed} sentence groups gained a negative that repeats the question,")
    print(f"{both} of them with the positive written the same way; wrote {out}")
    for g in rng.sample([g for g in groups if g["docs"][-1].endswith("~echo")], 4):
        print(json.dumps({"query": g["query"], "positive": texts[g["docs"][0]], "echo": texts[g["docs"][-1]]}))


if __name__ == "__main__":
    main()
