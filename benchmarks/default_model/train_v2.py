"""Recipe v2 trainer: localised contrastive estimation plus listwise distillation from the hybrid teacher.

Reads ``prepare_v2.py``'s groups. Per group (known positives first, then the teacher's top others):

    loss = -log(sum_pos exp(s) / sum_all exp(s))  +  distill_weight * KL(softmax(t_neg / tau) || softmax(s_neg))

where ``s`` are the cross-encoder's logits and ``t`` the teacher's fused scores; the second term is taken
over the candidates that are not known positives, so it teaches their order, not the positive again.
Groups without teacher scores (Climate-FEVER) get the first term only.

It needs only torch and transformers (a GPU machine here has no ``datasets``), runs on CPU or CUDA,
stops each variant at its share of ``--time-budget`` and keeps the epoch with the best validation
nDCG@10 (held-out *training* queries; see ``prepare_v2.py``). The result is a plain transformers
sequence-classification checkpoint that ``sentence_transformers.CrossEncoder(path)`` loads.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def read_validation(data: Path, max_val: int = 0) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The validation groups (with ``max_val``, a quick check: half from each set) and every passage text."""
    val = read_jsonl(data / "val_groups.jsonl.gz")
    if max_val:
        val = val[: max_val // 2] + [v for v in val if v["set"] != val[0]["set"]][: max_val // 2]
    return val, {r["key"]: r["text"] for r in read_jsonl(data / "texts.jsonl.gz")}


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def minmax(x: np.ndarray) -> np.ndarray:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.ones_like(x)


@torch.no_grad()
def score_pairs(model: Any, tok: Any, pairs: list[tuple[str, str]], args: argparse.Namespace) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(pairs), args.eval_batch):
        chunk = pairs[i : i + args.eval_batch]
        enc = tok(
            [q for q, _ in chunk],
            [d for _, d in chunk],
            truncation="longest_first",
            max_length=args.eval_max_length,
            padding=True,
            return_tensors="pt",
        ).to(args.device)
        with torch.autocast(args.device_type, dtype=torch.bfloat16, enabled=args.bf16):
            out.append(model(**enc).logits[:, 0].float().cpu())
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0)


def validate(model: Any, tok: Any, val: list[dict[str, Any]], texts: dict[str, str], args: argparse.Namespace) -> dict:
    """nDCG@10 of the first stage, the cross-encoder alone and a 0.5/0.5 min-max fusion, per set and mode."""
    pairs, spans = [], []
    for entry in val:
        for mode in ("dense", "hybrid"):
            start = len(pairs)
            pairs += [(entry["query"], texts[k]) for k, _ in entry[mode][: args.val_depth]]
            spans.append((entry, mode, start, len(pairs)))
    scores = score_pairs(model, tok, pairs, args)
    metrics: dict[str, list[float]] = {}
    dumped: dict[str, dict[str, list[float]]] = {}
    for entry, mode, a, b in spans:
        keys = [k for k, _ in entry[mode][: args.val_depth]]
        first = np.array([s for _, s in entry[mode][: args.val_depth]], dtype=np.float64)
        ce = scores[a:b].astype(np.float64)
        fused = 0.5 * minmax(ce) + 0.5 * minmax(first)
        for name, s in (("first", first), ("ce", ce), ("fused", fused)):
            ranked = [keys[i] for i in np.argsort(-s, kind="stable")]
            metrics.setdefault(f"{entry['set']}/{mode}/{name}", []).append(ndcg10(ranked, entry["rel"]))
        dumped.setdefault(entry["qid"], {})[mode] = [round(float(x), 5) for x in ce]
    summary = {k: round(float(np.mean(v)), 4) for k, v in sorted(metrics.items())}
    sets = sorted({e["set"] for e in val})
    summary["selection"] = round(float(np.mean([summary[f"{s}/dense/ce"] for s in sets])), 4)
    return {"metrics": summary, "scores": dumped}


