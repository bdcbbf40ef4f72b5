"""int8 with sensitive layers kept in fp32: does any split hold the parity probe? (issue #11, item 2)

For CPUs without bf16, int8 is the remaining fast path. Whole-model dynamic int8 moves rankings, so
this tries ONNX Runtime dynamic int8 (per-channel weights) on subsets of the encoder's matmuls, always
keeping the pooler and the classifier in fp32, and compares each with the fp32 ONNX graph of the same
model on the same inputs (real MS MARCO passages, 100 a query): speed ratio, minimum Spearman and
minimum top-10 overlap over the queries. The probe standard is Spearman >= 0.999 and identical top-10.
Prints a table and writes JSON.

    python benchmarks/bench_int8_layers.py --out benchmarks/results/int8_layers.json
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, model_and_inputs_parser, msmarco_inputs


def main() -> None:
    parser = model_and_inputs_parser(__doc__, "int8_layers.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime import quantization
    from scipy.stats import spearmanr

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
        spearman = min(float(spearmanr(a, b).correlation) for a, b in zip(reference, scores, strict=True))
        top10 = min(
            len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10
            for a, b in zip(reference, scores, strict=True)
        )
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
    record = {
        "model": args.model,
        "queries": len(queries),
        "candidates": len(docs),
        "threads": args.threads,
        "machine": machine(),
        "load_average_at_end": os.getloadavg(),
        "rows": rows,
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
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
