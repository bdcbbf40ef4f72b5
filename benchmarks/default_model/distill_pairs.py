"""Training pairs with the bi-encoder as a teacher (pointwise distillation plus known positives).

For every query (SciFact train claims with their qrels positives, and inverse-cloze pseudo-queries drawn
from the SciFact and MS MARCO corpora, whose source passage is the positive) the bi-encoder's top
``--depth`` candidates become pairs. A known positive gets label 1.0. Every other candidate gets a soft
label from the teacher's cosine, centred on the query's own candidates and capped below 0.5:
``0.45 * sigmoid((cos - mean_cos) / tau)``. The student so learns the bi-encoder's ordering of the
candidates it will rerank, and that a known positive outranks all of them.

No test query or test judgement is read: MS MARCO and SciFact contribute corpus passages only
(unsupervised domain adaptation, as in GPL), SciFact contributes its *train* qrels.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.evaluation.rerank_eval import index_corpus
from ce_rerank_plugins.retrieval import FaissIndex
from ce_rerank_plugins.training.pairs import LabeledPair, split_sentences, write_pairs


def soft_labels(cosines: np.ndarray, tau: float, cap: float = 0.45) -> np.ndarray:
    """The teacher's label for unlabelled candidates: ``cap * sigmoid((cos - mean_cos) / tau)``."""
    if cosines.size == 0:
        return cosines
    return cap / (1.0 + np.exp(-(cosines - cosines.mean()) / tau))


def pairs_for(
    index: FaissIndex,
    queries: dict[str, str],
    positives: dict[str, dict[str, str]],
    depth: int,
    tau: float,
) -> list[LabeledPair]:
    """``positives[qid]`` maps a positive doc id to the passage text to pair it with."""
    qids = list(queries)
    rows = index.search_many([queries[q] for q in qids], k=depth)
    pairs: list[LabeledPair] = []
    for qid, hits in zip(qids, rows, strict=True):
        known = positives.get(qid, {})
        others = [h for h in hits if h.id not in known]
        labels = soft_labels(np.array([h.score for h in others], dtype=np.float64), tau)
        pairs.extend(LabeledPair(queries[qid], passage, 1.0) for passage in known.values())
        for hit, label in zip(others, labels, strict=True):
            pairs.append(LabeledPair(queries[qid], hit.text, round(float(label), 4)))
    return pairs


def inverse_cloze(
    corpus: dict[str, dict[str, str]], n: int, rng: random.Random, min_words: int
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    queries: dict[str, str] = {}
    positives: dict[str, dict[str, str]] = {}
    ids = list(corpus)
    rng.shuffle(ids)
    for doc_id in ids:
        if len(queries) >= n:
            break
        doc = corpus[doc_id]
        sentences = split_sentences(doc.get("text", ""))
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
        if len(sentences) < 2 or not usable:
            continue
        i = rng.choice(usable)
        body = " ".join(s for j, s in enumerate(sentences) if j != i)
        qid = f"ict:{doc_id}"
        queries[qid] = sentences[i]
        positives[qid] = {doc_id: f"{doc.get('title', '')} {body}".strip()}
    return queries, positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--msmarco", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--tau", type=float, default=0.05)
    parser.add_argument("--ict-scifact", type=int, default=2000)
    parser.add_argument("--ict-msmarco", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pairs: list[LabeledPair] = []

    scifact = load_beir(args.scifact, "train")
    index = index_corpus(scifact.corpus)
    train_q = {q: scifact.queries[q] for q in scifact.qrels}
    train_pos = {q: {d: scifact.doc_text(d) for d, g in rel.items() if g > 0} for q, rel in scifact.qrels.items()}
    pairs += pairs_for(index, train_q, train_pos, args.depth, args.tau)
    n_train = len(pairs)
    ict_q, ict_pos = inverse_cloze(scifact.corpus, args.ict_scifact, rng, min_words=8)
    pairs += pairs_for(index, ict_q, ict_pos, args.depth, args.tau)
    n_ict_scifact = len(pairs) - n_train

    msmarco = load_beir(args.msmarco, "test")  # corpus only: its queries and qrels are not read
    ms_q, ms_pos = inverse_cloze(msmarco.corpus, args.ict_msmarco, rng, min_words=6)
    pairs += pairs_for(index_corpus(msmarco.corpus), ms_q, ms_pos, args.depth, args.tau)
    n_ms = len(pairs) - n_train - n_ict_scifact

    rng.shuffle(pairs)
    write_pairs(pairs, args.out)
    positives = sum(p.label == 1.0 for p in pairs)
    print(
        f"{len(pairs)} pairs ({n_train} SciFact train, {n_ict_scifact} SciFact inverse-cloze, "
        f"{n_ms} MS MARCO inverse-cloze); {positives} labelled positives; "
        f"mean soft label {np.mean([p.label for p in pairs if p.label < 1]):.3f}; tau {args.tau}"
    )


if __name__ == "__main__":
    main()
