"""Cold start to first result, in fresh processes, as ratios to ``python -c "import torch"`` (the floor).

Each row is the median of ``--repeats`` fresh processes (5 by default), run in one session:
- the floor, ``import torch``;
- ``import ce_rerank_plugins`` and ``import ce_rerank_plugins.cli`` (what every command pays);
- in one process, the phases of a first use: imports, model load (with its precision probe), the first
  ``rank`` of ``--k`` passages, then a warm ``rank`` of the same size (the first/warm ratio);
- end to end, ``ce-rerank query INDEX "..." -k 50 -n 5 --json`` on a saved index of ``--docs`` documents,
  twice: with an empty ONNX cache (``auto`` is the torch path: bf16 or fp32), and after one
  ``--precision onnx`` run has exported both models (``auto`` is then the torch-free ONNX path);
- the same first-use phases for ``precision="onnx"`` from a prepared cache.

Each path gets its own ``XDG_CACHE_HOME`` (temporary folders), so the user's cache is neither read nor written.

The index is built once before timing (MS MARCO passages from ``--corpus`` when present, else the
sample corpus repeated). The model is ``--model`` (default: the candidate offline model in
the bundled ``ce-minilm-l6-offline``, a MiniLM-L6 cross-encoder). Prints a table and writes JSON.

    python benchmarks/bench_cold_start.py --out benchmarks/results/cold_start.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CLI = str(Path(sys.executable).with_name("ce-rerank"))
QUESTION = "how long is the life cycle of a flea"

PHASES = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    if sys.argv[3] != "onnx":  # the torch path: what its model load needs anyway, timed as import
        import torch
    t_torch = time.perf_counter()
    from ce_rerank_plugins import CrossEncoderReranker
    if sys.argv[3] != "onnx":
        import sentence_transformers
    t_import = time.perf_counter()
    reranker = CrossEncoderReranker(sys.argv[1], precision=sys.argv[3])
    t_load = time.perf_counter()
    passages = json.loads(sys.argv[2])
    reranker.rank("how long is the life cycle of a flea", passages, top_n=5)
    t_first = time.perf_counter()
    reranker.rank("what is the population of lyon", passages, top_n=5)
    t_warm = time.perf_counter()
    print(json.dumps({
        "import_torch_s": t_torch - t0, "import_s": t_import - t0, "model_load_s": t_load - t_import,
        "first_rank_s": t_first - t_load, "warm_rank_s": t_warm - t_first, "precision": reranker.precision,
        "torch_imported": "torch" in sys.modules,
    }))
    """
)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {done.stderr[-2000:]}")
    return seconds, done.stdout


