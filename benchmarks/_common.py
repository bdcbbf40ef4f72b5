"""Helpers shared by the benchmark scripts: machine description, timing, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
#: The model the package ships, the default subject of the speed benchmarks.
SHIPPED_MODEL = REPO / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline"


def model_and_inputs_parser(description: str | None, out_name: str) -> argparse.ArgumentParser:
    """The options every reranking benchmark takes: model, MS MARCO inputs, how many queries, output."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(SHIPPED_MODEL))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "msmarco"))
    parser.add_argument("--queries", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / out_name)
    return parser


def msmarco_inputs(data: str, queries: int, passages: int = 100) -> tuple[list[str], list[str]]:
    """Query texts and the first passages of a BEIR set, as inputs only (no judgement is read)."""
    from ce_rerank_plugins.evaluation.beir import load_beir

    loaded = load_beir(data, "test")
    return list(loaded.queries.values())[:queries], [loaded.doc_text(d) for d in list(loaded.corpus)[:passages]]


def machine() -> dict[str, Any]:
    from ce_rerank_plugins.core._hardware import cpu_flags, cpu_has_native_bf16

    flags = cpu_flags()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "native_bf16_used": cpu_has_native_bf16(),
        "processor": platform.processor() or platform.machine(),
    }


def rank_agreement(reference: list[Any], candidate: list[Any]) -> tuple[list[float], list[float]]:
    """Per list of scores: Spearman with the reference, and the overlap of the two top-10s (top-n if shorter)."""
    import numpy as np
    from scipy.stats import spearmanr

    rhos, overlaps = [], []
    for a, b in zip(reference, candidate, strict=True):
        rhos.append(float(spearmanr(a, b).statistic))
        n = min(10, len(a))
        overlaps.append(len(set(np.argsort(-a)[:n]) & set(np.argsort(-b)[:n])) / n)
    return rhos, overlaps


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {path}")
