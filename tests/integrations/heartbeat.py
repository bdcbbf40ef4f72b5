"""A heartbeat that shows whether awaited work blocks the event loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

#: A gap between beats longer than this is a stall (the beat comes every 5 ms when the loop is free).
STALL = 0.05


async def assert_loop_keeps_ticking(work: Awaitable[T], *, period: float = 0.005) -> T:
    """Await ``work`` while a task ticks every ``period`` seconds; fail if the loop stalled meanwhile."""
    beats: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        while not done.is_set():
            beats.append(time.perf_counter())
            await asyncio.sleep(period)

    task = asyncio.create_task(heartbeat())
    start = time.perf_counter()
    result = await work
    elapsed = time.perf_counter() - start
    done.set()
    await task
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert elapsed > 0.05, "the work was too short to show anything"
    assert len(beats) >= 5, f"the loop ticked {len(beats)} times in {elapsed:.3f}s: it was stalled"
    # Work run in the loop stalls it for all of its time, in one gap or one per call; a busy machine that
    # takes the CPU away now and then stalls it for a part. So: the time spent in stalls, not the longest.
    stalled = sum(g for g in gaps if g > STALL)
    assert stalled < elapsed / 2, (
        f"the loop was stalled for {stalled:.3f}s of {elapsed:.3f}s (longest stall {max(gaps):.3f}s)"
    )
    return result
