"""The ``ce-rerank`` command: index, query, eval, demo, serve, pairs, train and soup.

Exit codes: 0 success, 1 data or runtime failure (one-line message, no traceback), 2 usage error (bad
options, checked before any model or index is loaded).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from ce_rerank_plugins.core import Precision
from ce_rerank_plugins.errors import CERerankError
from ce_rerank_plugins.retrieval import EmbedderRuntime, RetrievalMode

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="ce-rerank",
    rich_markup_mode=None,  # plain click help: no "<bool>" after flags
    help="Retrieve with FAISS, rerank with a cross-encoder, build LLM context; evaluate and train rerankers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Pipes and CI logs get a fixed width instead of rich's 80-column fallback, so tables stay readable.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)

F = TypeVar("F", bound=Callable[..., Any])

PRECISION_HELP = "The inference path (ONNX: CPU, needs the onnx extra); faster paths are probe-checked vs fp32."

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Cross-encoder name or path (default: $CE_RERANK_MODEL, bundled, or Hub)."),
]
EmbedderOpt = Annotated[
    str | None, typer.Option("--embedder", help="Bi-encoder name or path (default: bundled all-MiniLM-L6-v2).")
]


def note(message: str, style: str | None = None) -> None:
    """A status line (what was written, what was skipped); ``--quiet`` hides it, results stay.

    The message is plain text: a path or passage holding ``[/]`` is shown as it is, never read as markup.
    """
    if not _OUTPUT["quiet"]:
        err_console.print(message, highlight=False, soft_wrap=True, markup=False, style=style)


#: Output settings of this invocation, set by the global options.
_OUTPUT = {"quiet": False}


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _user_errors(func: F) -> F:
    """Turn expected failures into a one-line message and exit code 1 (usage errors are checked first, code 2)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except (ValueError, TypeError, UnicodeError) as exc:
            fail(str(exc), 1)
        except KeyError as exc:  # str() of a KeyError is the repr of its key; the message is the key
            fail(str(exc.args[0]) if exc.args else repr(exc), 1)
        except (CERerankError, FileNotFoundError, NotADirectoryError, ImportError, OSError) as exc:
            fail(str(exc), 1)

    return wrapper  # type: ignore[return-value]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only results and errors: no status lines, warnings or bars.")
    ] = False,
    threads: Annotated[
        str | None,
        typer.Option(
            help="torch intra-op threads: a count, 'auto' (half the CPUs) or 'torch' (default: $CE_RERANK_THREADS)."
        ),
    ] = None,
) -> None:
    if verbose and quiet:
        fail("--verbose and --quiet exclude each other", 2)
    if threads is not None:
        from ce_rerank_plugins.core import THREADS_ENV_VAR, check_threads

        try:
            check_threads(threads, "--threads")
        except ValueError as exc:
            fail(str(exc), 2)
        os.environ[THREADS_ENV_VAR] = threads  # applied at the first model load, here and in the server
    _OUTPUT["quiet"] = quiet
    level = logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:  # third-party load reports and weight-loading bars only with --verbose
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if quiet:  # our own embedding bars too (tqdm honours TQDM_DISABLE)
        os.environ["TQDM_DISABLE"] = "1"


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
        note(f"{directory}: {len(made)} pairs from {len(dataset.queries)} {split} queries")
        collected += made
    for directory in inverse_cloze or []:
        from ce_rerank_plugins.evaluation.beir import read_records

        corpus = {
            doc_id: {"title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
            for doc_id, r in read_records(Path(directory) / "corpus.jsonl").items()
        }
        index = index_for(directory, corpus)
        made = inverse_cloze_pairs(corpus, index, depth=depth, num_negatives=negatives, seed=seed)
        note(f"{directory}: {len(made)} inverse-cloze pairs")
        collected += made
    if climate_fever is not None:
        made = climate_fever_pairs(climate_fever)
        note(f"{climate_fever}: {len(made)} claim/evidence pairs")
        collected += made
    if not collected:
        fail("nothing to do: give --beir, --inverse-cloze and/or --climate-fever", 2)
    count = write_pairs(collected, out)
    note(f"wrote {count} pairs to {out}")


def _index_corpus(corpus: dict[str, dict[str, str]], embedder: str | None) -> Any:
    from ce_rerank_plugins.evaluation.rerank_eval import index_corpus

    return index_corpus(corpus, embedder)


@app.command()
@_user_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Output directory (the recipe: OUT/model; pairs: OUT/final).")],
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="default: the bundled model's recipe (listwise loss, mined hard negatives, resumable) on --data sets.",
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Base checkpoint, path or id (the recipe: default the bundled model)."),
    ] = None,
    pairs_file: Annotated[
        list[Path] | None, typer.Option("--pairs", help="JSONL/TSV pairs (text_a, text_b, label); repeatable.")
    ] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="BEIR dataset dir with qrels/<split>.tsv; repeatable."),
    ] = None,
    split: Annotated[str, typer.Option(help="qrels split used with --data (the recipe always reads train).")] = "train",
    num_labels: Annotated[int, typer.Option(help="1: relevance score; >1: classes.")] = 1,
    labels: Annotated[str | None, typer.Option(help="Comma-separated class names for num_labels > 1.")] = None,
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs; recipe: 1000).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-5,
    max_length: Annotated[int, typer.Option(help="Token budget of a pair.")] = 256,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate/checkpoint every N steps (default: per epoch; recipe: 250).")
    ] = None,
    eval_fraction: Annotated[float, typer.Option(help="Held-out share of queries (recipe: of titles).")] = 0.05,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience in evaluations.")] = None,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = "auto",
    negatives: Annotated[
        int | None, typer.Option(help="Mined negatives per query with --data (default 4; recipe 5).")
    ] = None,
    depth: Annotated[int | None, typer.Option(help="Mining depth with --data (default 50; recipe 30).")] = None,
    groups_per_step: Annotated[int, typer.Option(help="Recipe: query groups per optimiser step.")] = 8,
    same_title: Annotated[int, typer.Option(help="Recipe: negatives drawn from the positive's title.")] = 1,
    mining: Annotated[
        str, typer.Option(help="Recipe: first stage that mines negatives: bm25 | dense (its cosines also teach).")
    ] = "bm25",
    distill_weight: Annotated[float, typer.Option(help="Recipe: weight of the bi-encoder distillation.")] = 0.5,
    misleading_share: Annotated[
        float,
        typer.Option(help="Recipe: train at least this share on groups where a negative shares more question words."),
    ] = 0.0,
    max_queries: Annotated[int, typer.Option(help="Recipe: training questions per set, at most (0: all).")] = 0,
    max_holdout: Annotated[int, typer.Option(help="Recipe: held-out questions per set, at most.")] = 100,
    word_sharing: Annotated[
        int, typer.Option(help="Recipe: extra negatives per question that repeat its words and do not answer it.")
    ] = 0,
    holdout_from: Annotated[
        Path | None,
        typer.Option(help="Recipe: hold out again the questions of an earlier run's OUT/data (continuing its model)."),
    ] = None,
    sentence_groups: Annotated[
        int,
        typer.Option(help="Recipe: groups of single sentences (the bi-encoder picks the answering one); 0: none."),
    ] = 0,
    sentence_sets: Annotated[
        str, typer.Option(help="Recipe: comma-separated set names sentence groups come from (default: all).")
    ] = "",
    paragraph_groups: Annotated[
        int, typer.Option(help="Recipe: keep at most this many paragraph groups, drawn at random (0: all).")
    ] = 0,
    repeated_questions: Annotated[
        bool,
        typer.Option(
            "--repeated-questions/--no-repeated-questions",
            help="Recipe: add to each sentence group a member that repeats the question before a wrong sentence.",
        ),
    ] = False,
    time_budget: Annotated[
        float, typer.Option(help="Recipe: stop training after this many seconds (0: no limit).")
    ] = 0,
    threads: Annotated[int, typer.Option(help="Recipe: torch CPU threads (0: torch's default).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 12,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in --out.")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    embedder: EmbedderOpt = None,
) -> None:
    """Train or fine-tune a cross-encoder: the bundled model's recipe, or pairs through the ST trainer."""
    if recipe is not None:
        if recipe != "default":
            fail(f"--recipe must be 'default', got {recipe!r}", 2)
        if not data:
            fail("no training data: give --data BEIR_DIR (repeatable) with qrels/train.tsv", 2)
        if pairs_file:
            fail("--pairs trains through the sentence-transformers trainer; leave out --recipe to use it", 2)
        _train_recipe(
            out,
            data or [],
            base=base,
            max_steps=1000 if max_steps < 0 else max_steps,
            groups_per_step=groups_per_step,
            lr=lr,
            max_length=max_length,
            eval_steps=eval_steps or 250,
            negatives=5 if negatives is None else negatives,
            depth=30 if depth is None else depth,
            same_title=same_title,
            mining=mining,
            distill_weight=distill_weight,
            misleading_share=misleading_share,
            holdout_fraction=eval_fraction,
            max_holdout=max_holdout,
            holdout_from=holdout_from,
            word_sharing=word_sharing,
            sentence_groups=sentence_groups,
            sentence_sets=tuple(n.strip() for n in sentence_sets.split(",") if n.strip()),
            paragraph_groups=paragraph_groups,
            repeated_questions=repeated_questions,
            max_queries=max_queries,
            time_budget=time_budget,
            threads=threads,
            seed=seed,
            resume=resume,
            device=device,
            embedder=embedder,
        )
        return
    if base is None:
        fail("--base is required without --recipe (a cross-encoder or a backbone, path or id)", 2)
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
    for directory in data or []:
        from ce_rerank_plugins.evaluation.beir import load_beir

        dataset = load_beir(directory, split)
        collected += beir_training_pairs(
            dataset,
            _index_corpus(dataset.corpus, embedder),
            depth=50 if depth is None else depth,
            num_negatives=4 if negatives is None else negatives,
            seed=seed,
        )
    if not collected:
        fail("no training data: give --pairs FILE and/or --data BEIR_DIR", 2)
    config = TrainingConfig(
        base_model=str(base),
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
    note(f"training on {len(collected)} pairs from {base}")
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
    console.print(f"saved {result.model_dir} (best {result.primary_metric} = {result.best_metric})", markup=False)


def _bundled_start(option: str) -> str:
    """The bundled model's folder, the default starting point of training; a usage error naming ``option`` if none."""
    from ce_rerank_plugins.core import bundled_model_dir

    bundled = bundled_model_dir()
    if bundled is None:
        fail(f"this build bundles no model to start from: pass {option} PATH", 2)
    return str(bundled)


def _log_progress(name: str) -> None:
    """Long jobs report each stage (validations, held-out scores) unless --quiet: INFO for that logger only."""
    logging.getLogger(name).setLevel(logging.NOTSET if _OUTPUT["quiet"] else logging.INFO)


def _train_recipe(out: Path, data: list[Path], *, base: str | None, embedder: str | None, **options: Any) -> None:
    """``ce-rerank train --recipe default``: build the groups once, then train (resuming when asked)."""
    from ce_rerank_plugins.training.recipe import (
        DATA_MANIFEST,
        GroupSettings,
        ListwiseConfig,
        prepare_groups,
        train_listwise,
    )

    _log_progress("ce_rerank_plugins.training")
    checkpoint = out / "checkpoint" / "state.json"
    if checkpoint.is_file() and not options["resume"]:
        fail(f"{out} holds a checkpoint of an earlier run: pass --resume to continue it, or choose another --out", 2)
    if base is None:
        base = _bundled_start("--base")
    groups_dir = out / "data"
    sources = [str(d) for d in data]
    settings = GroupSettings(
        mining=options["mining"],
        negatives=options["negatives"],
        same_title=min(options["same_title"], options["negatives"]),
        depth=options["depth"],
        holdout_fraction=options["holdout_fraction"],
        max_holdout=options["max_holdout"],
        holdout_from=None if options["holdout_from"] is None else str(options["holdout_from"]),
        word_sharing=options["word_sharing"],
        sentence_groups=options["sentence_groups"],
        sentence_sets=options["sentence_sets"],
        paragraph_groups=options["paragraph_groups"],
        repeated_questions=options["repeated_questions"],
        max_queries=options["max_queries"],
        seed=options["seed"],
    )
    manifest = groups_dir / DATA_MANIFEST
    built_before = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    if built_before.get("sources") == sources:
        # Groups built with other options are other groups: reusing them silently would train on what was not asked.
        # The seed also seeds training, so a run may train the same groups with another one (said, not refused).
        # As JSON has them (a tuple of set names is a list there), so only a real difference counts.
        recorded, asked = built_before.get("settings", {}), json.loads(json.dumps(dataclasses.asdict(settings)))
        changed = [k for k in asked if k != "seed" and k in recorded and recorded[k] != asked[k]]
        if changed:
            shown = ", ".join(f"{k}: built {recorded[k]!r}, asked {asked[k]!r}" for k in changed)
            fail(f"{groups_dir} holds groups built with other options ({shown}); pass the same, or another --out", 2)
        seeded, seed = recorded.get("seed", asked["seed"]), asked["seed"]
        also = f" (built with seed {seeded}; --seed {seed} seeds the training)" if seeded != seed else ""
        note(f"reusing the training groups in {groups_dir}{also}")
    else:
        if options["resume"] and checkpoint.is_file():
            fail(f"{groups_dir} does not hold groups built from these --data folders; resume with the same --data", 2)
        embed = None
        if embedder is not None:
            from ce_rerank_plugins.retrieval import Embedder

            chosen = Embedder(embedder)

            def embed(texts: list[str]) -> Any:
                return chosen.encode(texts, show_progress=False)

        built = prepare_groups(data, groups_dir, settings=settings, embed=embed)
        for name, counts in built["sets"].items():
            note(f"{name}: {counts['train_groups']} training groups, {counts['validation_queries']} held out")
    config = ListwiseConfig(
        base_model=base,
        max_steps=options["max_steps"],
        groups_per_step=options["groups_per_step"],
        learning_rate=options["lr"],
        max_length=options["max_length"],
        distill_weight=options["distill_weight"],
        misleading_share=options["misleading_share"],
        eval_steps=options["eval_steps"],
        time_budget=options["time_budget"],
        threads=options["threads"],
        device=options["device"],
        seed=options["seed"],
    )
    result = train_listwise(groups_dir, out, config)
    console.print(
        f"saved {result.model_dir}: step {result.best_step} of {result.steps}, held-out nDCG@10 "
        f"{result.selection:.4f}, fusion {result.fusion[0]} ({result.fusion[1]:g})",
        markup=False,
    )


@app.command()
@_user_errors
def soup(
    end: Annotated[str, typer.Argument(help="A cross-encoder fine-tuned from --start (its tokenizer is kept).")],
    data: Annotated[Path, typer.Option("--data", help="A recipe build's held-out questions: OUT/data of a run.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (OUT/model and OUT/soup_run.json).")],
    weights: Annotated[str, typer.Option(help="Shares of END to try, comma-separated, each in [0, 1].")] = (
        "0,0.25,0.5,0.75,1"
    ),
    start: Annotated[
        str | None, typer.Option("--start", help="The model END was trained from (default: the bundled model).")
    ] = None,
    max_length: Annotated[int, typer.Option(help="Token budget of a pair when scoring (the run's).")] = 256,
    threads: Annotated[int, typer.Option(help="Torch CPU threads (0: torch's default).")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
) -> None:
    """Average weights, (1 - w) * START + w * END, at the w that END's held-out questions prefer."""
    try:
        parsed = [float(w) for w in weights.split(",") if w.strip()]
    except ValueError:
        fail(f"--weights must be comma-separated numbers in [0, 1], got {weights!r}", 2)
    from ce_rerank_plugins.training.soup import check_weights, interpolate_on_holdout

    try:
        check_weights(parsed)
    except ValueError as exc:
        fail(f"--weights: {exc}", 2)
    if max_length < 1:
        fail(f"--max-length must be >= 1, got {max_length}", 2)
    if start is None:
        start = _bundled_start("--start")
    _log_progress("ce_rerank_plugins.training")
    result = interpolate_on_holdout(
        start, end, data, out, weights=parsed, max_length=max_length, threads=threads, device=device
    )
    console.print(
        f"saved {result.model_dir}: w={result.weight:g}, held-out nDCG@10 {result.selection:.4f}, "
        f"fusion {result.fusion[0]} ({result.fusion[1]:g})",
        markup=False,
    )


@app.command()
@_user_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files (.txt, .md, .jsonl) or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the index to (new, empty or an index).")],
    chunk_tokens: Annotated[int, typer.Option(help="Tokens per chunk (bi-encoder tokenizer).")] = 200,
    overlap: Annotated[int, typer.Option(help="Tokens shared by consecutive chunks.")] = 40,
    index_type: Annotated[str, typer.Option(help="flat (exact) | hnsw | ivf.")] = "flat",
    lexical: Annotated[
        bool, typer.Option("--lexical/--no-lexical", help="Also keep a BM25 index (the hybrid extra).")
    ] = False,
    mode: Annotated[
        RetrievalMode, typer.Option(help="Default retrieval mode (bm25 and hybrid imply --lexical).")
    ] = "dense",
    embedder: EmbedderOpt = None,
    ray: Annotated[
        bool, typer.Option("--ray", help="Embed on Ray Data over a pool of actors (the ray extra).")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="With --ray: an existing Ray cluster ('auto', 'ray://head:10001').")
    ] = None,
    actors: Annotated[int, typer.Option(help="With --ray: embedding actors, one bi-encoder each.")] = 2,
    stall_timeout: Annotated[
        float | None,
        typer.Option(
            help="With --ray: seconds without a finished batch before the run is given up, saving nothing "
            "(default 600; a lost node's actors wait for room)."
        ),
    ] = None,
) -> None:
    """Read, chunk and embed documents, then save a FAISS index (no pickle).

    The output folder is never read as input, and a save never deletes files it did not write.
    """
    from ce_rerank_plugins.retrieval import check_save_target
    from ce_rerank_plugins.retrieval.ingest import build_index_from_files

    if index_type not in ("flat", "hnsw", "ivf"):
        fail(f"--index-type must be flat, hnsw or ivf, got {index_type!r}", 2)
    if chunk_tokens < 1 or not 0 <= overlap < chunk_tokens:
        fail(f"need --chunk-tokens >= 1 and 0 <= --overlap < --chunk-tokens, got {chunk_tokens} and {overlap}", 2)
    if actors < 1:
        fail(f"--actors must be >= 1, got {actors}", 2)
    if (address or stall_timeout is not None) and not ray:
        fail("--address and --stall-timeout are for --ray", 2)
    if stall_timeout is not None:
        _check_seconds_option(stall_timeout, "--stall-timeout")
    check_save_target(out)  # before any embedding work
    encode = None
    if ray:
        from ce_rerank_plugins import ray_data

        ray_data.connect(address)

        def encode(texts: list[str]) -> Any:
            try:
                return ray_data.embed_texts(
                    texts, embedder, actors=actors, stall_timeout=stall_timeout or ray_data.DEFAULT_STALL_TIMEOUT
                )
            except ray_data.RayDataStalledError as exc:
                try:
                    fail(f"{exc}; no index was written to {out}", 1)
                finally:
                    # The given-up run still runs in Ray's threads of this process, and a normal exit would
                    # tear it down with tracebacks printed after the error. Ending the driver ends its
                    # tasks and actors on the cluster, so leave at once.
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(1)

    built, found = build_index_from_files(
        paths,
        embedder=embedder,
        chunk_tokens=chunk_tokens,
        overlap=overlap,
        index_type=index_type,
        exclude=[out],
        lexical=lexical or mode != "dense",
        mode=mode,
        encode=encode,
    )
    built.save(out)
    note(f"indexed {len(built)} chunks from {len(found.files)} files into {out}")
    if found.skipped:
        listed = ", ".join(f"{n} {suffix}" for suffix, n in sorted(found.skipped.items()))
        note(f"not read (unsupported file types): {listed}", style="yellow")
    if found.ignored:
        listed = ", ".join(f"{n} {reason}" for reason, n in sorted(found.ignored.items()))
        note(f"skipped (hidden, ignored or saved indexes; see the README's ingestion rules): {listed}")


