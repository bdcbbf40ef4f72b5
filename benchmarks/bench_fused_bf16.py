"""A fused bf16 path: do oneDNN's fused linear kernels speed up the default path? (issue #11, item 3)

transformers runs each bf16 linear layer as ``addmm``, which copies the bias into the output before the
GEMM, and GELU as a separate pass over the FFN's widest tensor. oneDNN can add the bias, and apply GELU,
inside the GEMM (``torch.ops.mkldnn._linear_pointwise``, the kernel torch.compile's CPU backend emits).
This swaps the encoder's linear layers for that kernel, with the bias alone or with GELU too. It times each
variant against the default bf16 path in the same process, in alternating rounds. Then it compares each
variant's ranking with fp32 on MS MARCO inputs and on the probe set. Prints a table and writes JSON.

    CE_RERANK_THREADS=1 python benchmarks/bench_fused_bf16.py --out benchmarks/results/fused_bf16.json
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import time
from typing import Any

import numpy as np
from _common import machine, model_and_inputs_parser, msmarco_inputs, rank_agreement


def main() -> None:
    parser = model_and_inputs_parser(__doc__, "fused_bf16.json")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch

    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.core._probe import PROBE_QUERIES

    class FusedLinear(torch.nn.Module):
        """A bf16 linear layer whose bias (and, optionally, GELU) oneDNN applies inside the GEMM."""

        def __init__(self, linear: torch.nn.Linear, gelu: bool) -> None:
            super().__init__()
            self.weight, self.bias, self.gelu = linear.weight, linear.bias, gelu

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.gelu:  # exact (erf) GELU, as BERT's "gelu"
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], "none")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def fused(model: torch.nn.Module, gelu: bool) -> torch.nn.Module:
        model = copy.deepcopy(model)
        if gelu:  # BERT-style FFN input: `dense`, then `intermediate_act_fn`
            for module in list(model.modules()):
                if isinstance(getattr(module, "dense", None), torch.nn.Linear) and hasattr(
                    module, "intermediate_act_fn"
                ):
                    module.dense = FusedLinear(module.dense, gelu=True)
                    module.intermediate_act_fn = torch.nn.Identity()
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.Linear) and child.weight.dtype == torch.bfloat16:
                    setattr(module, name, FusedLinear(child, gelu=False))
        return model

    queries, docs = msmarco_inputs(args.data, args.queries)
    lists = [[(q, d) for d in docs] for q in queries]
    probe = [[(q, p) for p in passages] for q, passages in PROBE_QUERIES]
    options: dict[str, Any] = {"device": "cpu", "micro_batching": False, "score_mode": "logits"}
    reference = CrossEncoderReranker(args.model, precision="fp32", **options)
    default = CrossEncoderReranker(args.model, precision="bf16", **options)
    # The transformers model inside the shared CrossEncoder, and where it hangs, so variants can be swapped in.
    hf = next(m for m in default.model.modules() if hasattr(m, "config") and hasattr(m, "classifier"))
    parent, attr = next((p, n) for p in default.model.modules() for n, c in p.named_children() if c is hf)
    variants = {"default bf16 (addmm, separate GELU)": hf}
    available = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
    if available:
        variants["fused bias"] = fused(hf, gelu=False)
        variants["fused bias + GELU"] = fused(hf, gelu=True)

    ref_scores = [reference.predict(p) for p in lists + probe]
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    scores: dict[str, list[np.ndarray]] = {}
    for _ in range(args.rounds):
        for name, model in variants.items():
            setattr(parent, attr, model)
            default.predict(lists[0][:16])  # warm this variant's kernels
            start = time.perf_counter()
            for pairs in lists:
                default.predict(pairs)
            seconds[name].append((time.perf_counter() - start) / len(lists))
            scores.setdefault(name, [default.predict(p) for p in lists + probe])
    setattr(parent, attr, hf)

    base = statistics.median(seconds["default bf16 (addmm, separate GELU)"])
    rows = []
    for name in variants:
        rho, top10 = rank_agreement(ref_scores, scores[name])
        median = statistics.median(seconds[name])
        rows.append(
            {
                "variant": name,
                "seconds_per_query": round(median, 4),
                "speed_vs_default": round(base / median, 3),
                "spearman_vs_fp32_min": round(min(rho[: len(lists)]), 5),
                "top10_vs_fp32_min": min(top10[: len(lists)]),
                "probe_spearman_vs_fp32_min": round(min(rho[len(lists) :]), 5),
                "rounds_seconds": [round(s, 4) for s in seconds[name]],
            }
        )
    record = {
        "model": args.model,
        "queries": len(lists),
        "candidates": len(docs),
        "threads": torch.get_num_threads(),
        "linear_pointwise_available": available,
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(
        "| variant | s / query | vs default | Spearman vs fp32 (min) | top-10 (min) | probe Spearman (min) |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['variant']} | {r['seconds_per_query']:.3f} | {r['speed_vs_default']:.2f}x | "
            f"{r['spearman_vs_fp32_min']:.5f} | {r['top10_vs_fp32_min']:.2f} | {r['probe_spearman_vs_fp32_min']:.3f} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
