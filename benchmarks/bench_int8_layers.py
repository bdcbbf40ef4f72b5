"""int8 with sensitive layers kept in fp32: does any split hold the parity probe? (issue #11, item 2)

For CPUs without bf16, int8 is the remaining fast path. Whole-model dynamic int8 moves rankings, so
this tries ONNX Runtime dynamic int8 (per-channel weights) on subsets of the encoder's matmuls, always
keeping the pooler and the classifier in fp32, and compares each with the fp32 ONNX graph of the same
model on the same inputs (real MS MARCO passages, 100 a query): speed ratio, minimum Spearman and
minimum top-10 overlap over the queries. The probe standard is Spearman >= 0.999 and identical top-10.

A second table asks whether any int8 scheme could hold the probe at all, whatever its kernel: torch
simulates it in fp32 (weights and activations rounded to int8 and back), so only its accuracy is
measured. Per-token activation scales are finer than ONNX Runtime's per-tensor ones, and SmoothQuant
moves activation outliers into the weights; its scales are calibrated on the very inputs it is
scored on, which makes it an upper bound. bf16 with an fp32 head, the path kept on bf16 CPUs, is the
yardstick. Prints both tables and writes JSON.

    python benchmarks/bench_int8_layers.py --out benchmarks/results/int8_layers.json
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, model_and_inputs_parser, msmarco_inputs, rank_agreement


def main() -> None:
    parser = model_and_inputs_parser(__doc__, "int8_layers.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization

    from ce_rerank_plugins import CrossEncoderReranker
    from ce_rerank_plugins.core._onnx import model_input_names, onnx_file

    reranker = CrossEncoderReranker(args.model, precision="fp32", device="cpu")
    # The package's own export (cached by weights hash), so every row starts from the graph it would run.
    fp32 = onnx_file(reranker.model, args.model, "onnx", model_input_names(reranker.model))
    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ("MatMul", "Gemm")]
    head = [n for n in matmuls if "classifier" in n or "pooler" in n]
    queries, docs = msmarco_inputs(args.data, args.queries)
    tokenizer = reranker.model.tokenizer
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads

    def run(path: Path) -> tuple[list[np.ndarray], float]:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        scores, start = [], time.perf_counter()
        for query in queries:
            enc = tokenizer(
                [query] * len(docs), docs, truncation=True, max_length=512, padding=True, return_tensors="np"
            )
            scores.append(session.run(None, {n: enc[n].astype(np.int64) for n in names})[0][:, 0])
        return scores, time.perf_counter() - start

    reference, reference_s = run(fp32)
    splits = {
        "every matmul": [],
        "all but attention output and FFN output": [
            n for n in matmuls if "attention/output" in n or "output/dense" in n
        ],
        "FFN input only": [n for n in matmuls if "intermediate" not in n],
        "Q/K/V projections only": [n for n in matmuls if not any(k in n for k in ("query", "key", "value"))],
    }
    rows: list[dict[str, Any]] = []
    for name, excluded in splits.items():
        target = Path(f"/tmp/ce_rerank_int8_{len(rows)}.onnx")
        quantization.quantize_dynamic(
            str(fp32),
            str(target),
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded + head,
        )
        scores, seconds = run(target)
        rhos, overlaps = rank_agreement(reference, scores)
        spearman, top10 = min(rhos), min(overlaps)
        rows.append(
            {
                "int8 matmuls": name,
                "int8 count": len(set(matmuls) - set(excluded) - set(head)),
                "speed vs ONNX fp32": round(reference_s / seconds, 2),
                "spearman min": round(spearman, 5),
                "top10 min": top10,
                "holds probe": spearman >= 0.999 and top10 == 1.0,
            }
        )
        print(rows[-1], flush=True)
    simulated = simulated_int8_accuracy(reranker.model, queries, docs)
    record = {
        "model": args.model,
        "queries": len(queries),
        "candidates": len(docs),
        "threads": args.threads,
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
        "simulated_accuracy_rows": simulated,
    }
    args.out.write_text(json.dumps(record, indent=2))
    print(
        "| int8 matmuls | count | speed vs ONNX fp32 | Spearman min | top-10 min | holds probe |\n"
        "|---|---:|---:|---:|---:|---|"
    )
    for r in rows:
        print(
            f"| {r['int8 matmuls']} | {r['int8 count']} | {r['speed vs ONNX fp32']:.2f}x | {r['spearman min']:.5f} | "
            f"{r['top10 min']:.2f} | {'yes' if r['holds probe'] else 'no'} |"
        )
    print(
        "\n| scheme (simulated, accuracy only) | Spearman min | top-10 min | probe Spearman min | holds probe |\n"
        "|---|---:|---:|---:|---|"
    )
    for r in simulated:
        print(
            f"| {r['scheme']} | {r['spearman min']:.5f} | {r['top10 min']:.2f} | {r['probe spearman min']:.3f} | "
            f"{'yes' if r['holds probe'] else 'no'} |"
        )
    print(f"wrote {args.out}")


def simulated_int8_accuracy(cross_encoder: Any, queries: list[str], docs: list[str]) -> list[dict[str, Any]]:
    """Rank agreement with fp32 of int8 schemes simulated in torch, on the inputs and on the probe set."""
    import copy

    import torch

    from ce_rerank_plugins.core._loading import to_precision
    from ce_rerank_plugins.core._probe import PROBE_QUERIES

    tokenizer, model = cross_encoder.tokenizer, cross_encoder.model.float().eval()
    lists = [(q, docs) for q in queries] + [(q, list(p)) for q, p in PROBE_QUERIES]
    n_inputs = len(queries)

    def scores(m: torch.nn.Module) -> list[np.ndarray]:
        out = []
        with torch.inference_mode():
            for query, passages in lists:
                enc = tokenizer(
                    [query] * len(passages),
                    passages,
                    truncation=True,
                    max_length=512,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(m(**enc).logits[:, 0].float().numpy())
        return out

    def encoder_linears(m: torch.nn.Module) -> list[tuple[torch.nn.Module, str, str]]:
        return [
            (parent, child, f"{name}.{child}")
            for name, parent in m.named_modules()
            for child, module in parent.named_children()
            if isinstance(module, torch.nn.Linear) and ".encoder." in f".{name}."
        ]

    def int8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return torch.round(x / scale).clamp(-127, 127) * scale

    class FakeInt8Linear(torch.nn.Module):
        """Per-output-channel int8 weights; int8 activations, per token or per tensor, after smoothing."""

        def __init__(self, linear: torch.nn.Linear, per_token: bool, smooth: torch.Tensor | None) -> None:
            super().__init__()
            self.bias, self.per_token = linear.bias, per_token
            self.smooth = torch.ones(linear.in_features) if smooth is None else smooth
            w = linear.weight.detach() * self.smooth
            self.weight = int8(w, w.abs().amax(1, keepdim=True).clamp_min(1e-8) / 127)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x / self.smooth
            peak = x.abs().amax(-1, keepdim=True) if self.per_token else x.abs().amax()
            return torch.nn.functional.linear(int8(x, peak.clamp_min(1e-8) / 127), self.weight, self.bias)

    # Per-input-channel activation maxima for SmoothQuant, from the inputs themselves (an upper bound).
    act_max: dict[str, torch.Tensor] = {}
    hooks = []
    for parent, child, full in encoder_linears(model):

        def record(_m: Any, inputs: tuple[torch.Tensor, ...], _o: Any, full: str = full) -> None:
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            act_max[full] = torch.maximum(act_max.get(full, seen), seen)

        hooks.append(getattr(parent, child).register_forward_hook(record))
    reference = scores(model)
    for hook in hooks:
        hook.remove()

    def quantised(per_token: bool, alpha: float | None = None, keep_fp32: tuple[str, ...] = ()) -> torch.nn.Module:
        m = copy.deepcopy(model)
        for parent, child, full in encoder_linears(m):
            linear = getattr(parent, child)
            if any(k in full for k in keep_fp32):
                continue
            smooth = None
            if alpha is not None:
                smooth = act_max[full].clamp_min(1e-5) ** alpha / linear.weight.abs().amax(0).clamp_min(1e-5) ** (
                    1 - alpha
                )
            setattr(parent, child, FakeInt8Linear(linear, per_token, smooth))
        return m

    bf16 = to_precision(copy.deepcopy(model), "bf16")  # the package's own bf16 cast, head kept in fp32
    schemes = {
        "bf16 encoder, fp32 head (the kept path, for scale)": bf16,
        "int8 per-tensor activations (as ONNX Runtime), every linear": quantised(per_token=False),
        "int8 per-token activations, every linear": quantised(per_token=True),
        "int8 per-token, attention output and FFN output kept fp32": quantised(
            per_token=True, keep_fp32=("attention.output.dense", "output.dense")
        ),
        "SmoothQuant alpha 0.5 + per-token, every linear (upper bound)": quantised(per_token=True, alpha=0.5),
        "SmoothQuant alpha 0.8 + per-token, every linear (upper bound)": quantised(per_token=True, alpha=0.8),
    }
    rows = []
    for name, m in schemes.items():
        got = scores(m)
        rho, top10 = rank_agreement(reference, got)
        row = {
            "scheme": name,
            "spearman min": round(min(rho[:n_inputs]), 5),
            "top10 min": min(top10[:n_inputs]),
            "probe spearman min": round(min(rho[n_inputs:]), 5),
        }
        row["holds probe"] = row["spearman min"] >= 0.999 and row["top10 min"] == 1.0 and min(rho[n_inputs:]) > 0.999999
        rows.append(row)
        print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