def _check_mode(mode: str) -> None:
    if mode not in ("dense", "bm25", "hybrid"):
        fail(f"--mode must be dense, bm25 or hybrid, got {mode!r}", 2)


def _reranker(model: str | None, precision: str = "auto") -> Any:
    from ce_rerank_plugins.core import CrossEncoderReranker, default_model

    return CrossEncoderReranker(model or default_model(), precision=precision)  # type: ignore[arg-type]


QUERY_PRECISION_HELP = (
    "The inference path; faster paths are probe-checked vs fp32. 'onnx' runs both models on ONNX Runtime "
    "(onnx extra) and exports them on first use; 'auto' then uses those exports, so later queries start "
    "without importing torch."
)


def _query_paths(model: str, precision: Precision) -> tuple[Precision, EmbedderRuntime]:
    """The cross-encoder's precision and the bi-encoder's runtime for one query.

    A one-shot query spends more time importing torch than computing: under ``auto``, a model whose
    ONNX export is cached and verified runs on ONNX Runtime instead (``onnx`` makes those exports).
    """
    from ce_rerank_plugins.core import onnx_fast_start

    if precision == "onnx":
        return "onnx", "onnx"
    if precision == "auto":
        ready, lost = onnx_fast_start(model)
        if ready:
            return "onnx", "auto"
        if lost is not None:  # it was fast before: say why it is not now, and how to make it fast again
            logger.warning(
                "no fast start for this query (it loads torch, several seconds more): %s: %s. "
                "`ce-rerank query --precision onnx ...` exports the models again",
                model,
                lost,
            )
    return precision, "torch"


