"""Evaluation on real IR data (BEIR layout), with metrics from ranx (the ``eval`` extra)."""

from __future__ import annotations

from ce_rerank_plugins.evaluation.beir import BeirDataset, load_beir, read_jsonl, read_qrels, read_records

__all__ = ["BeirDataset", "load_beir", "read_jsonl", "read_qrels", "read_records"]
