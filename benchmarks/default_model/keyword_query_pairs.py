"""Stage-2 pairs: short web-search-style pseudo-queries over a corpus, labelled by the bi-encoder teacher,
plus a replay sample of the stage-1 pairs so the first stage is not forgotten.

Stage 1 (``distill_pairs.py``) has only statement-like queries (claims, sentences). Web search queries are
short keyword phrases ("definition of X", "X meaning", "what is X"). Here a definitional first sentence
("X is ...", "X are ...", "X refers to ...") yields one such pseudo-query about X, drawn from a few
templates; its source passage is a positive (1.0) and the bi-encoder's other top candidates get the
teacher's soft label ``sigmoid((cos - mean_cos) / tau)`` over the full range, since a web corpus often
holds several relevant passages. Only corpus text is read: no test query, no judgement.
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

import numpy as np
from distill_pairs import soft_labels

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import index_corpus
from ce_rerank_plugins.training.pairs import LabeledPair, read_pairs, write_pairs

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True, help="BEIR dataset dir (only corpus.jsonl is read)")
    parser.add_argument("--replay", type=Path, required=True, help="stage-1 pairs to sample from")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=900)
    parser.add_argument("--depth", type=int, default=12)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--replay-pairs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    dataset = load_beir(args.corpus, "test")  # corpus only
    index = index_corpus(dataset.corpus)
    queries = pseudo_queries(dataset.corpus, args.queries, rng)
    qids = list(queries)
    rows = index.search_many([queries[q][0] for q in qids], k=args.depth)
    pairs: list[LabeledPair] = []
    for qid, hits in zip(qids, rows, strict=True):
        query, source = queries[qid]
        pairs.append(LabeledPair(query, dataset.doc_text(source), 1.0))
        others = [h for h in hits if h.id != source]
        soft = soft_labels(np.array([h.score for h in others], dtype=np.float64), args.tau, cap=1.0)
        pairs.extend(LabeledPair(query, h.text, round(float(s), 4)) for h, s in zip(others, soft, strict=True))
    n_new = len(pairs)
    replay = read_pairs(args.replay)
    pairs += rng.sample(replay, min(args.replay_pairs, len(replay)))
    rng.shuffle(pairs)
    write_pairs(pairs, args.out)
    examples = "; ".join(queries[q][0] for q in qids[:5])
    print(
        f"{len(pairs)} pairs: {n_new} from {len(qids)} pseudo-queries (e.g. {examples}), {len(pairs) - n_new} replayed"
    )


if __name__ == "__main__":
    main()
