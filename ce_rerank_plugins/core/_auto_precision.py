"""``precision="auto"``: measure each verified inference path once per machine and model, remember the winner.

Which path is fastest is a property of the CPU and its libraries, not a rule: ONNX Runtime's fp32 beat
torch's by 1.66x on one AMD CPU and lost (0.94x) on an Intel one; the best batch size moves too. So, as
oneDNN and ONNX Runtime do for their kernels, the first use of a model on a machine times every path
that passes the probe on a short fixed workload and records the fastest in the user cache, keyed by
everything that can change the answer (CPU model and flags, thread count, the model's files, package
and library versions). Later processes read the record and measure nothing.

``$CE_RERANK_PRECISION`` names a path (or ``rule``: bf16 where native, else fp32) and skips measuring;
so does a cache folder that cannot be written. A corrupt record falls back to the rule, with a logged
reason. An explicit ``precision=`` never comes here.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ce_rerank_plugins._files import atomic_write, known_source_files_sha256, user_cache_dir
from ce_rerank_plugins.core._hardware import apply_thread_policy, cpu_flags, device_has_native_bf16
from ce_rerank_plugins.core._loading import ModelKey
from ce_rerank_plugins.core._probe import trying_paths

logger = logging.getLogger(__name__)

PRECISION_ENV_VAR = "CE_RERANK_PRECISION"
CHOICE_FORMAT = 1
BATCH_SIZES = (8, 16, 32)
FINAL_ROUNDS = 3
DEFAULT_BATCH_SIZE = 16
MEASURED_PATHS = ("fp32", "bf16", "onnx", "onnx-int8")
_PACKAGES = ("ce-rerank-plugins", "torch", "transformers", "sentence-transformers", "onnxruntime", "onnx")

# A fixed workload shaped like reranking: one question, passages of 60-120 words (about 80-160 tokens).
_QUESTION = "How many people live in the city, and how has its population changed?"
_PASSAGE = (
    "The city counted roughly half a million residents at the most recent census, and the wider "
    "metropolitan area is home to more than two million people. Its population has grown steadily "
    "since the early 2000s thanks to new housing in the eastern suburbs, a university that draws "
    "students from abroad, and jobs in health care, software and logistics along the two rivers."
)


def workload(pairs: int = 32) -> list[tuple[str, str]]:
    """The fixed pairs every path is timed on (deterministic, varied lengths, no data files)."""
    words = _PASSAGE.split()
    return [(_QUESTION, " ".join(words[: 40 + (i * 7) % len(words)] * (1 + i % 2))) for i in range(pairs)]


class _Engine(Protocol):
    precision: str
    fallback_reason: str | None

    def score_logits(self, pairs: Sequence[tuple[str, str]], batch_size: int) -> Any: ...


@dataclass(frozen=True)
class PrecisionChoice:
    """The path ``auto`` runs, the batch size that went with it, and why (for ``reranker.precision_reason``)."""

    precision: str
    batch_size: int
    reason: str
    seconds: dict[str, float] = field(default_factory=dict)
    engine: Any = None  # the already loaded engine of the chosen path, when this process measured


def rule_precision(device: str) -> str:
    """The fallback rule: bf16 where the device computes it natively, else fp32."""
    return "bf16" if device_has_native_bf16(device) else "fp32"


def _cache_root() -> Path:
    return user_cache_dir() / "precision"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (read once: it is part of every measurement's key and never changes)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _model_fingerprint(model: str, revision: str | None) -> str:
    local = Path(model)
    if local.is_dir():
        return "files:" + known_source_files_sha256(local)
    return f"hub:{model}@{revision or 'default'}"


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def measurement_key(key: ModelKey) -> dict[str, Any]:
    """Everything that can change which path is fastest; a change of any of it measures again."""
    return {
        "format": CHOICE_FORMAT,
        "cpu": _cpu_model(),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "threads": _torch_threads(),
        "model": _model_fingerprint(key.model, key.revision),
        "max_length": key.max_length,
        "trust_remote_code": key.trust_remote_code,
        "versions": _versions(),
    }


def record_path(measured_key: dict[str, Any]) -> Path:
    """Where the choice for this key is recorded."""
    digest = hashlib.sha256(json.dumps(measured_key, sort_keys=True).encode()).hexdigest()[:24]
    return _cache_root() / f"{digest}.json"


def available_paths(device: str) -> list[str]:
    """The paths worth timing here: fp32, bf16 where native, ONNX where its libraries are installed."""
    paths = ["fp32"]
    if device_has_native_bf16(device):
        paths.append("bf16")
    if importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None:
        paths += ["onnx", "onnx-int8"]
    return paths


def _read_record(path: Path, measured_key: dict[str, Any], paths: Sequence[str]) -> tuple[str, int]:
    """The recorded (precision, batch size); ValueError saying what is wrong with the record."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"unreadable ({type(exc).__name__}: {exc})"
        raise ValueError(msg) from None
    if not isinstance(record, dict) or record.get("key") != measured_key:
        msg = "it does not belong to this machine, model and library versions"
        raise ValueError(msg)
    choice = record.get("choice")
    if not isinstance(choice, dict):
        msg = "it holds no choice"
        raise ValueError(msg)
    precision, batch_size = choice.get("precision"), choice.get("batch_size")
    if precision not in paths:
        msg = f"it names precision {precision!r}, not one of {list(paths)} available here"
        raise ValueError(msg)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size not in BATCH_SIZES:
        msg = f"it names batch size {batch_size!r}"
        raise ValueError(msg)
    return str(precision), batch_size


def _writable_cache() -> str | None:
    """None when the cache folder can take a record, else why not."""
    root = _cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {root} ({exc.strerror or exc})"
    if not os.access(root, os.W_OK | os.X_OK):
        return f"{root} is read-only"
    return None


