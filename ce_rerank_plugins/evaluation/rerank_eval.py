"""Does reranking pay? Retrieval alone vs retrieval + rerank at several depths, on a BEIR dataset.

Quality comes from one cross-encoder pass over the deepest candidate list per query (pointwise scores
do not depend on the depth); latency per depth is timed separately on a sample of queries.
Metrics are computed by ranx.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ce_rerank_plugins._optional import require
from ce_rerank_plugins.core import CrossEncoderReranker, Fusion, fuse_scores
from ce_rerank_plugins.evaluation.beir import BeirDataset, document_text
from ce_rerank_plugins.retrieval import FaissIndex, RetrievalMode, SearchHit

logger = logging.getLogger(__name__)

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")


@dataclass
class StageResult:
    """Metrics and latency of one configuration (retrieval only, or rerank at one depth).

    A rerank row's latency is None when no query was timed (``latency_queries=0``): it is not the
    retrieval's figure, which would read as reranking for free.
    """

    name: str
    depth: int
    metrics: dict[str, float]
    latency_ms_median: float | None
    latency_ms_p95: float | None


@dataclass
class EvaluationReport:
    """Everything ``ce-rerank eval`` writes to JSON."""

    dataset: str
    queries: int
    embedder: str
    reranker: str
    stages: list[StageResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (what ``ce-rerank eval --out`` writes)."""
        return {
            "dataset": self.dataset,
            "queries": self.queries,
            "embedder": self.embedder,
            "reranker": self.reranker,
            "stages": [vars(s) for s in self.stages],
        }


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ranx_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@10 and Recall@100 of ``run`` with ranx."""
    ranx = require("ranx", "eval", purpose="evaluation")
    scores = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(METRICS), make_comparable=True)
    return {m: float(scores[m]) for m in METRICS}


def index_corpus(
    corpus: Mapping[str, Mapping[str, str]],
    embedder: str | None = None,
    *,
    show_progress: bool | None = None,
    lexical: bool = False,
) -> FaissIndex:
    """An exact FAISS index of a BEIR-style corpus (title and text embedded together, as BEIR does)."""
    index = FaissIndex(embedder, show_progress=show_progress, lexical=lexical)
    ids = list(corpus)
    index.add([document_text(corpus[i]) for i in ids], ids=ids)
    return index


def build_index(
    dataset: BeirDataset, embedder: str | None = None, *, show_progress: bool | None = None, lexical: bool = False
) -> FaissIndex:
    """An exact FAISS index of the dataset's corpus (see :func:`index_corpus`); ``lexical`` adds BM25."""
    return index_corpus(dataset.corpus, embedder, show_progress=show_progress, lexical=lexical)


def evaluate_reranking(
    dataset: BeirDataset,
    index: FaissIndex,
    reranker: CrossEncoderReranker | None,
    *,
    depths: Sequence[int] = (10, 20, 50, 100),
    latency_queries: int = 20,
    show_progress: bool = True,
    modes: Sequence[RetrievalMode] = ("dense",),
) -> EvaluationReport:
    """Evaluate retrieval alone and retrieval + rerank at each depth in ``depths``, for each first-stage mode.

    With one mode, stages are named ``retrieval`` and ``rerank@N``; with several, ``<mode>`` and
    ``<mode> rerank@N``. When the reranker fuses with the first stage (the bundled model does), every
    rerank row also appears fused (``rerank@N+weighted(0.5)``). A (query, passage) pair is scored once,
    whichever modes retrieve it.
    """
    if not dataset.queries:
        msg = f"dataset {dataset.name!r} has no judged queries"
        raise ValueError(msg)
    depths = sorted(set(depths))
    if depths and depths[0] < 1:
        msg = f"depths must be >= 1, got {depths}"
        raise ValueError(msg)
    if not modes:
        msg = "modes must name at least one first-stage mode"
        raise ValueError(msg)
    k = max([100, *depths])
    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    report = EvaluationReport(
        dataset=dataset.name,
        queries=len(qids),
        embedder=index.embedder.id,
        reranker=reranker.key.model if reranker is not None else "",
    )
    ce_cache: dict[tuple[str, str], float] = {}
    for mode in modes:
        prefix = "" if len(modes) == 1 else f"{mode} "
        retrieval_ms: list[float] = []
        hits_per_query = []
        for text in texts:
            start = time.perf_counter()
            hits_per_query.append(index.search(text, k=k, mode=mode))
            retrieval_ms.append((time.perf_counter() - start) * 1000)
        retrieval_run = {q: {h.id: h.score for h in hits} for q, hits in zip(qids, hits_per_query, strict=True)}
        first = StageResult(
            prefix.strip() or "retrieval",
            0,
            ranx_metrics(dataset.qrels, retrieval_run),
            statistics.median(retrieval_ms),
            _p95(retrieval_ms),
        )
        report.stages.append(first)
        if reranker is None or not depths:
            continue
        _rerank_rows(
            report,
            reranker,
            dataset,
            qids,
            texts,
            hits_per_query,
            depths,
            latency_queries,
            show_progress,
            prefix,
            first,
            ce_cache,
        )
    return report