def build_index(corpus: Path, docs: int, out: Path) -> list[str]:
    sys.path.insert(0, str(REPO))
    from ce_rerank_plugins.retrieval import FaissIndex

    if corpus.is_file():
        with corpus.open(encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(docs), f, strict=False)]
        texts, ids = [r["text"] for r in rows], [str(r["_id"]) for r in rows]
    else:
        sample = REPO / "ce_rerank_plugins" / "data" / "sample_corpus.jsonl"
        base = [json.loads(x)["text"] for x in sample.read_text(encoding="utf-8").splitlines() if x.strip()]
        texts = [f"{t} ({i})" for i, t in enumerate(base * (docs // len(base) + 1))][:docs]
        ids = [f"d{i}" for i in range(len(texts))]
    index = FaissIndex(show_progress=False)
    index.add(texts, ids=ids, metadatas=[{"source": f"{i}.txt"} for i in ids])
    index.save(out)
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "ce_rerank_plugins" / "models" / "ce-minilm-l6-offline"))
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "data" / "msmarco" / "corpus.jsonl")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--index", type=Path, default=None, help="reuse a saved index instead of building one")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cold_start.json")
    args = parser.parse_args()

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("CE_RERANK_MODEL", None)
    index_dir = args.index or Path(tempfile.mkdtemp()) / "index"
    texts = build_index(args.corpus, args.docs, index_dir) if args.index is None else []
    if not texts and args.corpus.is_file():  # a reused index: the first-use phases still rank real passages
        with args.corpus.open(encoding="utf-8") as f:
            texts = [json.loads(line)["text"] for _, line in zip(range(args.k), f, strict=False)]
    passages = json.dumps((texts or [f"passage {i} about fleas and their life cycle" for i in range(100)])[: args.k])

    torch_env = {**env, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="cold-torch-")}
    onnx_env = {**env, "XDG_CACHE_HOME": tempfile.mkdtemp(prefix="cold-onnx-")}
    query = [CLI, "query", str(index_dir), QUESTION, "-k", str(args.k), "-n", "5", "--json", "-m", args.model]
    export_s, _ = timed([*query, "--precision", "onnx"], onnx_env)  # once: exports and probes both models
    check = (
        "import sys\nfrom ce_rerank_plugins.cli import main\nsys.argv = ['ce-rerank', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(json.dumps('torch' in sys.modules))"
    )
    _, out = timed([PYTHON, "-c", "import json\n" + check, *query[1:]], onnx_env)
    onnx_query_imports_torch = json.loads(out.strip().splitlines()[-1])

    query_torch = f"ce-rerank query (saved {args.docs}-doc index, -k {args.k} -n 5), torch path"
    query_onnx = f"ce-rerank query (saved {args.docs}-doc index, -k {args.k} -n 5), ONNX exports cached"
    rows: dict[str, list[float]] = {}
    phases: dict[str, list[dict[str, float | str]]] = {"auto": [], "onnx": []}
    commands = {
        "python -c 'import torch' (floor)": ([PYTHON, "-c", "import torch"], env),
        "import ce_rerank_plugins": ([PYTHON, "-c", "import ce_rerank_plugins"], env),
        "import ce_rerank_plugins.cli": ([PYTHON, "-c", "import ce_rerank_plugins.cli"], env),
        query_torch: (query, torch_env),
        query_onnx: (query, onnx_env),
    }
    for _ in range(args.repeats):  # interleaved, so a burst of load on the machine hits every row alike
        for name, (cmd, cmd_env) in commands.items():
            rows.setdefault(name, []).append(timed(cmd, cmd_env)[0])
        for precision, phase_env in (("auto", torch_env), ("onnx", onnx_env)):
            _, out = timed([PYTHON, "-c", PHASES, args.model, passages, precision], phase_env)
            phases[precision].append(json.loads(out.strip().splitlines()[-1]))

    floor = statistics.median(rows["python -c 'import torch' (floor)"])
    table = {
        name: {"median_s": round(statistics.median(v), 3), "ratio_to_floor": round(statistics.median(v) / floor, 2)}
        for name, v in rows.items()
    }
    phase_medians = {
        path: {
            key: round(statistics.median(float(p[key]) for p in runs), 3)
            for key in ("import_torch_s", "import_s", "model_load_s", "first_rank_s", "warm_rank_s")
        }
        for path, runs in phases.items()
    }
    record = {
        "model": os.path.relpath(args.model, REPO) if args.model.startswith(str(REPO)) else args.model,
        "docs": args.docs,
        "k": args.k,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_at_end": os.getloadavg(),
            "precision_chosen": {path: runs[0]["precision"] for path, runs in phases.items()},
        },
        "floor_s": round(floor, 3),
        "fresh_processes": table,
        "onnx_export_first_query_s": round(export_s, 3),
        "onnx_query_imports_torch": onnx_query_imports_torch,
        "first_use_phases_median_s": phase_medians,
        "first_over_warm_rank": {
            path: round(m["first_rank_s"] / m["warm_rank_s"], 2) for path, m in phase_medians.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{'fresh process (median of ' + str(args.repeats) + ')':<58} {'seconds':>8} {'x floor':>8}")
    for name, r in table.items():
        print(f"{name:<58} {r['median_s']:>8} {r['ratio_to_floor']:>8}")
    print(f"\nthe one --precision onnx query that exported both models: {export_s:.2f} s")
    print(f"the ONNX query imported torch: {onnx_query_imports_torch}")
    for path, medians in phase_medians.items():
        print(f"first use in one process, precision={path} (median): {medians}")
    print(f"first rank / warm rank = {record['first_over_warm_rank']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
