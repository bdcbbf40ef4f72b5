"""The process-wide registry: one loaded model per key, shared by every reranker and thread."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class ModelRegistry(Generic[K, T]):
    """Maps a model key (e.g. ``ModelKey``) to one loaded object; concurrent first use loads it exactly once.

    A per-key lock (not one global lock) lets two different models load at the same time while
    callers of the same key wait for the single load in progress.
    """

    def __init__(self) -> None:
        self._items: dict[K, T] = {}
        self._key_locks: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()
        self._loads: Counter[K] = Counter()

    def get_or_load(self, key: K, load: Callable[[K], T]) -> T:
        """Return the object for ``key``, calling ``load(key)`` only if no caller has loaded it yet."""
        item = self._items.get(key)
        if item is not None:
            return item
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            item = self._items.get(key)
            if item is None:
                item = load(key)
                self._items[key] = item
                self._loads[key] += 1
            return item

    def load_count(self, key: K) -> int:
        """How many times ``key`` was loaded in this process (1 when sharing works)."""
        return self._loads[key]

    def keys(self) -> list[K]:
        """The keys currently loaded."""
        return list(self._items)

    def release(self, key: K) -> None:
        """Forget the object for ``key``; rerankers holding it keep working, new ones load again."""
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        """Forget every loaded object (mainly for tests and long-lived processes that switch models)."""
        with self._lock:
            self._items.clear()
            self._loads.clear()