def _rerank_rows(
    report: EvaluationReport,
    reranker: CrossEncoderReranker,
    dataset: BeirDataset,
    qids: list[str],
    texts: list[str],
    hits_per_query: list[list[SearchHit]],
    depths: list[int],
    latency_queries: int,
    show_progress: bool,
    prefix: str,
    first: StageResult,
    ce_cache: dict[tuple[str, str], float],
) -> None:
    deepest = max(depths)
    ce_scores: dict[str, list[float]] = {}
    for qid, text, hits in tqdm(
        list(zip(qids, texts, hits_per_query, strict=True)),
        desc=f"Reranking {prefix}".strip(),
        disable=not show_progress,
    ):
        todo = [h for h in hits[:deepest] if (qid, h.id) not in ce_cache]
        if todo:
            for h, score in zip(todo, reranker.predict([(text, h.text) for h in todo]).tolist(), strict=True):
                ce_cache[(qid, h.id)] = float(score)
        ce_scores[qid] = [ce_cache[(qid, h.id)] for h in hits[:deepest]]
    sample = list(zip(texts, hits_per_query, strict=True))[:latency_queries]
    # Rows without fusion, then with the reranker's fusion when it has one (the default pipeline's).
    variants: list[tuple[str, Fusion, float]] = [("", "none", 1.0)]
    if reranker.fusion != "none":
        variants.append((f"+{reranker.fusion}({reranker.fusion_weight:g})", reranker.fusion, reranker.fusion_weight))
    for depth in depths:
        latencies = []
        for text, hits in sample:
            start = time.perf_counter()
            reranker.rank(text, [h.text for h in hits[:depth]], first_stage_scores=[h.score for h in hits[:depth]])
            latencies.append((time.perf_counter() - start) * 1000)
        for suffix, method, weight in variants:
            run: dict[str, dict[str, float]] = {}
            for qid, hits in zip(qids, hits_per_query, strict=True):
                n = min(depth, len(hits))
                fused = fuse_scores(
                    np.asarray(ce_scores[qid][:n]),
                    np.asarray([h.score for h in hits[:n]], dtype=np.float64),
                    fusion=method,
                    weight=weight,
                )
                head = np.argsort(-fused, kind="stable").tolist()
                ordered = [hits[i].id for i in head] + [h.id for h in hits[n:]]
                run[qid] = {doc: float(len(ordered) - pos) for pos, doc in enumerate(ordered)}
            report.stages.append(
                StageResult(
                    f"{prefix}rerank@{depth}{suffix}",
                    depth,
                    ranx_metrics(dataset.qrels, run),
                    _plus(statistics.median(latencies), first.latency_ms_median) if latencies else None,
                    _plus(_p95(latencies), first.latency_ms_p95) if latencies else None,
                )
            )


def _plus(rerank_ms: float, retrieval_ms: float | None) -> float:
    return rerank_ms + (retrieval_ms or 0.0)


def plot_report(report: EvaluationReport, path: str | Path) -> Path:
    """Quality (nDCG@10, MRR@10) against rerank depth, with end-to-end latency on a second axis."""
    require("matplotlib", "eval", purpose="plot_report")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    head = report.stages[0].name  # with several first-stage modes, plot the first one's rows
    mine = [s for s in report.stages if head == "retrieval" or s.name == head or s.name.startswith(f"{head} ")]
    plain = [s for s in mine if "+" not in s.name]
    fused = [mine[0], *(s for s in mine if "+" in s.name)]
    depths = [s.depth for s in plain]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for metric, style in (("ndcg@10", "o-"), ("mrr@10", "s--")):
        ax.plot(depths, [s.metrics[metric] for s in plain], style, label=metric)
        if len(fused) > 1:
            suffix = fused[1].name.split("+", 1)[1]
            ax.plot(
                [s.depth for s in fused],
                [s.metrics[metric] for s in fused],
                style,
                alpha=0.5,
                label=f"{metric} +{suffix}",
            )
    ax.set_xlabel("rerank depth (0 = bi-encoder retrieval only)")
    ax.set_ylabel("quality")
    ax.set_xticks(depths)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    timed = [(s.depth, s.latency_ms_median) for s in plain if s.latency_ms_median is not None]
    if len(timed) > 1:  # the retrieval row alone is no curve: rerank latency was not measured
        ax2 = ax.twinx()
        ax2.plot(*zip(*timed, strict=True), "^:", color="tab:red", label="latency (median)")
        ax2.set_ylabel("ms per query (retrieve + rerank)", color="tab:red")
        lines2 = ax2.get_legend_handles_labels()
        lines = (lines[0] + lines2[0], lines[1] + lines2[1])
    ax.legend(lines[0], lines[1], loc="lower right")
    title = f"{report.dataset}: {report.queries} queries, reranker {Path(report.reranker).name or 'none'}"
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
