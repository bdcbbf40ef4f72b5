"""What the machine can do: device choice and native bf16 support, read from the hardware, not guessed."""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

THREADS_ENV_VAR = "CE_RERANK_THREADS"
"""Environment variable for torch's CPU threads: a number, ``auto`` (half the CPUs) or ``torch`` (leave it alone)."""
Threads = int | Literal["auto", "torch"]
"""A thread setting: a positive count, ``auto`` or ``torch``."""
_threads_lock = threading.Lock()
_threads_decided = False
_threads_count: int | None = None


def default_threads() -> int:
    """Half the logical CPUs, at least 1.

    Measured in ``benchmarks/bench_threads.py``: one thread per core is fastest on an idle machine but
    collapses under competing load (3.6x slower reranks, 6x slower query encodings with 4 busy
    processes on 2 cores), while half the cores degrades gracefully.
    """
    return max(1, (os.cpu_count() or 1) // 2)


def check_threads(threads: object, where: str) -> Threads:
    """``threads`` as a :data:`Threads` value (digit strings accepted); ValueError names ``where``."""
    if threads in ("auto", "torch"):
        return threads
    if isinstance(threads, str) and threads.strip().isdigit():
        threads = int(threads)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        msg = f"{where} must be a positive integer, 'auto' or 'torch', got {threads!r}"
        raise ValueError(msg)
    return threads


def set_threads(threads: Threads = "auto") -> int | None:
    """Set torch's intra-op threads for this process: the one setting for the core, CLI and server.

    Args:
        threads: A count; ``"auto"`` for :func:`default_threads`; ``"torch"`` to leave torch's own
            setting alone.

    Returns:
        The thread count now in effect, or None for ``"torch"``.
    """
    global _threads_decided, _threads_count
    threads = check_threads(threads, "threads")
    with _threads_lock:
        _threads_decided = True
        if threads == "torch":
            _threads_count = None
            return None
        import torch

        count = _count_for(threads)
        torch.set_num_threads(count)
        _threads_count = count
        return count


def _env_setting() -> Threads:
    return check_threads(os.environ.get(THREADS_ENV_VAR, "auto"), f"${THREADS_ENV_VAR}")


def _count_for(setting: int | Literal["auto"]) -> int:
    return default_threads() if setting == "auto" else setting


def policy_threads() -> int | None:
    """The intra-op thread count the policy asks for, without importing torch (for ONNX Runtime).

    :func:`set_threads`'s choice if it was called, else ``$CE_RERANK_THREADS``; None for ``"torch"``
    (leave the runtime's own default).
    """
    with _threads_lock:
        if _threads_decided:
            return _threads_count
    setting = _env_setting()
    return None if setting == "torch" else _count_for(setting)


def apply_thread_policy() -> None:
    """Apply ``$CE_RERANK_THREADS`` (default ``auto``) once, at the first model load of the process.

    Does nothing after :func:`set_threads` was called, so an explicit choice always wins.
    """
    with _threads_lock:
        if _threads_decided:
            return
    setting = _env_setting()
    count = set_threads(setting)
    if count is not None:  # process-wide: say so, and how to opt out
        logger.info(
            "torch intra-op threads set to %d for this process (%s=%s; 'torch' leaves torch's own setting)",
            count,
            THREADS_ENV_VAR,
            setting,
        )


def resolve_device(device: str | None) -> str:
    """Turn ``"auto"``/``None`` into ``cuda``, ``mps`` or ``cpu``; pass anything else through."""
    if device is None or device == "auto":
        import torch  # imported on use: `import ce_rerank_plugins` stays light

        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if not isinstance(device, str):
        msg = f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {type(device).__name__}"
        raise TypeError(msg)
    return device


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this machine (Linux ``/proc/cpuinfo``); empty where unreadable."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.exists():
        return frozenset()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN (torch's CPU matmuls) off its bf16 instructions.
_ISA_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matrix products natively (AMX or AVX512-BF16).

    A cap set with ``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 counts as no: torch cannot use them then.
    """
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_WITHOUT_BF16:
        return False
    return bool(cpu_flags() & _BF16_CPU_FLAGS)


def device_has_native_bf16(device: str) -> bool:
    """True when bf16 inference is expected to be faster than fp32 on ``device``."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return cpu_has_native_bf16()
    return False
