"""Recipe v2 training and validation groups, with the hybrid (BM25 + dense) first stage as teacher.

Every training query gets a *group*: its known positive(s) and the hybrid first stage's top other
candidates, each with the teacher's fused score (min-max BM25 and min-max cosine, 0.5/0.5, over each
retriever's top-100). The trainer (``train_v2.py``) learns the positive against the group (localised
contrastive estimation) and the teacher's order over the group (listwise distillation).

Queries, none from a test split:

- SciFact *train* claims with their qrels positives (85% of them; 15% are held out for validation);
- SciFact titles as claims about their own abstract (the abstract without its title is the positive;
  every candidate of these groups is shown without its title, so a missing title is no cue);
- inverse-cloze sentences from the SciFact and MS MARCO corpora (the passage without that sentence is
  the positive);
- web-style keyword pseudo-queries over the MS MARCO corpus (``keyword_query_pairs.pseudo_queries``);
- Climate-FEVER claims with their labelled evidence sentences (no teacher scores).

Recipe v3 (``--msmarco-teacher dense --web-queries N``) changes only the MS MARCO-corpus groups: they
become pure distillation of the bi-encoder's order over its top candidates (no contrastive term, the
source passage tied with the teacher's best), and N short keyword queries cut from corpus sentences
are added. The bi-encoder was trained on real web questions; a pseudo-query's own passage forced above
every other teaches lexical overlap instead.

The MS MARCO corpus is read as unlabelled text; its queries and judgements are never opened.
Validation: held-out SciFact train claims and held-out MS MARCO pseudo-queries, each with the dense
and the hybrid top-100 as candidates, so the trainer picks its checkpoint and the fusion weight is
tuned on training queries only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keyword_query_pairs import pseudo_queries

from ce_rerank_plugins.evaluation.beir import load_beir
from ce_rerank_plugins.retrieval import Embedder
from ce_rerank_plugins.training.pairs import split_sentences

DEPTH = 100


class Corpus:
    """One corpus's texts, dense vectors and BM25 index, with dense, BM25 and hybrid top-k search."""

    def __init__(self, name: str, docs: dict[str, str], embedder: Embedder) -> None:
        import bm25s
        import Stemmer

        self.name = name
        self.ids = list(docs)
        self.texts = [docs[i] for i in self.ids]
        self.position = {d: i for i, d in enumerate(self.ids)}
        t0 = time.perf_counter()
        self.vectors = embedder.encode(self.texts, show_progress=True)
        self.embedder = embedder
        self.stemmer = Stemmer.Stemmer("english")
        self.bm25 = bm25s.BM25(k1=0.9, b=0.4)
        self.bm25.index(bm25s.tokenize(self.texts, stopwords="en", stemmer=self.stemmer, show_progress=False))
        print(f"{name}: {len(self.ids)} documents embedded and indexed in {time.perf_counter() - t0:.0f} s")

    def search(self, queries: list[str]) -> list[dict[str, Any]]:
        """Per query: dense top-100, BM25 top-100 and their min-max convex fusion (0.5/0.5)."""
        import bm25s

        qvec = self.embedder.encode(queries, show_progress=len(queries) > 500)
        sims = qvec @ self.vectors.T
        dense_top = np.argsort(-sims, axis=1)[:, :DEPTH]
        tokens = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
        bm_docs, bm_scores = self.bm25.retrieve(tokens, k=DEPTH, show_progress=False, n_threads=1)
        out = []
        for qi in range(len(queries)):
            dense = {int(d): float(sims[qi, d]) for d in dense_top[qi]}
            lexical = {int(d): float(s) for d, s in zip(bm_docs[qi], bm_scores[qi], strict=True) if s > 0}
            out.append({"dense": dense, "bm25": lexical, "hybrid": fuse(dense, lexical)})
        return out


