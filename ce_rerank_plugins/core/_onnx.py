"""ONNX Runtime inference paths (``onnx``, ``onnx-int8``), exported locally from the loaded model.

Nothing is downloaded: the fp32 graph is traced from the transformers model already in memory and,
for ``onnx-int8``, quantised with ONNX Runtime's dynamic (weight-only int8) quantiser. The files are
cached next to the model (``<model dir>/onnx/``) when that folder is writable, else under
``$XDG_CACHE_HOME/ce_rerank_plugins/onnx/<model hash>/``, with a manifest keyed by a hash of the
weights, so a retrained model never reuses a stale graph and a damaged file is rebuilt, not loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ce_rerank_plugins._files import sha256_file
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
    # A model shipped as package data (the bundled default) is the installer's, not ours to write into:
    # files added there outlive an uninstall, and a shared site-packages may serve many users.
    package = Path(__file__).resolve().parents[1]
    return path.resolve().is_relative_to(package)


def cache_dir_for(model_source: str, model_hash: str) -> Path:
    """``<model dir>/onnx`` for a writable local model of the user's, else a per-hash folder in the user cache."""
    local = Path(model_source)
    if local.is_dir() and not _inside_the_package(local) and _writable(local / "onnx"):
        return local / "onnx"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ce_rerank_plugins" / "onnx"
    return root / model_hash[:16]


def _read_manifest(directory: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _cached_file(directory: Path, filename: str, model_hash: str) -> Path | None:
    manifest = _read_manifest(directory)
    if manifest.get("model_sha256") != model_hash:
        return None
    expected = manifest.get("files", {}).get(filename)
    path = directory / filename
    if not expected or not path.is_file():
        return None
    if sha256_file(path) != expected:
        logger.warning("ONNX cache file %s does not match its manifest checksum; rebuilding it", path)
        return None
    return path


def _record(directory: Path, filename: str, model_hash: str) -> None:
    import torch

    manifest = _read_manifest(directory)
    if manifest.get("model_sha256") != model_hash:
        manifest = {"model_sha256": model_hash, "files": {}}
    ort = require("onnxruntime", "onnx", purpose="The ONNX inference path")
    manifest.update({"opset": OPSET, "torch": torch.__version__, "onnxruntime": ort.__version__})
    manifest["files"][filename] = sha256_file(directory / filename)
    _atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export_fp32(hf_model: torch.nn.Module, input_names: list[str], target: Path) -> None:
    """Trace ``hf_model`` (a transformers sequence-classification model) to ONNX with dynamic axes."""
    import torch

    batch = 2
    example = {
        "input_ids": torch.full((batch, 8), 100, dtype=torch.long),
        "attention_mask": torch.ones((batch, 8), dtype=torch.long),
        "token_type_ids": torch.zeros((batch, 8), dtype=torch.long),
    }
    example["attention_mask"][1, 5:] = 0  # a padded row, so the traced graph handles masks
    args = tuple(example[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names} | {"logits": {0: "batch"}}
    tmp = target.with_name(f".{target.name}.tmp")
    was_training = hf_model.training
    hf_model.eval()
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter; parity is checked by the probe
            torch.onnx.export(
                hf_model,
                args,
                str(tmp),
                input_names=input_names,
                output_names=["logits"],
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
    tmp = target.with_name(f".{target.name}.tmp")
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


def hf_model_of(cross_encoder: Any) -> torch.nn.Module:
    """The transformers model inside a sentence-transformers ``CrossEncoder``."""
    import torch

    module = cross_encoder[0]
    hf = getattr(module, "model", None) or getattr(module, "auto_model", None)
    if not isinstance(hf, torch.nn.Module):
        msg = "this CrossEncoder has no transformers model to export to ONNX"
        raise TypeError(msg)
    return hf


def onnx_file(cross_encoder: Any, model_source: str, precision: str, input_names: list[str]) -> Path:
    """The cached (or newly exported) ONNX file for ``precision``; exports and quantises on first use."""
    if precision not in ONNX_PRECISIONS:
        msg = f"not an ONNX precision: {precision!r}"
        raise ValueError(msg)
    require("onnxruntime", "onnx", purpose="The ONNX inference path")
    hf_model = hf_model_of(cross_encoder)
    model_hash = weights_sha256(hf_model)
    directory = cache_dir_for(model_source, model_hash)
    directory.mkdir(parents=True, exist_ok=True)
    fp32 = _cached_file(directory, "model.onnx", model_hash)
    if fp32 is None:
        logger.info("exporting %s to ONNX in %s", model_source, directory)
        fp32 = directory / "model.onnx"
        _export_fp32(hf_model, input_names, fp32)
        _record(directory, "model.onnx", model_hash)
    if precision == "onnx":
        return fp32
    int8 = _cached_file(directory, "model_int8.onnx", model_hash)
    if int8 is None:
        int8 = directory / "model_int8.onnx"
        _quantize_int8(fp32, int8)
        _record(directory, "model_int8.onnx", model_hash)
    return int8


class OnnxRunner:
    """Runs tokenised features through an ONNX Runtime session on CPU and returns float32 logits."""

    def __init__(self, path: Path, input_names: list[str], *, threads: int | None = None) -> None:
        import torch

        ort = require("onnxruntime", "onnx", purpose="The ONNX inference path")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        if sorted(self.input_names) != sorted(input_names):
            msg = f"{path} expects inputs {self.input_names}, the tokenizer gives {input_names}"
            raise ValueError(msg)

    def __call__(self, features: Mapping[str, Any]) -> FloatArray:
        feeds = {name: np.asarray(features[name].cpu().numpy(), dtype=np.int64) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feeds)
        return np.asarray(logits, dtype=np.float32)


def model_input_names(cross_encoder: Any) -> list[str]:
    """The tensors the tokenizer produces for a pair, in the order the exported graph takes them."""
    import torch

    features = cross_encoder.preprocess([["a", "b"]])
    return [name for name in _INPUTS if name in features and torch.is_tensor(features[name])]
