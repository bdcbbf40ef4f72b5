"""The ``ce-rerank`` command: index, query, eval, demo, pairs and train.

Exit codes: 0 success, 1 failure (one-line message, no traceback), 2 usage error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from ce_rerank_plugins.errors import CERerankError

app = typer.Typer(
    name="ce-rerank",
    help="Retrieve with FAISS, rerank with a cross-encoder, build LLM context; evaluate and train rerankers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Cross-encoder name or path (default: $CE_RERANK_MODEL, bundled, or Hub)."),
]
EmbedderOpt = Annotated[
    str | None, typer.Option("--embedder", help="Bi-encoder name or path (default: bundled all-MiniLM-L6-v2).")
]


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors(func: F) -> F:
    """Turn expected failures into a one-line message and exit code 1 (usage errors: 2)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, TypeError) as exc:
            fail(str(exc), 2)
        except (CERerankError, FileNotFoundError, NotADirectoryError, ImportError, KeyError, OSError) as exc:
            fail(str(exc).strip("'\""), 1)

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@app.command()
@_user_errors
def pairs(
    out: Annotated[Path, typer.Option("--out", help="Output JSON Lines file (.gz to compress).")],
    beir: Annotated[
        list[Path] | None, typer.Option("--beir", help="BEIR dataset dir: qrels positives + mined negatives.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split to take positives from.")] = "train",
    inverse_cloze: Annotated[
        list[Path] | None,
        typer.Option("--inverse-cloze", help="BEIR dataset dir whose corpus gives sentence->passage pairs."),
    ] = None,
    climate_fever: Annotated[
        Path | None, typer.Option("--climate-fever", help="Climate-FEVER JSONL: claim/evidence pairs.")
    ] = None,
    depth: Annotated[int, typer.Option(help="Retriever depth to mine negatives from.")] = 50,
    negatives: Annotated[int, typer.Option(help="Negatives per query.")] = 4,
    skip_top: Annotated[int, typer.Option(help="Ignore this many top hits when mining (false negatives).")] = 0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    embedder: EmbedderOpt = None,
) -> None:
    """Build labelled training pairs, mining hard negatives with the FAISS retriever."""
    from ce_rerank_plugins.evaluation.beir import load_beir
    from ce_rerank_plugins.training import (
        LabeledPair,
        beir_training_pairs,
        climate_fever_pairs,
        inverse_cloze_pairs,
        write_pairs,
    )

    collected: list[LabeledPair] = []
    indexes: dict[Path, Any] = {}  # one embedding pass per corpus, shared by both pair kinds

    def index_for(directory: Path, corpus: dict[str, dict[str, str]]) -> Any:
        key = directory.resolve()
        if key not in indexes:
            indexes[key] = _index_corpus(corpus, embedder)
        return indexes[key]

    for directory in beir or []:
        dataset = load_beir(directory, split)
        index = index_for(directory, dataset.corpus)
        made = beir_training_pairs(dataset, index, depth=depth, num_negatives=negatives, skip_top=skip_top, seed=seed)
        console.print(f"{directory}: {len(made)} pairs from {len(dataset.queries)} {split} queries")
        collected += made
    for directory in inverse_cloze or []:
        from ce_rerank_plugins.evaluation.beir import _read_jsonl

        corpus = {
            str(r["_id"]): {"title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
            for r in _read_jsonl(Path(directory) / "corpus.jsonl")
        }
        index = index_for(directory, corpus)
        made = inverse_cloze_pairs(corpus, index, depth=depth, num_negatives=negatives, seed=seed)
        console.print(f"{directory}: {len(made)} inverse-cloze pairs")
        collected += made
    if climate_fever is not None:
        made = climate_fever_pairs(climate_fever)
        console.print(f"{climate_fever}: {len(made)} claim/evidence pairs")
        collected += made
    if not collected:
        fail("nothing to do: give --beir, --inverse-cloze and/or --climate-fever", 2)
    count = write_pairs(collected, out)
    console.print(f"wrote {count} pairs to {out}")


def _index_corpus(corpus: dict[str, dict[str, str]], embedder: str | None) -> Any:
    from ce_rerank_plugins.retrieval import FaissIndex

    index = FaissIndex(embedder)
    ids = list(corpus)
    texts = [f"{corpus[i]['title']} {corpus[i]['text']}".strip() for i in ids]
    index.add(texts, ids=ids)
    return index


@app.command()
@_user_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Output directory (final model in OUT/final).")],
    base: Annotated[str, typer.Option("--base", help="Base checkpoint: a cross-encoder or a backbone, path or id.")],
    pairs_file: Annotated[
        list[Path] | None, typer.Option("--pairs", help="JSONL/TSV pairs (text_a, text_b, label); repeatable.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="BEIR dataset dir: train on qrels + mined hard negatives.")
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split used with --data.")] = "train",
    num_labels: Annotated[int, typer.Option(help="1: relevance score; >1: classes.")] = 1,
    labels: Annotated[str | None, typer.Option(help="Comma-separated class names for num_labels > 1.")] = None,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-5,
    max_length: Annotated[int, typer.Option(help="Token budget of a pair.")] = 256,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate/checkpoint every N steps (default: per epoch).")
    ] = None,
    eval_fraction: Annotated[float, typer.Option(help="Held-out share of queries for evaluation.")] = 0.05,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience in evaluations.")] = None,
    precision: Annotated[str, typer.Option(help="auto | bf16 | fp32.")] = "auto",
    negatives: Annotated[int, typer.Option(help="Mined negatives per query with --data.")] = 4,
    depth: Annotated[int, typer.Option(help="Mining depth with --data.")] = 50,
    seed: Annotated[int, typer.Option(help="Seed.")] = 12,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in --out.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    embedder: EmbedderOpt = None,
) -> None:
    """Train or fine-tune a cross-encoder (sentence-transformers' trainer, evaluation, early stopping)."""
    from ce_rerank_plugins.training import (
        LabeledPair,
        TrainingConfig,
        beir_training_pairs,
        config_to_dict,
        read_pairs,
        train_cross_encoder,
    )

    collected: list[LabeledPair] = []
    for path in pairs_file or []:
        collected += read_pairs(path)
    if data is not None:
        from ce_rerank_plugins.evaluation.beir import load_beir

        dataset = load_beir(data, split)
        collected += beir_training_pairs(
            dataset, _index_corpus(dataset.corpus, embedder), depth=depth, num_negatives=negatives, seed=seed
        )
    if not collected:
        fail("no training data: give --pairs FILE and/or --data BEIR_DIR", 2)
    config = TrainingConfig(
        base_model=base,
        output_dir=str(out),
        num_labels=num_labels,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=lr,
        max_length=max_length,
        eval_steps=eval_steps,
        eval_fraction=eval_fraction,
        early_stopping_patience=patience,
        seed=seed,
        precision=precision,
        resume=resume,
        labels=labels.split(",") if labels else None,
        device=device,
    )
    console.print(f"training on {len(collected)} pairs from {base}")
    result = train_cross_encoder(collected, config)
    record = {
        "config": config_to_dict(config),
        "train_pairs": len(collected),
        "model_dir": result.model_dir,
        "global_steps": result.global_steps,
        "loss_history": result.loss_history,
        "eval_history": result.eval_history,
        "primary_metric": result.primary_metric,
        "best_metric": result.best_metric,
    }
    (out / "training_run.json").write_text(json.dumps(record, indent=2))
    console.print(f"saved {result.model_dir} (best {result.primary_metric} = {result.best_metric})")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
