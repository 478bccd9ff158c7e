"""Stopping background tasks: a loop that swallows a cancellation still ends."""

from __future__ import annotations

import asyncio

from elemta.common.tasks import cancel_and_wait


async def test_a_loop_that_swallows_the_first_cancellation_is_stopped() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as asyncio.wait_for can on Python 3.11

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait(task, within=5.0)
    assert task.cancelled()
    assert swallowed == 1


async def test_a_task_that_never_ends_is_left_after_the_bound_without_raising() -> None:
    stop = asyncio.Event()

    async def deaf() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    await cancel_and_wait(task, within=0.3)
    assert not task.done()
    stop.set()
    task.cancel()
    await asyncio.wait({task}, timeout=1)


async def test_a_failed_or_finished_task_is_no_error() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    await cancel_and_wait(task)
    await cancel_and_wait(None)
