"""Web-search-style pseudo-queries cut from corpus text (for ``bench_hybrid_default.py``).

A definitional first sentence ("X is ...", "X are ...", "X refers to ...") yields one short keyword query
about X, drawn from a few templates; its source passage is the one known answer. Only corpus text is read.
"""

from __future__ import annotations

import random
import re

DEFINITION = re.compile(r"^(?:the |an |a )?([a-z0-9][a-z0-9 '()-]{2,50}?)\s+(is|are|was|were|refers to|means)\s", re.I)
VAGUE = {"this", "that", "these", "those", "it", "there", "what", "which", "following", "here", "they", "he", "she"}
TEMPLATES = ("what {verb} {x}", "definition of {x}", "{x} meaning", "{x}", "{x} definition")


def pseudo_queries(corpus: dict[str, dict[str, str]], n: int, rng: random.Random) -> dict[str, tuple[str, str]]:
    """``{query id: (query, source doc id)}`` for up to ``n`` definitional passages."""
    out: dict[str, tuple[str, str]] = {}
    ids = list(corpus)
    rng.shuffle(ids)
    for doc_id in ids:
        match = DEFINITION.match(corpus[doc_id].get("text", ""))
        words = match.group(1).lower().split() if match else []
        if not words or len(words) > 6 or words[0] in VAGUE or max(len(w) for w in words) < 4:
            continue
        verb = match.group(2).lower()
        verb = "is" if verb in {"refers to", "means"} else verb
        query = rng.choice(TEMPLATES).format(verb=verb, x=match.group(1).lower().strip())
        out[f"kw:{doc_id}"] = (query, doc_id)
        if len(out) >= n:
            break
    return out