def train_variant(name: str, distill: float, lr: float, data: dict, args: argparse.Namespace, budget: float) -> dict:
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSequenceClassification.from_pretrained(args.base, num_labels=1, dtype=torch.float32)
    model.to(args.device).train()
    groups, texts, val = data["groups"], data["texts"], data["val"]
    steps_per_epoch = math.ceil(len(groups) / args.groups_per_step)
    # The schedule's length is re-planned once the step time is known, so that a run cut by the time
    # budget still ends its linear decay at zero instead of stopping at a high learning rate.
    plan = {"total": steps_per_epoch * args.epochs}
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, int(0.05 * plan["total"]))
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min((s + 1) / warm, max(0.0, (plan["total"] - s) / max(1, plan["total"] - warm)))
    )
    t0 = time.perf_counter()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"selection": -1.0}
    if args.initial_validation:
        record = validate(model, tok, val, texts, args)
        history.append({"epoch": 0, "step": 0, **record["metrics"]})
        print(name, "epoch 0", json.dumps(record["metrics"]), flush=True)
    step, stopped = 0, False
    t_train = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = list(range(len(groups)))
        rng.shuffle(order)
        losses = []
        for s in range(steps_per_epoch):
            batch = [groups[i] for i in order[s * args.groups_per_step : (s + 1) * args.groups_per_step]]
            queries, docs, sizes = [], [], []
            for g in batch:
                queries += [g["query"]] * len(g["docs"])
                docs += [texts[k] for k in g["docs"]]
                sizes.append(len(g["docs"]))
            enc = tok(
                queries, docs, truncation="longest_first", max_length=args.max_length, padding=True, return_tensors="pt"
            ).to(args.device)
            with torch.autocast(args.device_type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(**enc).logits[:, 0].float()
            loss = logits.new_zeros(())
            for g, s_g in zip(batch, torch.split(logits, sizes), strict=True):
                if not g.get("contrastive", True):
                    # v3 web groups: the teacher's order over every candidate, source included.
                    target = F.softmax(torch.tensor(g["teacher"], device=logits.device) / args.tau, dim=0)
                    loss = loss + args.kd_weight * F.kl_div(F.log_softmax(s_g, dim=0), target, reduction="sum")
                    continue
                labels = torch.tensor(g["labels"], device=logits.device)
                log_p = F.log_softmax(s_g, dim=0)
                loss = loss - torch.logsumexp(log_p[labels > 0], dim=0)
                negatives = labels == 0
                if distill > 0 and g["teacher"] is not None and int(negatives.sum()) > 1:
                    # The teacher's order over the candidates that are not known positives.
                    teacher = torch.tensor(g["teacher"], device=logits.device)[negatives]
                    target = F.softmax(teacher / args.tau, dim=0)
                    loss = loss + distill * F.kl_div(F.log_softmax(s_g[negatives], dim=0), target, reduction="sum")
            loss = loss / len(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            losses.append(float(loss))
            step += 1
            if step == 30:
                per_step = (time.perf_counter() - t_train) / 30
                affordable = int((budget - (time.perf_counter() - t0)) / (per_step * 1.15)) + step
                plan["total"] = max(step + 1, min(plan["total"], affordable))
                print(name, f"{per_step * 1000:.0f} ms/step; planned {plan['total']} steps", flush=True)
            if step >= plan["total"]:
                stopped = True
                break
            if time.perf_counter() - t0 > budget:
                stopped = True
                break
        record = validate(model, tok, val, texts, args)
        entry = {"epoch": epoch, "step": step, "loss": round(float(np.mean(losses)), 4), **record["metrics"]}
        history.append(entry)
        print(name, f"epoch {epoch} ({time.perf_counter() - t0:.0f} s)", json.dumps(entry), flush=True)
        if args.keep == "last" or record["metrics"]["selection"] > best["selection"]:
            best = {
                "selection": record["metrics"]["selection"],
                "epoch": epoch,
                "state": copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()}),
                "scores": record["scores"],
                "metrics": record["metrics"],
            }
        if stopped:
            break
    return {
        "name": name,
        "distill_weight": distill,
        "lr": lr,
        "history": history,
        "best": best,
        "seconds": round(time.perf_counter() - t0, 1),
        "tok": tok,
        "model": model,
    }


