"""Held-out questions (a recipe build's) re-ranked over BM25's top 20: distractors that share the question's words.

    python benchmarks/default_model/cpu_run_v13/bm25_holdout.py runs/v13/data OUT.json MODEL...

Diagnostic only (no selection): nDCG@10 per set for BM25, the bi-encoder's cosine and each model alone.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ce_rerank_plugins.evaluation.beir import document_text, load_beir
from ce_rerank_plugins.retrieval import Embedder, LexicalIndex
from ce_rerank_plugins.training.recipe import _ndcg_mrr, held_out_metrics, read_validation

ROOT = Path("../shared/data")  # run from the repository root
DIRS = {"scifact": ROOT / "scifact"}
torch.set_num_threads(2)
data, out, models = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
val, _ = read_validation(data)
sets = sorted({e["set"] for e in val})
texts: dict[str, str] = {}
bm25_val = []
for name in sets:
    ds = load_beir(DIRS.get(name, ROOT / "train" / name), "train")
    ids = list(ds.corpus)
    docs = [document_text(ds.corpus[d]) for d in ids]
    index = LexicalIndex()
    index.set_tokens(range(len(docs)), index.tokenize(docs))
    for e in (e for e in val if e["set"] == name):
        hits = index.search(e["query"], 20)
        keys = [f"{name}/{ids[i]}" for i, _ in hits]
        for (i, _), k in zip(hits, keys, strict=True):
            texts[k] = docs[i]
        bm25_val.append({**e, "docs": keys, "first_stage": [float(s) for _, s in hits]})
emb = Embedder()
rows = {}
dense = {}
for e in bm25_val:
    q = np.asarray(emb.encode([e["query"]]), dtype=np.float32)[0]
    d = np.asarray(emb.encode([texts[k] for k in e["docs"]]), dtype=np.float32)
    nd, _ = _ndcg_mrr(np.argsort(-(d @ q), kind="stable"), e["docs"], e["relevant"])
    dense.setdefault(e["set"], []).append(nd)
recall = {
    s: float(np.mean([any(k in e["relevant"] for k in e["docs"]) for e in bm25_val if e["set"] == s])) for s in sets
}
rows["dense cosine"] = {s: round(float(np.mean(v)), 4) for s, v in dense.items()}
for m in models:
    tok = AutoTokenizer.from_pretrained(m)
    model = AutoModelForSequenceClassification.from_pretrained(m, num_labels=1, dtype=torch.float32)
    metrics = held_out_metrics(model, tok, bm25_val, texts, max_length=192)
    rows.setdefault("bm25", {s: metrics[f"{s}/first/ndcg@10"] for s in sets})
    rows[m] = {s: metrics[f"{s}/ce/ndcg@10"] for s in sets}
    print(m, metrics["mean/ce/ndcg@10"], flush=True)
for r in rows.values():
    r["mean"] = round(float(np.mean([r[s] for s in sets])), 4)
print(f"{'':60s}" + "".join(f"{s[:12]:>14s}" for s in [*sets, "mean"]))
print(f"{'answer in BM25 top 20':60s}" + "".join(f"{recall[s]:14.2f}" for s in sets))
for label, r in rows.items():
    print(f"{label[-60:]:60s}" + "".join(f"{r[s]:14.4f}" for s in [*sets, "mean"]))
out.write_text(json.dumps({"data": data, "recall@20": recall, "ndcg@10": rows}, indent=1))