QUESTION_WORDS = ("what", "how", "why", "when", "where", "who", "which", "does", "can", "is")
GENERIC_WORDS = ("one", "two", "also", "may", "many", "several", "used", "use", "get", "getting", "often", "like")


def web_queries(
    corpus: dict[str, dict[str, str]], n: int, rng: random.Random, exclude: set[str]
) -> list[tuple[str, str]]:
    """``[(query, source doc id)]``: short keyword queries, 3-5 content words of one sentence in order.

    Web search queries are mostly a few content words ("causes left ventricular hypertrophy"); a
    sentence's own words, stop words and numbers left out, give that shape without a generator model.
    Only corpus text is read.
    """
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    stop = set(STOPWORDS_EN_PLUS) | set(QUESTION_WORDS) | set(GENERIC_WORDS)
    ids = [d for d in corpus if d not in exclude]
    rng.shuffle(ids)
    out = []
    for doc_id in ids:
        if len(out) >= n:
            break
        sentences = [s for s in split_sentences(corpus[doc_id].get("text", "")) if len(s.split()) >= 8]
        if not sentences:
            continue
        words = [w.strip(".,;:()[]\"'!?").lower() for w in rng.choice(sentences).split()]
        content = [w for w in words if len(w) >= 3 and w.isalpha() and w not in stop]
        if len(content) < 3:
            continue
        size = rng.randint(3, min(5, len(content)))
        start = rng.randrange(len(content) - size + 1)
        chosen = content[start : start + size]
        if sum(len(w) >= 5 for w in chosen) < 2:
            continue
        out.append((" ".join(chosen), doc_id))
    return out


def minmax(scores: dict[int, float]) -> dict[int, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 1.0 for d, s in scores.items()}


