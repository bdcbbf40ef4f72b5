"""Helpers for fault injection: two known indexes, fork-based savers, and what a load may return."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from ce_rerank_plugins.retrieval import Embedder, FaissIndex

TEXTS_A = ["Lyon is a city on the Rhône.", "Coffee brews best near 93 °C.", "A short nap restores focus."]
TEXTS_B = [*TEXTS_A[:2], "Paris is the capital of France.", "Wine from Bordeaux.", "Mitochondria make energy."]


def two_indexes(embedder: Embedder) -> tuple[FaissIndex, FaissIndex]:
    a = FaissIndex(embedder)
    a.add(TEXTS_A, ids=[f"a{i}" for i in range(len(TEXTS_A))], metadatas=[{"v": "A"}] * len(TEXTS_A))
    b = FaissIndex(embedder)
    b.add(TEXTS_B, ids=[f"b{i}" for i in range(len(TEXTS_B))], metadatas=[{"v": "B"}] * len(TEXTS_B))
    return a, b


def which(directory: Path, embedder: Embedder, a: FaissIndex, b: FaissIndex) -> str:
    """'A' or 'B' if the saved index equals one of them exactly (ids, texts, metadata, search); else raises."""
    loaded = FaissIndex.load(directory, embedder=embedder)
    for name, expected in (("A", a), ("B", b)):
        if loaded.ids == expected.ids:
            assert [loaded.get(i).text for i in loaded.ids] == [expected.get(i).text for i in expected.ids]
            assert {loaded.get(i).metadata["v"] for i in loaded.ids} == {name}
            query = "capital of France"
            got = [(h.id, round(h.score, 5)) for h in loaded.search(query, k=3)]
            assert got == [(h.id, round(h.score, 5)) for h in expected.search(query, k=3)]
            return name
    raise AssertionError(f"loaded a mix: {loaded.ids}")


def fork_saver_loop(directory: Path, a: FaissIndex, b: FaissIndex) -> int:
    """A child process that saves A and B alternately until killed; returns its pid."""
    pid = os.fork()
    if pid == 0:  # child: no pytest, no exceptions escaping
        try:
            while True:
                a.save(directory)
                b.save(directory)
        finally:
            os._exit(0)
    return pid


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def kill_at_random(directory: Path, a: FaissIndex, b: FaissIndex, rng: random.Random) -> None:
    pid = fork_saver_loop(directory, a, b)
    time.sleep(rng.uniform(0.0, 0.25))
    kill(pid)


SAVED_FILES = ("CURRENT", "manifest.json", "index.faiss", "documents.jsonl")
DAMAGES = ("truncate", "flip", "delete", "empty")


def damage_file(directory: Path, name: str, how: str) -> None:
    """Damage one file of a saved index's live generation (or ``CURRENT``) in one of four ways."""
    live = directory / (directory / "CURRENT").read_text().strip()
    path = directory / name if name == "CURRENT" else live / name
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        i = len(data) // 3
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
    elif how == "delete":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise ValueError(f"unknown damage {how!r}")