def _snippet(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
@_user_errors
def query(
    index_dir: Annotated[Path, typer.Argument(help="Index directory made by `ce-rerank index`.")],
    question: Annotated[str, typer.Argument(help="The question.")],
    k: Annotated[int, typer.Option("-k", help="Candidates retrieved from FAISS.")] = 50,
    n: Annotated[int, typer.Option("-n", help="Results kept after reranking.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    context: Annotated[bool, typer.Option("--context", help="Print the assembled LLM context.")] = False,
    max_tokens: Annotated[int, typer.Option(help="Context token budget with --context.")] = 1500,
    precision: Annotated[Precision, typer.Option(help=QUERY_PRECISION_HELP)] = "auto",
    mode: Annotated[RetrievalMode | None, typer.Option(help="Retrieval mode (default: the index's).")] = None,
    model: ModelOpt = None,
    embedder: Annotated[
        str | None,
        typer.Option("--embedder", help="Bi-encoder name or path (default: the one the index was built with)."),
    ] = None,
) -> None:
    """Retrieve then rerank; print a table (or JSON), optionally the LLM context with citations."""
    from rich.table import Table

    from ce_rerank_plugins.core import CrossEncoderReranker, default_model
    from ce_rerank_plugins.pipeline import RetrieveRerankPipeline
    from ce_rerank_plugins.retrieval import FaissIndex

    if not question.strip():
        fail("the question is empty", 2)
    if k < 1 or n < 1:
        fail(f"-k and -n must be >= 1, got -k {k} -n {n}", 2)
    if max_tokens < 1:
        fail(f"--max-tokens must be >= 1, got {max_tokens}", 2)
    model_name = model or default_model()
    ce_precision, embedder_runtime = _query_paths(model_name, precision)
    loaded = FaissIndex.load(index_dir, embedder=embedder, embedder_runtime=embedder_runtime)
    reranker = CrossEncoderReranker(model_name, precision=ce_precision)
    pipeline = RetrieveRerankPipeline(loaded, reranker, k=k, top_n=n, mode=mode)
    result = pipeline.run(question)
    ctx = result.context(max_tokens) if context else None
    if as_json:
        payload: dict[str, Any] = {
            "query": question,
            "results": [
                {
                    "rank": r.rerank_position,
                    "id": r.hit.id,
                    "rerank_score": r.rerank_score,
                    "retrieval_score": r.hit.score,
                    "retrieval_rank": r.retrieval_position,
                    "source": r.hit.metadata.get("source"),
                    "text": r.hit.text,
                }
                for r in result.reranked
            ],
            "timings_ms": {"retrieval": result.retrieval_seconds * 1000, "rerank": result.rerank_seconds * 1000},
            # What actually ran (after any probe fallback): e.g. "onnx" for both on the torch-free start.
            "inference": {"cross_encoder": reranker.precision, "bi_encoder": loaded.embedder.runtime},
            "precision_reason": (
                "auto: a verified ONNX export is cached, so this one-shot query starts without torch"
                if precision == "auto" and ce_precision == "onnx"
                else reranker.precision_reason
            ),
        }
        if ctx is not None:
            payload["context"] = ctx.text
            payload["context_dropped"] = [c.citation for c in ctx.dropped]
        sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")  # plain JSON, no rich markup
        return
    table = Table(title=Text(f"{question}  (retrieve {k} → rerank → top {n})"))
    for col in ("rank", "rerank score", "retrieval score", "was", "source", "snippet"):
        table.add_column(col, overflow="fold")
    for r in result.reranked:
        table.add_row(
            str(r.rerank_position),
            f"{r.rerank_score:.4f}",
            f"{r.hit.score:.4f}",
            f"#{r.retrieval_position}",
            Text(str(r.hit.metadata.get("source", ""))),  # user text: never read as markup
            Text(_snippet(r.hit.text)),
        )
    console.print(table)
    if ctx is not None:
        console.print(f"\n[bold]Context[/bold] ({ctx.tokens}/{ctx.budget} tokens, {len(ctx.dropped)} chunks left out)")
        console.print(ctx.text, highlight=False, markup=False)


@app.command("eval")
@_user_errors
def eval_command(
    dataset_dir: Annotated[Path, typer.Argument(help="BEIR-layout dataset: corpus.jsonl, queries.jsonl, qrels/.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where to write the JSON and PNG.")] = Path("eval-results"),
    depths: Annotated[str, typer.Option(help="Comma-separated rerank depths.")] = "10,20,50,100",
    split: Annotated[str, typer.Option(help="qrels split.")] = "test",
    max_queries: Annotated[int | None, typer.Option(help="Evaluate only the first N judged queries.")] = None,
    latency_queries: Annotated[int, typer.Option(help="Queries timed per depth.")] = 20,
    no_rerank: Annotated[bool, typer.Option("--no-rerank", help="Evaluate retrieval only.")] = False,
    modes: Annotated[
        str, typer.Option("--mode", help="First-stage modes, comma-separated: dense, bm25, hybrid (one row set each).")
    ] = "dense",
    hybrid_fusion: Annotated[
        str, typer.Option(help="How hybrid fuses: weighted (min-max, 0.5/0.5) | rrf.")
    ] = "weighted",
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = "auto",
    model: ModelOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """nDCG@10, MRR@10, Recall for retrieval alone and retrieval + rerank at several depths (JSON + PNG)."""
    from rich.table import Table

    from ce_rerank_plugins.evaluation.beir import BeirDataset, load_beir
    from ce_rerank_plugins.evaluation.rerank_eval import build_index, evaluate_reranking, plot_report

    try:
        parsed_depths = [int(d) for d in depths.split(",") if d.strip()]
    except ValueError:
        fail(f"--depths must be comma-separated integers, got {depths!r}", 2)
    if not no_rerank and (not parsed_depths or min(parsed_depths) < 1):
        fail(f"--depths must be positive integers, got {depths!r}", 2)
    if max_queries is not None and max_queries < 1:
        fail(f"--max-queries must be >= 1, got {max_queries}", 2)
    if latency_queries < 0:
        fail(f"--latency-queries must be >= 0, got {latency_queries}", 2)
    parsed_modes = [m.strip() for m in modes.split(",") if m.strip()]
    for name in parsed_modes or [""]:
        _check_mode(name)
    if hybrid_fusion not in ("weighted", "rrf"):
        fail(f"--hybrid-fusion must be weighted or rrf, got {hybrid_fusion!r}", 2)
    dataset = load_beir(dataset_dir, split)
    if max_queries is not None:
        keep = list(dataset.queries)[:max_queries]
        dataset = BeirDataset(
            dataset.name, dataset.corpus, {q: dataset.queries[q] for q in keep}, {q: dataset.qrels[q] for q in keep}
        )
    reranker = None if no_rerank else _reranker(model, precision)
    note(f"{dataset.name}: {len(dataset.corpus)} documents, {len(dataset.queries)} judged {split} queries")
    evaluated = build_index(dataset, embedder, lexical=any(name != "dense" for name in parsed_modes))
    evaluated.hybrid_fusion = hybrid_fusion  # type: ignore[assignment]
    report = evaluate_reranking(
        dataset,
        evaluated,
        reranker,
        depths=[] if no_rerank else parsed_depths,
        latency_queries=latency_queries,
        modes=parsed_modes,  # type: ignore[arg-type]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if hybrid_fusion == "weighted" or "hybrid" not in parsed_modes else f"_hybrid-{hybrid_fusion}"
    json_path = out_dir / f"{dataset.name}{suffix}_eval.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2))
    png_path = plot_report(report, out_dir / f"{dataset.name}{suffix}_eval.png")
    table = Table(title=Text(f"{dataset.name} ({report.queries} queries)"))
    for col in ("stage", "nDCG@10", "MRR@10", "R@10", "R@100", "ms median", "ms p95"):
        table.add_column(col, justify="right")
    for s in report.stages:
        m = s.metrics
        table.add_row(
            s.name,
            f"{m['ndcg@10']:.4f}",
            f"{m['mrr@10']:.4f}",
            f"{m['recall@10']:.4f}",
            f"{m['recall@100']:.4f}",
            "-" if s.latency_ms_median is None else f"{s.latency_ms_median:.1f}",
            "-" if s.latency_ms_p95 is None else f"{s.latency_ms_p95:.1f}",
        )
    console.print(table)
    note(f"wrote {json_path} and {png_path}")


def _check_seconds_option(value: float, name: str) -> None:
    """A usage error (exit 2) unless ``value`` is a positive, finite number of seconds."""
    from ce_rerank_plugins._validation import check_seconds

    try:
        check_seconds(value, name)
    except ValueError as exc:
        fail(str(exc), 2)


def _check_host(host: str) -> None:
    """Refuse a --host that is no address at all (``256.1.1.1``) before anything loads."""
    import ipaddress
    import re

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        if not host or re.fullmatch(r"[\d.]+", host) or ":" in host:
            fail(f"--host {host!r} is not a valid IP address or host name", 2)


@app.command()
@_user_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = "auto",
    max_documents: Annotated[int, typer.Option(help="Most documents one request may carry.")] = 1000,
    model: ModelOpt = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run the same app as a Ray Serve deployment (ray extra).")] = False,
    address: Annotated[
        str | None, typer.Option(help="With --ray: an existing Ray cluster ('auto', 'ray://head:10001').")
    ] = None,
    replicas: Annotated[int, typer.Option(help="With --ray: replicas (the floor when --max-replicas is set).")] = 1,
    max_replicas: Annotated[
        int | None, typer.Option(help="With --ray: autoscale between --replicas and this many replicas.")
    ] = None,
    cpus_per_replica: Annotated[float, typer.Option(help="With --ray: CPUs (and torch threads) per replica.")] = 1.0,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds a connection has to deliver each whole request (headers and body) before it is "
            "closed; computing the answer is not limited. Default 30. Not with --ray (Ray Serve's proxy)."
        ),
    ] = None,
) -> None:
    """Serve the shared reranker over HTTP (POST /v1/rerank, GET /health, GET /v1/models).

    One machine with uvicorn, or with --ray on Ray Serve: replicas, autoscaling, a local Ray or a cluster.
    """
    if not 0 < port < 65536 or max_documents < 1:
        fail(f"need 0 < --port < 65536 and --max-documents >= 1, got {port} and {max_documents}", 2)
    if not ray and (address or replicas != 1 or max_replicas is not None or cpus_per_replica != 1.0):
        fail("--address, --replicas, --max-replicas and --cpus-per-replica are for --ray", 2)
    if ray and request_timeout is not None:
        fail("--request-timeout is for the uvicorn server; with --ray, Ray Serve's proxy handles connections", 2)
    if request_timeout is not None:
        _check_seconds_option(request_timeout, "--request-timeout")
    _check_host(host)
    from ce_rerank_plugins.serve import ServeLimits, create_app

    limits = ServeLimits(max_documents=max_documents)
    if ray:
        from ce_rerank_plugins.serve import RayServeSettings, ray_application, run_on_ray

        try:
            settings = RayServeSettings(
                replicas=replicas,
                min_replicas=replicas,
                max_replicas=max_replicas,
                cpus_per_replica=cpus_per_replica,
            )
        except ValueError as exc:
            fail(str(exc), 2)
        note(f"serving on Ray at http://{host}:{port} (Ctrl-C or SIGTERM stops)")
        run_on_ray(
            ray_application(model, precision=precision, limits=limits, settings=settings),
            address=address,
            host=host,
            port=port,
            blocking=True,
        )
        note("stopped")
        return
    from ce_rerank_plugins._optional import require

    uvicorn = require("uvicorn", "serve", purpose="ce-rerank serve")
    from ce_rerank_plugins.serve import uvicorn_config

    app_ = create_app(lambda: _reranker(model, precision), limits=limits)
    uvicorn.Server(uvicorn_config(app_, host=host, port=port, request_timeout=request_timeout)).run()


#: The demo's questions, each with the sample-corpus records that answer it (our own judgements of our
#: own corpus), so the demo can say whether reranking moved the answer up or down.
DEMO_QUESTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("How many people live in Lyon?", ("lyon-00", "lyon-01")),
    ("What water temperature should I use to brew coffee?", ("coffee-01",)),
    ("Why does an afternoon coffee keep me awake at night?", ("sleep-02",)),
)


def answer_movement(result: Any, answer_ids: Sequence[str]) -> tuple[int | None, int | None]:
    """Best 1-based position of an answering record before (bi-encoder) and after reranking.

    ``result`` is a :class:`~ce_rerank_plugins.pipeline.PipelineResult` that reranked every retrieved
    chunk; chunk ids are ``<record id>#<chunk>``. ``(None, None)`` when no answer was retrieved.
    """
    answers = set(answer_ids)
    hits = [r for r in result.reranked if r.hit.id.split("#", 1)[0] in answers]
    if not hits:
        return None, None
    return min(r.retrieval_position for r in hits), min(r.rerank_position for r in hits)


@app.command()
@_user_errors
def demo(
    k: Annotated[int, typer.Option("-k", help="Candidates retrieved and reranked (the pipeline's default).")] = 50,
    n: Annotated[int, typer.Option("-n", help="Results kept after reranking.")] = 3,
    model: ModelOpt = None,
    embedder: EmbedderOpt = None,
) -> None:
    """Offline end to end on the bundled sample corpus: index, retrieve, rerank, assemble context."""
    import tempfile
    from importlib.resources import as_file, files

    from rich.table import Table

    from ce_rerank_plugins.core import MODEL_ENV_VAR, default_model, untrained_cross_encoder
    from ce_rerank_plugins.errors import ModelLoadError
    from ce_rerank_plugins.pipeline import RetrieveRerankPipeline
    from ce_rerank_plugins.retrieval import FaissIndex

    untrained = False
    try:
        chosen = model or default_model()
    except ModelLoadError as exc:
        untrained = True
        err_console.print(
            f"[bold yellow]warning:[/bold yellow] {exc}\n[yellow]The demo runs the pipeline with an UNTRAINED "
            f"cross-encoder head on the bundled all-MiniLM-L6-v2 backbone: its rankings are not meaningful. "
            f"Set ${MODEL_ENV_VAR} or pass --model to see real reranking.[/yellow]",
            highlight=False,
        )
        chosen = untrained_cross_encoder()
    reranker = _reranker(chosen)
    from ce_rerank_plugins.retrieval.ingest import build_index_from_files

    with as_file(files("ce_rerank_plugins") / "data" / "sample_corpus.jsonl") as corpus:
        built, _ = build_index_from_files([corpus], embedder=embedder, show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = FaissIndex.load(built.save(Path(tmp) / "index"))  # the saved, pickle-free format round-trips
    console.print(
        f"[bold]ce-rerank demo[/bold]: {len(loaded)} chunks from the bundled sample corpus, "
        f"embedder {escape(loaded.embedder.id)}, cross-encoder {escape(reranker.key.model)} ({reranker.precision}"
        + (
            f", {reranker.fusion} fusion with the bi-encoder score, cross-encoder weight {reranker.fusion_weight:g})"
            if reranker.fusion != "none"
            else ")"
        )
    )
    pipeline = RetrieveRerankPipeline(loaded, reranker, k=k, top_n=k)  # rerank all k, show the top n
    verdicts: list[str] = []
    for question, answer_ids in DEMO_QUESTIONS:
        full = pipeline.run(question)
        result = dataclasses.replace(full, reranked=full.reranked[:n])
        table = Table(title=Text(f"Q: {question}"), title_justify="left")
        for col in ("rank", "rerank score", "cross-encoder", "bi-encoder rank", "bi-encoder score", "passage"):
            table.add_column(col, overflow="fold")
        for r in result.reranked:
            moved = r.retrieval_position - r.rerank_position
            arrow = f" (↑{moved})" if moved > 0 else (f" (↓{-moved})" if moved < 0 else "")
            table.add_row(
                str(r.rerank_position),
                f"{r.rerank_score:.3f}",
                f"{r.cross_encoder_score:.3f}" if r.cross_encoder_score is not None else "",
                f"#{r.retrieval_position}{arrow}",
                f"{r.hit.score:.3f}",
                Text(_snippet(r.hit.text, 80)),
            )
        console.print(table)
        before, after = answer_movement(full, answer_ids)
        if before is None or after is None:
            verdicts.append("not retrieved")
            console.print(f"The answering passage ({', '.join(answer_ids)}) was not in the top {k} retrieved.")
        else:
            verdict = "better" if after < before else ("worse" if after > before else "unchanged")
            verdicts.append(verdict)
            style = {"better": "green", "worse": "red"}.get(verdict, "white")
            console.print(
                f"The answering passage ({', '.join(answer_ids)}): bi-encoder #{before} -> reranked #{after} "
                f"[bold {style}]({verdict})[/bold {style}]"
            )
        ctx = result.context(max_tokens=120)
        console.print(
            f"retrieval {result.retrieval_seconds * 1000:.0f} ms, rerank {result.rerank_seconds * 1000:.0f} ms; "
            f"context for the LLM ({ctx.tokens} tokens, {len(ctx.dropped)} chunk(s) over budget):"
        )
        console.print(ctx.text + "\n", highlight=False, markup=False, style="dim")
    counts = {v: verdicts.count(v) for v in ("better", "unchanged", "worse", "not retrieved") if v in verdicts}
    console.print(
        f"[bold]Summary:[/bold] reranking put the answering passage higher for {verdicts.count('better')} of "
        f"{len(verdicts)} questions (" + ", ".join(f"{c} {v}" for v, c in counts.items()) + ")."
    )
    if untrained:
        console.print("[yellow]Reminder: an untrained reranker produced the order above (see the warning).[/yellow]")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
