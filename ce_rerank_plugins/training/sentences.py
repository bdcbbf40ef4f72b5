"""Sentence groups: which sentence of an answering paragraph answers the question.

Labelled sets judge whole paragraphs, but a chunked corpus hands the reranker sentences and short
passages, and the sentences of one paragraph share its words: telling the one that answers from its
neighbours is the reranker's job in miniature. No set labels sentences, so the bi-encoder says which
one answers (its best-scoring sentence; for a question that asks for a number, its best one holding a
number) and only where it is sure; its cosines are the distillation teacher's scores.

A question repeated in front of a passage is the plainest case where sharing every word of it says
nothing: :func:`add_repeated_questions` gives each sentence group such a member, and in every second
group writes the answer the same way, so what follows the question decides, not the repetition.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

NUMERIC_QUESTION = re.compile(
    r"^(how (many|much|long|old|far|tall|large|big|high|often|hot|cold|warm)"
    r"|(in )?(what|which) (year|percentage|percent|temperature|decade|century|population)|when\b)",
    re.IGNORECASE,
)
_HAS_NUMBER = re.compile(r"\d")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
MARGIN = 0.03
"""How far the chosen sentence must lead the paragraph's next best, in cosine, to be trusted."""
SAME_PARAGRAPH = 3
OTHER_PARAGRAPHS = 2
_BATCH = 256
SENTENCE_MARK = "#s"
REPEATED_MARK = "~echo"


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` of at least four words (shorter ones are headings and fragments)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]


def _choose(question: str, ranked: list[tuple[float, int, str]]) -> tuple[float, int, str] | None:
    """The answering sentence of the positive paragraph (``ranked`` best first), or None where unsure."""
    if len(ranked) < 3:
        return None
    eligible = ranked
    if NUMERIC_QUESTION.search(question.strip()):
        eligible = [x for x in ranked if _HAS_NUMBER.search(x[2])]
    if not eligible:
        return None
    best = eligible[0]
    if best is ranked[0] and best[0] - ranked[1][0] < MARGIN:
        return None
    if best is not ranked[0] and ranked[0][0] - best[0] > 0.1:
        return None  # a numeric sentence far below the best one: too unsure
    return best


def sentence_groups(
    groups: Sequence[dict[str, Any]],
    texts: dict[str, str],
    count: int,
    *,
    embed: Callable[[list[str]], Any],
    rng: random.Random,
    sets: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Up to ``count`` sentence groups made from paragraph ``groups`` (of ``sets``; all when empty).

    A group's positive is the chosen sentence of its answering paragraph; its negatives are up to
    ``SAME_PARAGRAPH`` other sentences of that paragraph and the best sentence of each of its first
    ``OTHER_PARAGRAPHS`` negatives that the bi-encoder scores below the positive (one it prefers may
    answer too). Members are keyed ``<paragraph key>#s<n>``. Questions are taken in ``rng``'s order
    until ``count`` groups are made. Returns the groups and the texts of their members; ``groups`` and
    ``texts`` are not changed.
    """
    wanted = set(sets)
    candidates = [g for g in groups if (not wanted or g["set"] in wanted) and not any("~" in d for d in g["docs"])]
    rng.shuffle(candidates)
    made: list[dict[str, Any]] = []
    new_texts: dict[str, str] = {}
    for start in range(0, len(candidates), _BATCH):
        if len(made) >= count:
            break
        batch = candidates[start : start + _BATCH]
        split = [[split_sentences(texts[d]) for d in g["docs"][: 1 + OTHER_PARAGRAPHS]] for g in batch]
        flat = [s for parts in split for paragraph in parts for s in paragraph]
        vectors = np.asarray(embed(flat), dtype=np.float32) if flat else np.zeros((0, 1), dtype=np.float32)
        questions = np.asarray(embed([g["query"] for g in batch]), dtype=np.float32)
        at = 0
        for group, parts, q in zip(batch, split, questions, strict=True):
            scored = []
            for paragraph in parts:
                sims = vectors[at : at + len(paragraph)] @ q
                at += len(paragraph)
                scored.append([(float(s), i, paragraph[i]) for i, s in enumerate(sims)])
            ranked = sorted(scored[0], reverse=True)
            best = _choose(group["query"], ranked)
            if best is None:
                continue
            rivals = [x for x in ranked if x is not best]
            others = [(max(par), p) for p, par in enumerate(scored) if p > 0 and par and max(par)[0] < best[0]]
            members = [(best, 0), *((x, 0) for x in rivals[:SAME_PARAGRAPH]), *others]
            keys, teacher = [], []
            for (score, i, text), p in members:
                key = f"{group['docs'][p]}{SENTENCE_MARK}{i}"
                new_texts[key] = text
                keys.append(key)
                teacher.append(round(score, 6))
            made.append({"set": group["set"], "query": group["query"], "docs": keys, "teacher": teacher})
    return made[:count], new_texts


def add_repeated_questions(
    groups: Sequence[dict[str, Any]], texts: dict[str, str], rng: random.Random
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Sentence ``groups`` with one more member: the question followed by one of the group's negatives.

    The new members are keyed ``<sentence key>~echo<n>``, ``n`` counting the groups from 1.
    In every second group the positive is written the same way (question, then answer). The added
    member comes last, after the members the teacher scored, so the teacher's scores still line up.
    Returns new groups and the texts of the new members; the arguments are not changed.
    """
    out: list[dict[str, Any]] = []
    new_texts: dict[str, str] = {}
    for n, group in enumerate(groups, 1):
        question = group["query"].strip()
        docs = list(group["docs"])
        negative = rng.choice(docs[1:])
        # Keyed by group too: one sentence is a member of the groups of several questions (a paragraph
        # answers more than one), and each group's copy starts with its own question.
        key = f"{negative}{REPEATED_MARK}{n}"
        new_texts[key] = f"{question} {texts[negative]}"
        docs.append(key)
        if n % 2 == 0:
            positive = f"{docs[0]}{REPEATED_MARK}{n}"
            new_texts[positive] = f"{question} {texts[docs[0]]}"
            docs[0] = positive
        out.append({**group, "docs": docs})
    return out, new_texts
