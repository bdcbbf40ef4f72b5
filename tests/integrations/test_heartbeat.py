"""The heartbeat the adapters' async tests rely on: it must fail on work that blocks the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integrations.heartbeat import assert_loop_keeps_ticking


async def _blocks_once() -> None:
    time.sleep(0.3)  # the whole work in the loop's thread


async def _blocks_per_call(calls: int) -> None:
    async def one(i: int) -> None:
        await asyncio.sleep(0.09 * i)  # the loop is free between calls: it ticks, and no single stall is long
        time.sleep(0.07)  # each call blocks a little

    await asyncio.gather(*(one(i) for i in range(calls)))


async def _in_a_thread() -> None:
    await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.3) for _ in range(4)))


@pytest.mark.parametrize("work", [lambda: _blocks_once(), lambda: _blocks_per_call(8)], ids=["once", "per-call"])
async def test_work_in_the_loop_fails_the_heartbeat(work):
    with pytest.raises(AssertionError, match="stalled"):  # per call: no stall is long, but most time is stalls
        await assert_loop_keeps_ticking(work())


async def test_work_in_threads_passes_the_heartbeat():
    await assert_loop_keeps_ticking(_in_a_thread())
