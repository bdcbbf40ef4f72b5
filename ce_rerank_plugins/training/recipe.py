"""The default model's recipe: labelled questions, mined hard negatives, a listwise loss, resumable.

``prepare_groups`` reads any number of BEIR-layout sets (``qrels/train.tsv``), mines hard negatives
with the package's own bi-encoder (plus passages of the same title, e.g. other paragraphs of one
SQuAD article), holds out whole titles for validation, and writes everything as gzipped JSON Lines.
``train_listwise`` then fine-tunes a cross-encoder on those groups:

    loss = -log softmax(s)[positive]  +  distill_weight * KL(softmax(t_neg / tau) || softmax(s_neg))

``s`` are the cross-encoder's logits over one group (the positive and its negatives), ``t`` the
bi-encoder's cosines. The first term teaches the answer against passages that share its words; the
second keeps the bi-encoder's broad sense of topicality over the negatives, which real labels alone
do not cover. Checkpoints are written atomically every ``checkpoint_steps``; a run started again
with the same output folder resumes from the last one. Validation on held-out training questions
picks the checkpoint and the fusion the model recommends (``ce_rerank.json``).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ce_rerank_plugins._files import atomic_write
from ce_rerank_plugins.core import fuse_scores
from ce_rerank_plugins.evaluation.beir import document_text, load_beir

logger = logging.getLogger(__name__)

GROUPS_FILE = "train_groups.jsonl.gz"
VALIDATION_FILE = "val_queries.jsonl.gz"
TEXTS_FILE = "texts.jsonl.gz"
DATA_MANIFEST = "data.json"
#: Fusion weights tried on the held-out questions (1.0 is the cross-encoder alone).
FUSION_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class GroupSettings:
    """How training groups and validation queries are built from labelled sets.

    Attributes:
        mining: The first stage that mines negatives and gives held-out questions their candidates:
            ``"bm25"`` (cheap; its negatives share the question's words, the distractors a reranker
            must see through) or ``"dense"`` (the package's bi-encoder; its cosines also become the
            distillation teacher's scores).
        negatives: Negatives per group, mined from the first stage's ranking.
        same_title: Of those, how many are drawn from passages sharing the positive's title.
        depth: The first-stage depth negatives are drawn from.
        skip_top: Bi-encoder ranks skipped for negatives (the very top holds most unlabelled answers).
        holdout_fraction: Share of each set's titles held out for validation.
        max_holdout: At most this many held-out questions per set.
        val_depth: Candidates per held-out question (the first stage's top, as the pipeline sees them).
        max_queries: Training questions per set, at most (0: all).
        seed: Seed for the hold-out split and negative sampling.
        word_sharing: Extra negatives per group written from the question itself: its words (the
            question, or its statement part without the question word) followed by a sentence of a
            mined negative. They share every word of the question and answer nothing, the distractor
            a model that rewards overlap ranks first.
        holdout_from: An earlier build's folder whose held-out questions are held out again (their
            titles too), for a run that continues from a model trained on that build: a fresh split
            would validate it on questions it was trained on. Sets that build did not have are split
            afresh.
        sentence_groups: This many groups (at most) whose members are single sentences: a training
            question's answering paragraph split into sentences, the bi-encoder choosing the one that
            answers (:mod:`ce_rerank_plugins.training.sentences`). 0: none.
        sentence_sets: The sets (folder names) sentence groups are made from; empty: every set.
        paragraph_groups: Keep at most this many of the paragraph groups, drawn at random (0: all).
        repeated_questions: Give each sentence group a member that repeats the question before a
            negative sentence (and every second group's answer the same way).
    """

    mining: str = "bm25"
    negatives: int = 5
    same_title: int = 1
    depth: int = 30
    skip_top: int = 0
    holdout_fraction: float = 0.05
    max_holdout: int = 100
    val_depth: int = 20
    max_queries: int = 0
    seed: int = 4
    word_sharing: int = 0
    holdout_from: str | None = None
    sentence_groups: int = 0
    sentence_sets: tuple[str, ...] = ()
    paragraph_groups: int = 0
    repeated_questions: bool = False


@dataclass(frozen=True)
class ListwiseConfig:
    """Options of one listwise run (recorded in ``training_run.json``).

    Attributes:
        base_model: Cross-encoder checkpoint to fine-tune (folder or Hub id).
        max_steps: Optimiser steps (the schedule's length).
        groups_per_step: Query groups per optimiser step.
        learning_rate: Peak learning rate (linear warm-up over 5% of steps, then linear decay).
        max_length: Token budget of a (question, passage) pair.
        distill_weight: Weight of the bi-encoder distillation over the negatives (0: off).
        tau: Temperature of the bi-encoder's softmax.
        eval_steps: Validate (and keep the best) every this many steps, and at the end.
        checkpoint_steps: Write a resumable checkpoint every this many steps.
        time_budget: Stop training after this many seconds (the schedule still ends at ``max_steps``).
        threads: Torch CPU threads (0: torch's default).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: Seed for shuffling and dropout.
        misleading_share: At least this share of the groups trained on are ones where a negative shares
            more of the question's words than the answer (:func:`overlap_misleads`), repeated as needed
            (0: the data's own share). In labelled questions written from their passage (SQuAD) the
            answer is nearly always the passage with the most question words, so a model learns to
            count words; these groups are where counting fails.
    """

    base_model: str
    max_steps: int = 1000
    groups_per_step: int = 8
    learning_rate: float = 2e-5
    max_length: int = 256
    distill_weight: float = 0.5
    tau: float = 0.05
    eval_steps: int = 250
    checkpoint_steps: int = 50
    time_budget: float = 0.0
    threads: int = 0
    device: str = "auto"
    seed: int = 4
    misleading_share: float = 0.0


@dataclass
class ListwiseResult:
    """What a run produced: the chosen model folder, its validation figures and the history."""

    model_dir: str
    steps: int
    best_step: int
    selection: float
    fusion: tuple[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def _write_jsonl_gz(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _read_jsonl_gz(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _set_name(directory: Path, taken: set[str]) -> str:
    name, n = directory.name, 2
    while name in taken:
        name, n = f"{directory.name}-{n}", n + 1
    return name


def prepare_groups(
    data_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    settings: GroupSettings | None = None,
    embed: Callable[[list[str]], Any] | None = None,
) -> dict[str, Any]:
    """Build training groups and held-out validation questions from BEIR-layout sets.

    Each set needs ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/train.tsv``. A question's group is
    its first judged passage and ``settings.negatives`` unjudged ones: passages sharing the positive's
    title (other paragraphs of one article) and the bi-encoder's top candidates, each with its cosine
    as the teacher's score. Whole titles are held out, so no held-out question's passage is seen in
    training as a positive.

    Args:
        data_dirs: BEIR-layout folders.
        out_dir: Where the groups go (``train_groups.jsonl.gz``, ``val_queries.jsonl.gz``,
            ``texts.jsonl.gz``, ``data.json``).
        settings: Group options.
        embed: ``texts -> unit vectors``; the package's default bi-encoder when None.

    Returns:
        The manifest written to ``data.json`` (counts per set and the settings).
    """
    settings = settings or GroupSettings()
    if not data_dirs:
        msg = "no training data: give at least one BEIR-layout folder with qrels/train.tsv"
        raise ValueError(msg)
    if settings.same_title > settings.negatives:
        msg = f"same_title ({settings.same_title}) cannot exceed negatives ({settings.negatives})"
        raise ValueError(msg)
    if settings.mining not in ("bm25", "dense"):
        msg = f"mining must be 'bm25' or 'dense', got {settings.mining!r}"
        raise ValueError(msg)
    for name, least in (
        ("negatives", 1),
        ("depth", 1),
        ("val_depth", 1),
        ("max_holdout", 1),
        ("word_sharing", 0),
        ("sentence_groups", 0),
        ("paragraph_groups", 0),
    ):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = "a positive integer" if least else "an integer >= 0"
            msg = f"{name} must be {kind}, got {value!r}"
            raise ValueError(msg)
    names = _set_names(data_dirs)
    if isinstance(settings.sentence_sets, str) or not all(isinstance(n, str) for n in settings.sentence_sets):
        msg = f"sentence_sets must be a tuple of set names, got {settings.sentence_sets!r}"
        raise TypeError(msg)
    unknown = [n for n in settings.sentence_sets if n not in names]
    if unknown:
        msg = f"sentence_sets names {unknown[0]!r}, which is not one of the sets: {', '.join(names)}"
        raise ValueError(msg)
    if (settings.repeated_questions or settings.sentence_sets) and not settings.sentence_groups:
        msg = "repeated_questions and sentence_sets shape sentence groups: set sentence_groups too"
        raise ValueError(msg)
    earlier = _earlier_holdout(settings.holdout_from)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The manifest goes first and comes back last: files of two builds are never taken for one.
    (out / DATA_MANIFEST).unlink(missing_ok=True)
    rng = random.Random(settings.seed)
    texts: dict[str, str] = {}
    groups: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    per_set: dict[str, dict[str, int]] = {}
    for directory, name in zip(map(Path, data_dirs), names, strict=True):
        dataset = load_beir(directory, "train")
        doc_ids = list(dataset.corpus)
        position = {d: i for i, d in enumerate(doc_ids)}
        doc_texts = [document_text(dataset.corpus[d]) for d in doc_ids]
        titles: dict[str, list[int]] = {}
        for i, d in enumerate(doc_ids):
            title = (dataset.corpus[d].get("title") or "").strip()
            if title:
                titles.setdefault(title, []).append(i)
        # A question's hold-out key is its first judged passage's title (an article), else the question.
        qids = [q for q in dataset.queries if any(d in position and g > 0 for d, g in dataset.qrels[q].items())]
        title_of: dict[str, str] = {}
        for q in qids:
            first = next(d for d, g in dataset.qrels[q].items() if g > 0 and d in position)
            title_of[q] = (dataset.corpus[first].get("title") or "").strip() or f"query:{q}"
        keys = sorted({title_of[q] for q in qids})
        rng.shuffle(keys)
        held_keys: set[str] = set()
        if earlier is not None and name in earlier:
            questions, passages = earlier[name]
            held_keys = {title_of[q] for q in qids if dataset.queries[q] in questions}
            held_keys |= {(dataset.corpus[d].get("title") or "").strip() for d in passages if d in position} - {""}
            # Earlier held-out questions first, so the same ones are validated again under max_holdout.
            qids.sort(key=lambda q: dataset.queries[q] not in questions)
        else:
            held_count = 0
            limit = min(settings.max_holdout, max(1, int(len(qids) * settings.holdout_fraction)))
            by_key: dict[str, list[str]] = {}
            for q in qids:
                by_key.setdefault(title_of[q], []).append(q)
            for key in keys:
                if held_count >= limit:
                    break
                held_keys.add(key)
                held_count += len(by_key[key])
        train_qids = [q for q in qids if title_of[q] not in held_keys]
        held_qids = [q for q in qids if title_of[q] in held_keys][: settings.max_holdout]
        if settings.max_queries:
            rng.shuffle(train_qids)
            train_qids = train_qids[: settings.max_queries]
        t0 = time.perf_counter()
        asked = train_qids + held_qids
        held = set(held_qids)
        depth = max(settings.depth, settings.val_depth)
        ranked = _first_stage(settings.mining, doc_texts, [dataset.queries[q] for q in asked], depth, embed)
        used: set[int] = set()
        made = 0
        for qid, (top, top_scores) in zip(asked, ranked, strict=True):
            score_of = dict(zip(top, top_scores, strict=True))
            relevant = {d: g for d, g in dataset.qrels[qid].items() if d in position}
            if qid in held:
                cands = top[: settings.val_depth]
                used.update(cands)
                validation.append(
                    {
                        "set": name,
                        "query": dataset.queries[qid],
                        "docs": [f"{name}/{doc_ids[i]}" for i in cands],
                        "first_stage": [round(score_of[i], 6) for i in cands],
                        "relevant": {f"{name}/{d}": g for d, g in relevant.items() if g > 0},
                    }
                )
                continue
            positive = next(d for d, g in relevant.items() if g > 0)
            pos_i = position[positive]
            banned = {position[d] for d in relevant} | {pos_i}
            same = [i for i in titles.get((dataset.corpus[positive].get("title") or "").strip(), []) if i not in banned]
            chosen = rng.sample(same, min(settings.same_title, len(same)))
            mined = [i for i in top[settings.skip_top : settings.depth] if i not in banned and i not in chosen]
            chosen += mined[: settings.negatives - len(chosen)]
            if not chosen:
                continue
            members = [pos_i, *chosen]
            used.update(members)
            group: dict[str, Any] = {
                "set": name,
                "query": dataset.queries[qid],
                "docs": [f"{name}/{doc_ids[i]}" for i in members],
            }
            if settings.mining == "dense" and all(i in score_of for i in members):
                group["teacher"] = [round(score_of[i], 6) for i in members]
            for k, text in enumerate(
                word_sharing_negatives(dataset.queries[qid], [doc_texts[i] for i in chosen], settings.word_sharing, rng)
            ):
                key = f"{name}/~{qid}~{k}"  # no corpus id of a BEIR set starts with "~" and holds "~"s like this
                texts[key] = text
                group["docs"].append(key)
            groups.append(group)
            made += 1
        for i in used:
            texts[f"{name}/{doc_ids[i]}"] = doc_texts[i]
        per_set[name] = {"train_groups": made, "validation_queries": len(held_qids), "held_out_titles": len(held_keys)}
        logger.info("%s: %d groups, %d held out (%.0f s)", name, made, len(held_qids), time.perf_counter() - t0)
    rng.shuffle(groups)
    if settings.sentence_groups:
        groups, texts = _with_sentence_groups(groups, texts, settings, rng, embed, per_set)
    elif settings.paragraph_groups:
        groups = rng.sample(groups, min(settings.paragraph_groups, len(groups)))
        for name, counts in per_set.items():
            counts["train_groups"] = sum(g["set"] == name for g in groups)
    _write_jsonl_gz(out / GROUPS_FILE, groups)
    _write_jsonl_gz(out / VALIDATION_FILE, validation)
    _write_jsonl_gz(out / TEXTS_FILE, ({"key": k, "text": v} for k, v in texts.items()))
    manifest = {"sets": per_set, "settings": asdict(settings), "sources": [str(Path(d)) for d in data_dirs]}
    _write_manifest(out, manifest)
    return manifest


def _set_names(data_dirs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each set's name: its folder's, with ``-2``, ``-3``... where two folders share one."""
    names: list[str] = []
    for directory in map(Path, data_dirs):
        names.append(_set_name(directory, set(names)))
    return names


def _default_embed() -> Callable[[list[str]], Any]:
    from ce_rerank_plugins.retrieval import Embedder

    embedder = Embedder()

    def embed(texts: list[str]) -> Any:
        return embedder.encode(texts, show_progress=len(texts) > 2000)

    return embed


def _with_sentence_groups(
    groups: list[dict[str, Any]],
    texts: dict[str, str],
    settings: GroupSettings,
    rng: random.Random,
    embed: Callable[[list[str]], Any] | None,
    per_set: dict[str, dict[str, int]],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Sentence groups made from ``groups`` beside (a draw of) ``groups`` themselves, shuffled together."""
    from ce_rerank_plugins.training.sentences import add_repeated_questions, sentence_groups

    t0 = time.perf_counter()
    made, made_texts = sentence_groups(
        groups,
        texts,
        settings.sentence_groups,
        embed=embed or _default_embed(),
        rng=rng,
        sets=settings.sentence_sets,
    )
    texts = {**texts, **made_texts}
    if settings.repeated_questions:
        made, made_texts = add_repeated_questions(made, texts, rng)
        texts.update(made_texts)
    if settings.paragraph_groups:
        groups = rng.sample(groups, min(settings.paragraph_groups, len(groups)))
    mixed = made + groups
    rng.shuffle(mixed)
    for name, counts in per_set.items():
        counts["sentence_groups"] = sum(g["set"] == name for g in made)
        counts["train_groups"] = sum(g["set"] == name for g in mixed)
    logger.info(
        "%d sentence groups beside %d paragraph groups (%.0f s)", len(made), len(groups), time.perf_counter() - t0
    )
    return mixed, texts


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    # Last and in one rename: a build whose manifest can be read is a finished build.
    atomic_write(out / DATA_MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


_QUESTION_OPENERS = re.compile(
    r"^\s*(?:(?:how\s+(?:many|much|long|old|far|big|often|large|tall|high|deep)|how|what|which|who|whom|whose|when"
    r"|where|why|is|are|was|were|do|does|did|can|could|should|would|will|has|have|had)\b\s*)+",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


_WORD = re.compile(r"\w+")
#: Words that say nothing of a question's subject; every other word of it is a content word.
_FUNCTION_WORDS_TEXT = (
    "a an the of in on at to for by with from as and or not is are was were be been being do does did has"
    " have had what which who whom whose when where why how that this these those it its there their they"
    " he she his her i you your my me we our us can could should would will shall may might must"
)
_FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _FUNCTION_WORDS}


def overlap_misleads(question: str, answer: str, negatives: Sequence[str]) -> bool:
    """True when some negative contains more of ``question``'s content words than ``answer`` does.

    Content words are lowercased words other than function words ("the", "how", "is", ...).
    """
    asked = _content_words(question)
    shared = len(asked & _content_words(answer))
    return any(len(asked & _content_words(text)) > shared for text in negatives)


def training_order(
    groups: Sequence[dict[str, Any]], texts: dict[str, str], misleading_share: float, seed: int
) -> list[int]:
    """The order groups are trained in: each once, shuffled, with misleading groups repeated up to a share.

    Groups where word overlap misleads (:func:`overlap_misleads`) are repeated until they make up
    ``misleading_share`` of the order (never fewer than the data holds).
    """
    order = list(range(len(groups)))
    if misleading_share > 0:
        misleading = [
            i
            for i, g in enumerate(groups)
            if overlap_misleads(g["query"], texts[g["docs"][0]], [texts[k] for k in g["docs"][1:]])
        ]
        rest = len(groups) - len(misleading)
        wanted = math.ceil(misleading_share * rest / (1.0 - misleading_share))
        if misleading and wanted > len(misleading):
            order += [misleading[k % len(misleading)] for k in range(len(misleading), wanted)]
    random.Random(seed).shuffle(order)
    return order


def word_sharing_negatives(question: str, negatives: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """Up to ``count`` passages that repeat ``question``'s words and go on with a sentence that does not answer.

    Each is the question (as asked, or its statement part without the question word) followed by one
    sentence of a passage already chosen as a negative, e.g. "How many people live in Lyon? The old town
    is a UNESCO site." or "people live in Lyon: the old town ...". Nothing is made without a negative to
    borrow from or for a question with no words left.
    """
    sentences = [s.strip() for text in negatives for s in _SENTENCE_END.split(text) if len(s.split()) >= 4]
    asked = question.strip()
    statement = _QUESTION_OPENERS.sub("", asked).rstrip(" ?")
    if not sentences or not count or not statement:
        return []
    made = []
    for k in range(count):
        sentence = rng.choice(sentences)
        if k % 2 == 0:
            made.append(f"{asked.rstrip(' ?')}? {sentence}")
        else:
            made.append(f"{statement[0].upper()}{statement[1:]}: {sentence[0].lower()}{sentence[1:]}")
    return made


def _earlier_holdout(folder: str | None) -> dict[str, tuple[set[str], set[str]]] | None:
    """Per set name: the held-out question texts and judged passage ids of an earlier build."""
    if folder is None:
        return None
    path = Path(folder) / VALIDATION_FILE
    if not path.is_file():
        msg = f"holdout_from: {str(path)!r} is missing (give the data folder of an earlier build)"
        raise FileNotFoundError(msg)
    earlier: dict[str, tuple[set[str], set[str]]] = {}
    for row in _read_jsonl_gz(path):
        questions, passages = earlier.setdefault(row["set"], (set(), set()))
        questions.add(row["query"])
        passages.update(key.removeprefix(f"{row['set']}/") for key in row["relevant"])
    return earlier


def _first_stage(
    mining: str,
    doc_texts: list[str],
    queries: list[str],
    depth: int,
    embed: Callable[[list[str]], Any] | None,
) -> list[tuple[list[int], list[float]]]:
    """Each query's top ``depth`` documents (indices into ``doc_texts``) and their first-stage scores."""
    if not queries:
        return []
    if mining == "bm25":
        from ce_rerank_plugins.retrieval import LexicalIndex

        index = LexicalIndex()
        index.set_tokens(range(len(doc_texts)), index.tokenize(doc_texts))
        out = []
        for query in queries:
            hits = index.search(query, depth)
            out.append(([i for i, _ in hits], [s for _, s in hits]))
        return out
    if embed is None:
        embed = _default_embed()
    doc_vectors = np.asarray(embed(doc_texts), dtype=np.float32)
    query_vectors = np.asarray(embed(queries), dtype=np.float32)
    out = []
    for row in query_vectors:
        sims = doc_vectors @ row
        top = np.argsort(-sims, kind="stable")[:depth]
        out.append(([int(i) for i in top], [float(sims[i]) for i in top]))
    return out


def _ndcg_mrr(order: np.ndarray, keys: list[str], relevant: dict[str, int]) -> tuple[float, float]:
    ranked = [keys[i] for i in order[:10]]
    dcg = sum((2 ** relevant.get(k, 0) - 1) / math.log2(r + 2) for r, k in enumerate(ranked))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(r + 2) for r, g in enumerate(ideal))
    rr = next((1.0 / (r + 1) for r, k in enumerate(ranked) if relevant.get(k, 0) > 0), 0.0)
    return (dcg / idcg if idcg else 0.0), rr


def validation_metrics(val: Sequence[dict[str, Any]], scores: Sequence[np.ndarray]) -> dict[str, float]:
    """nDCG@10 and MRR@10 per set for the first stage, the cross-encoder alone and each fusion weight.

    Fusion is the package's ``weighted`` fusion: min-max of each, ``w * cross + (1 - w) * first stage``.
    ``selection`` is the mean over sets of the cross-encoder alone's nDCG@10.
    """
    rows: dict[str, list[float]] = {}
    for entry, ce in zip(val, scores, strict=True):
        first = np.asarray(entry["first_stage"], dtype=np.float64)
        ce = np.asarray(ce, dtype=np.float64)
        variants = {"first": first, "ce": ce}
        for w in FUSION_GRID[:-1]:
            variants[f"fused{w:g}"] = fuse_scores(ce, first, fusion="weighted", weight=w)
        for label, s in variants.items():
            ndcg, rr = _ndcg_mrr(np.argsort(-s, kind="stable"), entry["docs"], entry["relevant"])
            rows.setdefault(f"{entry['set']}/{label}/ndcg@10", []).append(ndcg)
            rows.setdefault(f"{entry['set']}/{label}/mrr@10", []).append(rr)
    summary = {k: round(float(np.mean(v)), 4) for k, v in sorted(rows.items())}
    sets = sorted({e["set"] for e in val})
    for label in ["first", "ce", *(f"fused{w:g}" for w in FUSION_GRID[:-1])]:
        summary[f"mean/{label}/ndcg@10"] = round(float(np.mean([summary[f"{s}/{label}/ndcg@10"] for s in sets])), 4)
    summary["selection"] = summary["mean/ce/ndcg@10"]
    return summary


def _require_files(data: Path, names: Sequence[str], hint: str) -> None:
    """Raise ``FileNotFoundError`` naming the first of ``names`` missing from ``data``, and what to do."""
    for name in names:
        if not (data / name).is_file():
            msg = f"{str(data / name)!r} is missing: {hint}"
            raise FileNotFoundError(msg)


def read_validation(data_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A build's held-out questions (``VALIDATION_FILE``) and the texts their candidates name."""
    data = Path(data_dir)
    _require_files(data, (VALIDATION_FILE, TEXTS_FILE), "give the data folder of a recipe build (OUT/data)")
    texts = {r["key"]: r["text"] for r in _read_jsonl_gz(data / TEXTS_FILE)}
    return _read_jsonl_gz(data / VALIDATION_FILE), texts


def check_groups(groups: Sequence[Any], texts: dict[str, str]) -> None:
    """Raise ``ValueError`` naming the first training group the listwise loss cannot take, and why.

    A group is ``{"query": str, "docs": [answer key, negative key, ...], "teacher"?: [score, ...]}``:
    at least one negative, every key in ``texts``, and teacher scores (for the first members) finite.
    Checked before the first step, so a bad group fails the run at once, not hours in (a NaN teacher
    score would otherwise turn every weight into NaN).
    """
    for i, group in enumerate(groups):
        query = group.get("query") if isinstance(group, dict) else None
        where = f"training group {i} ({query!r})"
        if not isinstance(query, str) or not query.strip():
            msg = f"{where}: 'query' must be a non-empty string"
            raise ValueError(msg)
        docs = group.get("docs")
        if not isinstance(docs, list) or len(docs) < 2 or not all(isinstance(k, str) for k in docs):
            msg = f"{where}: 'docs' must list the answer's key and at least one negative's, got {docs!r}"
            raise ValueError(msg)
        missing = [k for k in docs if k not in texts]
        if missing:
            msg = f"{where}: no text for {missing[0]!r}"
            raise ValueError(msg)
        teacher = group.get("teacher")
        if teacher is None:
            continue
        if (
            not isinstance(teacher, list)
            or len(teacher) > len(docs)
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in teacher)
        ):
            msg = f"{where}: 'teacher' must be finite numbers, at most one per member, got {teacher!r}"
            raise ValueError(msg)


def read_training_groups(data_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A finished build's training groups (``GROUPS_FILE``) and the texts (``TEXTS_FILE``) its keys name."""
    data = Path(data_dir)
    _require_files(
        data, (GROUPS_FILE, TEXTS_FILE, DATA_MANIFEST), "give the data folder of a finished recipe build (OUT/data)"
    )
    texts = {r["key"]: r["text"] for r in _read_jsonl_gz(data / TEXTS_FILE)}
    return _read_jsonl_gz(data / GROUPS_FILE), texts


def write_derived_groups(
    source_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    groups: Sequence[dict[str, Any]],
    texts: dict[str, str],
    *,
    derivation: str | None = None,
) -> dict[str, Any]:
    """A build of other training groups beside ``source_dir``'s held-out questions.

    Groups made from another build's (its passages split into sentences, members rewritten) train with
    ``ce-rerank train --out DIR`` once written to ``DIR/data``, and are validated on exactly the source's
    held-out questions, so the two runs compare. ``texts`` must name every member of ``groups`` and every
    held-out candidate. The manifest keeps the source's settings, counts the new groups per set and
    records where they came from (``derived_from``, with ``derivation``, a line saying how), so the
    training record of a model says what it was trained on. As in :func:`prepare_groups`, the manifest
    goes first and comes back last, so a write cut short is never taken for a finished build.
    Returns the manifest.
    """
    source, out = Path(source_dir), Path(out_dir)
    if out.resolve() == source.resolve():
        msg = f"write derived groups to a folder of their own, not over their source {str(source)!r}"
        raise ValueError(msg)
    _require_files(source, (VALIDATION_FILE, DATA_MANIFEST), "give the data folder of a recipe build (OUT/data)")
    check_groups(groups, texts)
    for question in _read_jsonl_gz(source / VALIDATION_FILE):  # not the source's texts: ``texts`` must hold them
        missing = [k for k in question["docs"] if k not in texts]
        if missing:
            where = f"held-out question {question['query']!r}"
            msg = f"no text for {missing[0]!r} ({where}): texts must name every member and held-out candidate"
            raise ValueError(msg)
    source_manifest = json.loads((source / DATA_MANIFEST).read_text(encoding="utf-8"))
    counts = Counter(group["set"] for group in groups)
    held_out: dict[str, dict[str, Any]] = source_manifest.get("sets", {})
    none_held_out = {"validation_queries": 0, "held_out_titles": 0}
    sets = {
        name: {**held_out.get(name, none_held_out), "train_groups": counts.get(name, 0)}
        for name in sorted(set(held_out) | set(counts))
    }
    manifest = {
        **source_manifest,
        "sets": sets,
        "derived_from": {
            "data": str(source),
            "train_groups": {name: info.get("train_groups") for name, info in held_out.items()},
            "derivation": derivation,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / DATA_MANIFEST).unlink(missing_ok=True)
    _write_jsonl_gz(out / GROUPS_FILE, groups)
    _write_jsonl_gz(out / TEXTS_FILE, ({"key": k, "text": v} for k, v in texts.items()))
    shutil.copy(source / VALIDATION_FILE, out / VALIDATION_FILE)
    _write_manifest(out, manifest)
    return manifest


def held_out_metrics(
    model: Any,
    tokenizer: Any,
    val: Sequence[dict[str, Any]],
    texts: dict[str, str],
    *,
    max_length: int,
    device: str = "cpu",
    batch_size: int = 64,
) -> dict[str, float]:
    """:func:`validation_metrics` of a transformers sequence-classification model's logits (left in eval mode)."""
    import torch

    pairs = [(e["query"], texts[k]) for e in val for k in e["docs"]]
    model.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i : i + batch_size]
            enc = tokenizer(
                [q for q, _ in chunk],
                [d for _, d in chunk],
                truncation="longest_first",
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            outs.append(model(**enc).logits[:, 0].float().cpu().numpy())
    scores = np.concatenate(outs) if outs else np.zeros(0)
    return validation_metrics(val, np.split(scores, np.cumsum([len(e["docs"]) for e in val])[:-1]))


def decide_fusion(metrics: dict[str, float], tolerance: float = 0.002) -> tuple[str, float]:
    """The fusion a model should recommend, from its held-out metrics.

    The cross-encoder alone wins unless a weighted fusion beats it by more than ``tolerance``
    (mean nDCG@10 over the held-out sets): fusing costs nothing only when real retrieval scores exist.
    """
    best_w, best = 1.0, metrics["mean/ce/ndcg@10"]
    for w in FUSION_GRID[:-1]:
        value = metrics[f"mean/fused{w:g}/ndcg@10"]
        if value > best + tolerance:  # best never falls below the cross-encoder alone
            best_w, best = w, value
    return ("none", 1.0) if best_w == 1.0 else ("weighted", best_w)


def save_cross_encoder(model: Any, tokenizer: Any, folder: Path, fusion: tuple[str, float] | None = None) -> None:
    """Write a checkpoint that ``CrossEncoder(folder)`` and our reranker load, replacing ``folder`` whole.

    Weights are stored in fp16 (half the size to carry) while ``config.json`` names fp32, so a plain
    ``CrossEncoder(folder)`` runs fp32 instead of fp16 that most CPUs emulate slowly. The folder is
    written beside the target and swapped in, so a crash leaves the old one or the new one, never half.
    """
    import copy

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    half = copy.deepcopy(model).to("cpu").half()
    half.config.id2label = {0: "relevance"}
    half.config.label2id = {"relevance": 0}
    half.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _drop_training_truncation(tmp / "tokenizer.json", tokenizer.model_max_length)
    config_path = tmp / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for file in tmp.iterdir():  # readable like any model folder (the writer may have used a private mode)
        file.chmod(0o644)
    if fusion is not None:
        (tmp / "ce_rerank.json").write_text(
            json.dumps({"fusion": fusion[0], "fusion_weight": fusion[1]}) + "\n", encoding="utf-8"
        )
    _swap_in(tmp, folder)


def _drop_training_truncation(path: Path, model_max_length: int) -> None:
    """Store the model's own token limit in a saved fast tokenizer, not the training run's budget.

    A fast tokenizer saves the truncation of its last call; after a run at ``--max-length 192`` a plain
    ``tokenizers`` user of the saved model would cut every pair at 192 tokens. (transformers and
    sentence-transformers set the truncation on each call, so their scores do not depend on it.)
    """
    if not path.is_file():
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data.get("truncation"), dict):
        return
    if isinstance(model_max_length, int) and 0 < model_max_length <= 1_000_000:
        data["truncation"]["max_length"] = model_max_length
    else:  # no limit of its own (transformers' "very large" sentinel)
        data["truncation"] = None
    atomic_write(path, json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))


def _swap_in(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def _recover(target: Path) -> None:
    """After a crash between the two renames of :func:`_swap_in`, the previous folder is the one to keep."""
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.exists():
        os.replace(old, target)


def train_listwise(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: ListwiseConfig,
    *,
    max_val: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> ListwiseResult:
    """Fine-tune ``config.base_model`` on :func:`prepare_groups`' output; resume if ``out_dir`` has a checkpoint.

    The model with the best held-out ``selection`` (cross-encoder alone, mean nDCG@10 over sets) is
    kept in ``out_dir/model`` with the fusion :func:`decide_fusion` picks for it; the history goes to
    ``out_dir/training_run.json``.

    Args:
        data_dir: The folder :func:`prepare_groups` wrote.
        out_dir: Where the checkpoint, the kept model and the run record go.
        config: The run's options.
        max_val: Validate on only the first this many held-out questions (0: all).
        on_step: Called with the step number after each optimiser step (and its checkpoint).
    """
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ce_rerank_plugins.core import resolve_device

    for name in ("max_steps", "groups_per_step", "max_length", "eval_steps", "checkpoint_steps"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            msg = f"{name} must be a positive integer, got {value!r}"
            raise ValueError(msg)
    if not config.learning_rate > 0 or not config.distill_weight >= 0 or not config.tau > 0:
        msg = "learning_rate and tau must be > 0 and distill_weight >= 0 (NaN is neither)"
        raise ValueError(msg)
    share = config.misleading_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
        msg = f"misleading_share must be a number in [0, 1), got {share!r}"
        raise ValueError(msg)
    data, out = Path(data_dir), Path(out_dir)
    _require_files(
        data,
        (GROUPS_FILE, VALIDATION_FILE, TEXTS_FILE, DATA_MANIFEST),
        "build the groups first (prepare_groups / ce-rerank train --data)",
    )
    groups = _read_jsonl_gz(data / GROUPS_FILE)
    val, texts = read_validation(data)
    if max_val:
        val = val[:max_val]
    if not groups or not val:
        msg = f"{data} holds {len(groups)} training groups and {len(val)} validation questions; both must be > 0"
        raise ValueError(msg)
    check_groups(groups, texts)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, best_dir = out / "checkpoint", out / "model"
    _recover(checkpoint)
    _recover(best_dir)
    resuming = (checkpoint / "state.json").is_file()
    source = str(checkpoint if resuming else config.base_model)
    local = Path(source).is_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=1, dtype=torch.float32, local_files_only=local
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.01)
    warm = max(1, int(0.05 * config.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warm, max(0.0, (config.max_steps - s) / max(1, config.max_steps - warm))),
    )
    state: dict[str, Any] = {"step": 0, "history": [], "best_selection": None, "best_step": 0, "fusion": None}
    if resuming:
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        saved = torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        logger.info("resuming at step %d from %s", state["step"], checkpoint)

    def validate(step: int) -> None:
        metrics = held_out_metrics(model, tokenizer, val, texts, max_length=config.max_length, device=device)
        model.train()
        state["history"].append({"step": step, **metrics})
        logger.info(
            "step %d: selection %.4f (first stage %.4f)", step, metrics["selection"], metrics["mean/first/ndcg@10"]
        )
        if state["best_selection"] is None or metrics["selection"] > state["best_selection"]:
            state["best_selection"], state["best_step"] = metrics["selection"], step
            state["fusion"] = list(decide_fusion(metrics))
            save_cross_encoder(model, tokenizer, best_dir, (state["fusion"][0], state["fusion"][1]))

    def save_checkpoint() -> None:
        tmp = out / f".checkpoint.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        _swap_in(tmp, checkpoint)

    if state["step"] == 0 and not state["history"]:
        validate(0)  # the starting point, so a run that only hurts keeps its base
        save_checkpoint()
    order = training_order(groups, texts, config.misleading_share, config.seed)
    t0 = time.perf_counter()
    model.train()
    while state["step"] < config.max_steps:
        if config.time_budget and time.perf_counter() - t0 > config.time_budget:
            logger.info("time budget reached at step %d", state["step"])
            break
        step = state["step"]
        torch.manual_seed(config.seed + step)  # dropout of a resumed step equals the uninterrupted one
        start = (step * config.groups_per_step) % len(order)
        batch = [groups[order[(start + j) % len(order)]] for j in range(config.groups_per_step)]
        queries = [g["query"] for g in batch for _ in g["docs"]]
        docs = [texts[k] for g in batch for k in g["docs"]]
        enc = tokenizer(
            queries, docs, truncation="longest_first", max_length=config.max_length, padding=True, return_tensors="pt"
        ).to(device)
        logits = model(**enc).logits[:, 0].float()
        loss = logits.new_zeros(())
        for g, s in zip(batch, torch.split(logits, [len(g["docs"]) for g in batch]), strict=True):
            loss = loss - F.log_softmax(s, dim=0)[0]
            taught = len(g.get("teacher") or ())  # the teacher scores the first members (not written ones)
            if config.distill_weight > 0 and taught > 2:
                target = F.softmax(torch.tensor(g["teacher"][1:], device=s.device) / config.tau, dim=0)
                kl = F.kl_div(F.log_softmax(s[1:taught], dim=0), target, reduction="sum")
                loss = loss + config.distill_weight * kl
        loss = loss / len(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state.setdefault("losses", []).append(round(float(loss.detach()), 4))
        if state["step"] % config.eval_steps == 0 or state["step"] == config.max_steps:
            validate(state["step"])
        if state["step"] % config.checkpoint_steps == 0 or state["step"] == config.max_steps:
            save_checkpoint()
        if on_step is not None:
            on_step(state["step"])
    if state["history"][-1]["step"] != state["step"]:
        validate(state["step"])
        save_checkpoint()
    record = {
        "config": asdict(config),
        "data": json.loads((data / DATA_MANIFEST).read_text(encoding="utf-8")),
        "device": device,
        "steps": state["step"],
        "best_step": state["best_step"],
        "fusion": state["fusion"],
        "history": state["history"],
        "losses": state.get("losses", []),
    }
    (out / "training_run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return ListwiseResult(
        model_dir=str(best_dir),
        steps=state["step"],
        best_step=state["best_step"],
        selection=float(state["best_selection"]),
        fusion=(state["fusion"][0], float(state["fusion"][1])),
        history=state["history"],
    )
