"""A bounded, thread-safe LRU cache of raw cross-encoder logits, shareable between rerankers."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from ce_rerank_plugins.core._scores import FloatArray


@dataclass(frozen=True)
class CacheInfo:
    """Hit and miss counters, as ``functools.lru_cache`` reports them."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


class ScoreCache:
    """LRU map of ``(model key, text_a, text_b)`` to the pair's raw logits.

    Raw logits are stored (not converted scores) so that rerankers using other score modes or
    thresholds on the same model can share one cache.

    Args:
        maxsize: How many pairs to keep; the least recently used are evicted first.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        if not isinstance(maxsize, int) or maxsize < 1:
            msg = f"ScoreCache maxsize must be a positive integer, got {maxsize!r}"
            raise ValueError(msg)
        self.maxsize = maxsize
        self._data: OrderedDict[tuple[Hashable, str, str], FloatArray] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: tuple[Hashable, str, str]) -> FloatArray | None:
        """The cached logits for ``key`` (a copy), or None; counts a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            copied: FloatArray = value.copy()
            return copied

    def put(self, key: tuple[Hashable, str, str], logits: FloatArray) -> None:
        """Store ``logits`` for ``key``, evicting the least recently used entry when full."""
        with self._lock:
            self._data[key] = np.array(logits, dtype=np.float32, copy=True)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def info(self) -> CacheInfo:
        """Current counters and size."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, self.maxsize, len(self._data))

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._hits = 0
            self._misses = 0
