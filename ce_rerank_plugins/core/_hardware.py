"""What the machine can do: device choice and native bf16 support, read from the hardware, not guessed."""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def resolve_device(device: str | None) -> str:
    """Turn ``"auto"``/``None`` into ``cuda``, ``mps`` or ``cpu``; pass anything else through."""
    if device is None or device == "auto":
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


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matrix products natively (AMX or AVX512-BF16)."""
    return bool(cpu_flags() & _BF16_CPU_FLAGS)


def device_has_native_bf16(device: str) -> bool:
    """True when bf16 inference is expected to be faster than fp32 on ``device``."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return cpu_has_native_bf16()
    return False