def fuse(dense: dict[int, float], lexical: dict[int, float], weight: float = 0.5) -> dict[int, float]:
    """Min-max convex fusion; a document missing from one list gets 0 from it."""
    dn, ln = minmax(dense), minmax(lexical)
    fused = {d: weight * dn.get(d, 0.0) + (1 - weight) * ln.get(d, 0.0) for d in set(dn) | set(ln)}
    return dict(sorted(fused.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scifact", type=Path, required=True)
    parser.add_argument("--msmarco", type=Path, required=True)
    parser.add_argument("--climate-fever", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--negatives", type=int, default=15, help="teacher-ranked candidates per group")
    parser.add_argument("--ict-scifact", type=int, default=3000)
    parser.add_argument("--ict-msmarco", type=int, default=3000)
    parser.add_argument("--titles", type=int, default=4000)
    parser.add_argument("--keyword-queries", type=int, default=1200)
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument(
        "--msmarco-teacher",
        choices=("hybrid", "dense"),
        default="hybrid",
        help="v3: 'dense' makes the MS MARCO-corpus groups pure distillation of the bi-encoder's order "
        "(the source passage ties the teacher's best instead of being forced above every candidate)",
    )
    parser.add_argument("--web-queries", type=int, default=0, help="v3: keyword queries from MS MARCO sentences")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(None)

    scifact = load_beir(args.scifact, "train")
    msmarco = load_beir(args.msmarco, "test")  # corpus only: queries and qrels are not read below
    msmarco_queries_unused = msmarco.queries
    del msmarco_queries_unused
    sf = Corpus("scifact", {d: scifact.doc_text(d) for d in scifact.corpus}, embedder)
    ms = Corpus("msmarco", {d: msmarco.doc_text(d) for d in msmarco.corpus}, embedder)

    texts: dict[str, str] = {}  # key -> passage text shown to the cross-encoder

    def key(corpus: Corpus, i: int, *, title: bool = True) -> str:
        doc_id = corpus.ids[i]
        if corpus is sf and not title:
            k = f"sf-notitle/{doc_id}"
            texts.setdefault(k, scifact.corpus[doc_id].get("text", ""))
            return k
        k = f"{corpus.name}/{doc_id}"
        texts.setdefault(k, corpus.texts[i])
        return k

    def positive_key(corpus: Corpus, p: int, override: str | None, titles: bool, kind: str) -> str:
        """The key of a known positive: the corpus passage, or the override text (an inverse-cloze remainder)."""
        if override is None:
            return key(corpus, p, title=titles)
        k = f"{kind}/{len(texts)}"
        texts[k] = override
        return k

    def groups_for(corpus: Corpus, queries: list[tuple[str, str, list[int], str | None, bool]]) -> list[dict[str, Any]]:
        """queries: (kind, text, positive doc indexes, positive text override, show titles)."""
        found = corpus.search([q[1] for q in queries])
        if corpus is ms and args.msmarco_teacher == "dense":
            return [distill_group(q, res) for q, res in zip(queries, found, strict=True)]
        groups = []
        for (kind, text, positives, override, titles), res in zip(queries, found, strict=True):
            hybrid = res["hybrid"]
            pos_keys = [positive_key(corpus, p, override, titles, kind) for p in positives]
            others = [d for d in hybrid if d not in positives][: args.negatives]
            groups.append(
                {
                    "kind": kind,
                    "query": text,
                    "docs": pos_keys + [key(corpus, d, title=titles) for d in others],
                    "labels": [1.0] * len(pos_keys) + [0.0] * len(others),
                    "teacher": [1.0] * len(pos_keys) + [round(hybrid[d], 5) for d in others],
                }
            )
        return groups

    def distill_group(query: tuple[str, str, list[int], str | None, bool], res: dict[str, Any]) -> dict[str, Any]:
        """v3 web group: the bi-encoder's top candidates, ordered by its min-max cosine (no contrastive term).

        The bi-encoder was trained on real web questions, so on web text its order carries what a
        lexical pseudo-query cannot; the source passage is kept as tied with the teacher's best, so it
        is taught as relevant without being forced above passages that answer the query as well.
        """
        kind, text, positives, override, titles = query
        dense = minmax(res["dense"])
        source = positive_key(ms, positives[0], override, titles, kind)
        others = [d for d in sorted(dense, key=lambda d: -dense[d]) if d not in positives][: args.negatives]
        teacher = [round(dense[d], 5) for d in others]
        return {
            "kind": kind,
            "query": text,
            "docs": [source] + [key(ms, d, title=titles) for d in others],
            "labels": [1.0] + [0.0] * len(others),
            "teacher": [max(teacher, default=1.0), *teacher],
            "contrastive": False,
        }

    # SciFact train claims, split into train / validation by query.
    train_qids = sorted(scifact.qrels)
    rng.shuffle(train_qids)
    n_val = int(len(train_qids) * args.val_fraction)
    val_qids, fit_qids = train_qids[:n_val], train_qids[n_val:]
    groups: list[dict[str, Any]] = []
    groups += groups_for(
        sf,
        [
            ("scifact-train", scifact.queries[q], [sf.position[d] for d in scifact.qrels[q]], None, True)
            for q in fit_qids
        ],
    )

    # SciFact titles (the held-out validation claims' positives are excluded, so no validation
    # claim's abstract is trained on through its title).
    held_docs = {d for q in val_qids for d in scifact.qrels[q]}
    title_ids = [d for d in sf.ids if d not in held_docs and len(scifact.corpus[d].get("title", "").split()) >= 5]
    rng.shuffle(title_ids)
    groups += groups_for(
        sf,
        [
            ("scifact-title", scifact.corpus[d]["title"], [sf.position[d]], None, False)
            for d in title_ids[: args.titles]
        ],
    )

    def ict(corpus: Corpus, n: int, min_words: int, kind: str, exclude: set[str]) -> list[tuple]:
        out = []
        order = [i for i in range(len(corpus.ids)) if corpus.ids[i] not in exclude]
        rng.shuffle(order)
        for i in order:
            if len(out) >= n:
                break
            doc_id = corpus.ids[i]
            raw = scifact.corpus[doc_id] if corpus is sf else msmarco.corpus[doc_id]
            sentences = split_sentences(raw.get("text", ""))
            usable = [j for j, s in enumerate(sentences) if len(s.split()) >= min_words]
            if len(sentences) < 2 or not usable:
                continue
            j = rng.choice(usable)
            body = " ".join(s for m, s in enumerate(sentences) if m != j)
            shown = f"{raw.get('title', '')} {body}".strip()
            out.append((kind, sentences[j], [i], shown, True))
        return out

    groups += groups_for(sf, ict(sf, args.ict_scifact, 8, "scifact-ict", held_docs))
    groups += groups_for(ms, ict(ms, args.ict_msmarco, 6, "msmarco-ict", set()))

    # Web-style keyword pseudo-queries over MS MARCO; a share is held out for validation.
    kw = pseudo_queries(msmarco.corpus, args.keyword_queries, rng)
    kw_items = list(kw.values())
    n_kw_val = int(len(kw_items) * args.val_fraction)
    kw_val, kw_fit = kw_items[:n_kw_val], kw_items[n_kw_val:]
    groups += groups_for(ms, [("msmarco-keyword", q, [ms.position[d]], None, True) for q, d in kw_fit])
    held_kw = {d for _, d in kw_val}
    web = web_queries(msmarco.corpus, args.web_queries, rng, exclude=held_kw)
    groups += groups_for(ms, [("msmarco-web", q, [ms.position[d]], None, True) for q, d in web])

    # Climate-FEVER: labelled evidence sentences, no teacher.
    with args.climate_fever.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            ev = row.get("evidences") or []
            labels = [1.0 if e.get("evidence_label") in ("SUPPORTS", "REFUTES") else 0.0 for e in ev]
            if not labels or min(labels) == max(labels):
                continue
            docs = []
            for e in ev:
                k = f"cf/{hashlib.sha1(e['evidence'].encode()).hexdigest()[:16]}"
                texts[k] = f"{e.get('article', '')}: {e['evidence']}".strip(": ")
                docs.append(k)
            groups.append(
                {"kind": "climate-fever", "query": row["claim"], "docs": docs, "labels": labels, "teacher": None}
            )

    rng.shuffle(groups)

    # Validation: the first stages' top-100 for held-out queries, with their judgements.
    val: list[dict[str, Any]] = []
    for corpus, items in (
        (sf, [(q, scifact.queries[q], {f"scifact/{d}": 1 for d in scifact.qrels[q]}) for q in val_qids]),
        (ms, [(f"kw{i}", q, {f"msmarco/{d}": 1}) for i, (q, d) in enumerate(kw_val)]),
    ):
        found = corpus.search([t for _, t, _ in items])
        for (qid, text, rel), res in zip(items, found, strict=True):
            entry: dict[str, Any] = {"set": f"{corpus.name}-val", "qid": qid, "query": text, "rel": rel}
            for mode in ("dense", "hybrid", "bm25"):
                ranked = sorted(res[mode].items(), key=lambda kv: -kv[1])[:DEPTH]
                entry[mode] = [[key(corpus, d), round(s, 6)] for d, s in ranked]
            val.append(entry)

    def dump(name: str, rows: list[dict[str, Any]]) -> None:
        with gzip.open(args.out / name, "wt", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    dump("train_groups.jsonl.gz", groups)
    dump("val_groups.jsonl.gz", val)
    dump("texts.jsonl.gz", [{"key": k, "text": t} for k, t in texts.items()])
    kinds: dict[str, int] = {}
    for g in groups:
        kinds[g["kind"]] = kinds.get(g["kind"], 0) + 1
    summary = {
        "seed": args.seed,
        "groups": len(groups),
        "pairs": sum(len(g["docs"]) for g in groups),
        "by_kind": kinds,
        "validation_queries": {"scifact-val": len(val_qids), "msmarco-val": len(kw_val)},
        "texts": len(texts),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