def _time_once(engine: _Engine, pairs: Sequence[tuple[str, str]], batch_size: int) -> float:
    start = time.perf_counter()
    engine.score_logits(pairs, batch_size)
    return time.perf_counter() - start


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def choose_precision(key: ModelKey, build: Callable[[ModelKey], _Engine]) -> PrecisionChoice:
    """Resolve ``precision="auto"`` for ``key`` (whose ``precision`` field is ignored).

    ``build`` loads an engine for a key and probe-checks it (``core._engine.build_engine``); a path
    whose engine fell back to fp32 failed the probe and is never chosen.
    """
    setting = os.environ.get(PRECISION_ENV_VAR, "").strip()
    if setting:
        if setting == "rule":
            return PrecisionChoice(rule_precision(key.device), DEFAULT_BATCH_SIZE, f"rule (${PRECISION_ENV_VAR}=rule)")
        if setting not in MEASURED_PATHS:
            msg = f"${PRECISION_ENV_VAR} must be one of {[*MEASURED_PATHS, 'rule']}, got {setting!r}"
            raise ValueError(msg)
        return PrecisionChoice(setting, DEFAULT_BATCH_SIZE, f"${PRECISION_ENV_VAR}={setting}")
    if key.device != "cpu":
        return PrecisionChoice(rule_precision(key.device), DEFAULT_BATCH_SIZE, f"rule ({key.device}: not measured)")
    apply_thread_policy()  # the thread count is part of the key, so settle it first
    measured_key = measurement_key(key)
    path = record_path(measured_key)
    paths = available_paths(key.device)
    with _locks_guard:
        lock = _locks.setdefault(str(path), threading.Lock())
    with lock:
        if path.exists():
            try:
                precision, batch_size = _read_record(path, measured_key, paths)
            except ValueError as exc:
                rule = rule_precision(key.device)
                reason = f"rule: the recorded measurement {path} is {exc}; using {rule}"
                logger.warning("precision auto: %s", reason)
                return PrecisionChoice(rule, DEFAULT_BATCH_SIZE, reason)
            return PrecisionChoice(precision, batch_size, f"measured on this machine (record {path})")
        why_not = _writable_cache()
        if why_not is not None:
            rule = rule_precision(key.device)
            reason = f"rule: not measured, since the cache cannot record it ({why_not}); using {rule}"
            logger.warning("precision auto: %s", reason)
            return PrecisionChoice(rule, DEFAULT_BATCH_SIZE, reason)
        return _measure(key, build, paths, measured_key, path)


def _measure(
    key: ModelKey,
    build: Callable[[ModelKey], _Engine],
    paths: Sequence[str],
    measured_key: dict[str, Any],
    path: Path,
) -> PrecisionChoice:
    started = time.perf_counter()
    pairs = workload()
    seconds: dict[str, float] = {}
    refused: dict[str, str] = {}
    engines: dict[str, _Engine] = {}
    for precision in paths:
        try:
            with trying_paths():  # a refused path is recorded below, not warned about: nobody asked for it
                engine = build(replace(key, precision=precision))
        except Exception as exc:  # a faster path that cannot load here is not a candidate, and says why
            if precision == "fp32":
                raise  # the model itself does not load: that error is the user's to see
            refused[precision] = f"{type(exc).__name__}: {exc}"
            continue
        if engine.precision != precision or engine.fallback_reason:
            refused[precision] = engine.fallback_reason or f"ran as {engine.precision}"
            continue
        engines[precision] = engine
        engine.score_logits(pairs[: BATCH_SIZES[0]], BATCH_SIZES[0])  # warm-up: first-call allocations
        for batch_size in BATCH_SIZES:
            seconds[f"{precision}@{batch_size}"] = _time_once(engine, pairs, batch_size)
    # One run each keeps the measurement short; the two fastest then run three more times, taking turns
    # (so a burst of load on a shared machine hits both alike), and each keeps its best run: one lucky
    # or unlucky run must not decide a difference of a few percent.
    finalists = sorted(seconds, key=seconds.__getitem__)[:2]
    for _ in range(FINAL_ROUNDS):
        for config in finalists:
            name, batch = config.split("@")
            seconds[config] = min(seconds[config], _time_once(engines[name], pairs, int(batch)))
    best = min(seconds, key=seconds.__getitem__)
    precision, batch_size = best.split("@")[0], int(best.split("@")[1])
    baseline = min(v for k, v in seconds.items() if k.startswith("fp32@"))
    took = time.perf_counter() - started
    record = {
        "key": measured_key,
        "choice": {"precision": precision, "batch_size": batch_size},
        "seconds_per_workload": seconds,
        "refused": refused,
        "workload_pairs": len(pairs),
        "measured_in_seconds": round(took, 3),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        atomic_write(path, json.dumps(record, indent=1, sort_keys=True).encode())
        where = f"recorded in {path}"
    except OSError as exc:
        where = f"not recorded ({exc.strerror or exc})"
    speedup = baseline / seconds[best]
    reason = f"measured: {precision} at batch {batch_size}, {speedup:.2f}x fp32 ({where})"
    logger.info(
        "precision auto: timed %s on %d pairs at batch sizes %s in %.1f s (once per machine and model); "
        "chose %s at batch %d, %.2fx fp32%s; %s",
        ", ".join(engines),
        len(pairs),
        "/".join(map(str, BATCH_SIZES)),
        took,
        precision,
        batch_size,
        speedup,
        "".join(f"; {p} refused: {r}" for p, r in refused.items()),
        where,
    )
    return PrecisionChoice(precision, batch_size, reason, seconds, engines[precision])
