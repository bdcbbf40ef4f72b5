"""Fault injection on saved indexes: kill -9 mid-save, a crash at each step, damaged files, full disks,
and loads racing saves in another process. Each time the previous or the new index loads, never a mix
and never nothing."""

from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path

import pytest

from ce_rerank_plugins import IndexFormatError
from ce_rerank_plugins.retrieval import Embedder, FaissIndex, _persistence

from ._faults import DAMAGES, SAVED_FILES, damage_file, fork_saver_loop, kill, kill_at_random, two_indexes, which

KILL_TRIALS = int(os.environ.get("CE_RERANK_KILL_TRIALS", "12"))
RACE_SECONDS = float(os.environ.get("CE_RERANK_RACE_SECONDS", "3"))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def indexes(embedder):
    return two_indexes(embedder)


def test_kill_9_at_random_points_of_saves_leaves_one_whole_index(tmp_path, embedder, indexes):
    a, b = indexes
    directory = tmp_path / "ix"
    a.save(directory)
    rng = random.Random(7)
    seen = []
    for _ in range(KILL_TRIALS):
        kill_at_random(directory, a, b, rng)
        seen.append(which(directory, embedder, a, b))
    assert set(seen) <= {"A", "B"} and len(seen) == KILL_TRIALS
    which(directory, embedder, a, b)
    b.save(directory)  # the next save cleans up what the killed ones left
    assert sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp") or p.name.startswith(".CUR")) == []


STEPS = ["write:1", "write:2", "write:3", "rename", "pointer", "replace", "cleanup"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_each_step_of_a_save_leaves_the_old_or_the_new_index(tmp_path, embedder, indexes, step):
    a, b = indexes
    directory = tmp_path / "ix"
    a.save(directory)
    pid = os.fork()
    if pid == 0:
        try:
            kind, _, nth = step.partition(":")
            calls = {"n": 0}
            real_write, real_replace, real_cleanup = _persistence._write_bytes, os.replace, _persistence._cleanup
            real_rename = Path.rename

            def write(path, data):
                if path.name.startswith(".CURRENT."):
                    if kind == "pointer":
                        os._exit(9)
                    return real_write(path, data)
                calls["n"] += 1
                real_write(path, data)
                if kind == "write" and calls["n"] == int(nth):
                    os._exit(9)

            def rename(self, target):
                if kind == "rename":
                    os._exit(9)
                return real_rename(self, target)

            def replace(src, dst):
                real_replace(src, dst)
                if kind == "replace":
                    os._exit(9)

            def cleanup(d, keep):
                if kind == "cleanup":
                    os._exit(9)
                real_cleanup(d, keep)

            _persistence._write_bytes = write
            _persistence._cleanup = cleanup
            Path.rename = rename  # type: ignore[method-assign]
            _persistence.os.replace = replace  # type: ignore[attr-defined]
            b.save(directory)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 9, "the simulated crash did not happen"
    expected = "B" if step in ("replace", "cleanup") else "A"
    assert which(directory, embedder, a, b) == expected


def test_loads_racing_saves_in_another_process_never_mix(tmp_path, embedder, indexes):
    a, b = indexes
    directory = tmp_path / "ix"
    a.save(directory)
    pid = fork_saver_loop(directory, a, b)
    seen = {"A": 0, "B": 0}
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            seen[which(directory, embedder, a, b)] += 1
    finally:
        kill(pid)
    assert seen["A"] + seen["B"] >= 5
    assert seen["A"] and seen["B"], f"the race never saw both versions: {seen}"


@pytest.mark.parametrize("name", SAVED_FILES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_every_damaged_file_is_detected(tmp_path, embedder, indexes, name, damage):
    a, _ = indexes
    directory = a.save(tmp_path / "ix")
    damage_file(directory, name, damage)
    with pytest.raises(IndexFormatError):
        FaissIndex.load(directory, embedder=embedder)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("at_write", [1, 3])
def test_a_full_disk_or_read_only_target_keeps_the_previous_index(
    tmp_path, embedder, indexes, monkeypatch, code, at_write
):
    a, b = indexes
    directory = a.save(tmp_path / "ix")
    real = _persistence._write_bytes
    calls = {"n": 0}

    def failing(path, data):
        calls["n"] += 1
        if calls["n"] == at_write:
            raise OSError(code, os.strerror(code))
        real(path, data)

    monkeypatch.setattr(_persistence, "_write_bytes", failing)
    with pytest.raises(OSError, match=os.strerror(code)):
        b.save(directory)
    monkeypatch.undo()
    assert which(directory, embedder, a, b) == "A"
    assert [p.name for p in directory.iterdir() if p.name.startswith(".tmp")] == []