def save_fp16(model: Any, folder: Path) -> None:
    """Store the weights in fp16 (half the size to carry) but declare fp32 as the dtype to load in.

    transformers loads a checkpoint in the dtype its config names (``dtype="auto"``), so a plain
    ``CrossEncoder(folder)`` would otherwise run fp16, which a CPU emulates about 10x slower than fp32.
    """
    model.to("cpu").half().save_pretrained(folder)
    mark_fp32_load(folder)


def mark_fp32_load(folder: Path) -> None:
    """Make ``config.json`` name fp32 as the dtype to load ``folder``'s (fp16-stored) weights in."""
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default="a:1.0:4e-5", help="name:distill_weight:lr, comma-separated")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--groups-per-step", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--eval-max-length", type=int, default=512)
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--val-depth", type=int, default=100)
    parser.add_argument("--tau", type=float, default=0.1)
    parser.add_argument("--time-budget", type=float, default=300.0, help="seconds of training, all variants")
    parser.add_argument("--max-groups", type=int, default=0, help="for a quick check: use only this many groups")
    parser.add_argument("--max-val", type=int, default=0)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--kd-weight", type=float, default=1.0, help="v3: weight of the web groups' distillation")
    parser.add_argument(
        "--keep",
        choices=("best", "last"),
        default="best",
        help="which epoch to keep: the best on validation, or the last (v3 records validation, does not use it)",
    )
    parser.add_argument("--no-initial-validation", dest="initial_validation", action="store_false")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    args.device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    args.bf16 = args.device_type == "cuda"
    if args.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    groups = read_jsonl(args.data / "train_groups.jsonl.gz")
    if args.max_groups:
        groups = groups[: args.max_groups]
    val, texts = read_validation(args.data, args.max_val)
    data = {"groups": groups, "texts": texts, "val": val}
    variants = [v.split(":") for v in args.variants.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, distill, lr in variants:
        results.append(train_variant(name, float(distill), float(lr), data, args, args.time_budget / len(variants)))
    chosen = max(results, key=lambda r: r["best"]["selection"])
    model, tok = chosen["model"], chosen["tok"]
    model.load_state_dict(chosen["best"]["state"])
    model.config.id2label = {0: "relevance"}
    model.config.label2id = {"relevance": 0}
    final = args.out / "model"
    save_fp16(model, final)
    tok.save_pretrained(final)
    run = {
        "recipe": (
            "v2: LCE + listwise distillation from the hybrid (BM25 + dense) teacher"
            + (
                "; v3 web groups distilled from the bi-encoder"
                if any(not g.get("contrastive", True) for g in groups)
                else ""
            )
        ),
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if args.device_type == "cuda" else "cpu",
        "train_groups": len(groups),
        "train_pairs": sum(len(g["docs"]) for g in groups),
        "variants": [
            {k: r[k] for k in ("name", "distill_weight", "lr", "history", "seconds")}
            | {"best_epoch": r["best"]["epoch"], "best_selection": r["best"]["selection"]}
            for r in results
        ],
        "chosen": chosen["name"],
        "chosen_epoch": chosen["best"]["epoch"],
        "chosen_validation": chosen["best"]["metrics"],
    }
    (args.out / "training_run.json").write_text(json.dumps(run, indent=2))
    with gzip.open(args.out / "val_scores.json.gz", "wt") as fh:
        json.dump(chosen["best"]["scores"], fh)
    print("chosen", chosen["name"], "epoch", chosen["best"]["epoch"], json.dumps(chosen["best"]["metrics"]))


if __name__ == "__main__":
    main()
