"""The fault and bad-input record behind the README's "Reliability" table.

Runs, in one process (fork-based where a process must die): kill -9 at random instants of saves,
a crash at each step of a save, loads racing saves in another process, every saved file damaged four
ways, and failing writes (full disk, read-only). Then runs ``tests/reliability`` (properties, the
bad-input matrix, concurrency, soak) and counts its cases. Prints a table and writes JSON.

    python benchmarks/bench_reliability.py --kills 200 --race-seconds 20 --out benchmarks/results/reliability.json
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ce_rerank_plugins import IndexFormatError  # noqa: E402
from ce_rerank_plugins.retrieval import Embedder, FaissIndex, _persistence  # noqa: E402
from tests.reliability._faults import (  # noqa: E402
    DAMAGES,
    SAVED_FILES,
    damage_file,
    fork_saver_loop,
    kill,
    kill_at_random,
    two_indexes,
    which,
)


def outcome(directory: Path, embedder: Embedder, a: FaissIndex, b: FaissIndex) -> str:
    try:
        return which(directory, embedder, a, b)
    except AssertionError:
        return "mix"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--race-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "reliability.json")
    args = parser.parse_args()
    embedder = Embedder()
    a, b = two_indexes(embedder)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "ix"
        a.save(directory)
        rng = random.Random(11)
        seen: dict[str, int] = {}
        for _ in range(args.kills):
            kill_at_random(directory, a, b, rng)
            result = outcome(directory, embedder, a, b)
            seen[result] = seen.get(result, 0) + 1
        rows.append(("kill -9 at a random instant of a save", args.kills, seen))

        pid = fork_saver_loop(directory, a, b)
        raced: dict[str, int] = {}
        deadline = time.monotonic() + args.race_seconds
        try:
            while time.monotonic() < deadline:
                result = outcome(directory, embedder, a, b)
                raced[result] = raced.get(result, 0) + 1
        finally:
            kill(pid)
        rows.append(("load while another process saves", sum(raced.values()), raced))

        damaged: dict[str, int] = {}
        for name in SAVED_FILES:
            for damage in DAMAGES:
                a.save(directory)
                damage_file(directory, name, damage)
                try:
                    FaissIndex.load(directory, embedder=embedder)
                    key = "loaded (undetected)"
                except IndexFormatError:
                    key = "detected (IndexFormatError)"
                except Exception as exc:
                    key = f"other error: {type(exc).__name__}"
                damaged[key] = damaged.get(key, 0) + 1
                (directory / "CURRENT").unlink(missing_ok=True)
                for p in directory.iterdir():
                    if p.is_dir():
                        import shutil

                        shutil.rmtree(p)
        rows.append(("file damaged (4 files x truncate/flip/delete/empty)", 16, damaged))

        failed_writes: dict[str, int] = {}
        real = _persistence._write_bytes
        for code in (errno.ENOSPC, errno.EROFS, errno.EACCES):
            for at in (1, 2, 3, 4):
                a.save(directory)
                calls = {"n": 0}

                def failing(path: Path, data: bytes, code: int = code, at: int = at, calls: dict = calls) -> None:
                    calls["n"] += 1
                    if calls["n"] == at:
                        raise OSError(code, os.strerror(code))
                    real(path, data)

                _persistence._write_bytes = failing  # type: ignore[assignment]
                try:
                    b.save(directory)
                except OSError:
                    pass
                finally:
                    _persistence._write_bytes = real  # type: ignore[assignment]
                result = outcome(directory, embedder, a, b)
                failed_writes[result] = failed_writes.get(result, 0) + 1
        rows.append(("write fails: full disk / read-only / no permission, at each write", 12, failed_writes))

    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors)", tail)}
    rows.append(
        (
            "tests/reliability (properties, bad-input matrix, crash steps, concurrency, soak)",
            sum(counts.values()),
            counts,
        )
    )
    record = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "pytest_seconds": round(time.perf_counter() - start, 1),
        "rows": [{"trial": name, "count": n, "outcomes": out} for name, n, out in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"{'trial':<80} {'count':>6}  outcomes")
    for name, n, out in rows:
        print(f"{name:<80} {n:>6}  {json.dumps(out)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
