"""The budget the priority classes share: high first, floors kept, nothing held idle."""

from __future__ import annotations

import asyncio

from elemta.common.budget import Budget

ORDER = ["high", "normal", "low"]


def budget(total: int = 8) -> Budget:
    return Budget(total, ORDER, {"high": 0.0, "normal": 0.25, "low": 0.125})


def run(b: Budget, c: str, n: int) -> None:
    for _ in range(n):
        b.arrived(c)


def test_floors_are_a_share_of_the_total_and_at_least_one_slot() -> None:
    assert budget(8).floor == {"high": 0, "normal": 2, "low": 1}
    assert budget(2).floor == {"high": 0, "normal": 1, "low": 1}


def test_high_takes_all_but_the_floors_of_the_classes_with_a_backlog() -> None:
    b = budget()
    assert b.allowance("high", 8) == 8 - 2 - 1
    b.ended("normal", full=False)  # no normal mail: its floor is not kept
    assert b.allowance("high", 8) == 8 - 1


def test_a_lower_class_gets_its_floor_while_a_higher_one_has_a_backlog() -> None:
    b = budget()
    run(b, "high", 5)
    assert b.allowance("low", 8) == 1
    assert b.allowance("normal", 8) == 2
    run(b, "low", 1)
    assert b.allowance("low", 8) == 0
    b.ended("high", full=False)  # high mail ran out: the rest is theirs
    assert b.allowance("low", 8) == 8 - 5 - 1 - 2


async def test_a_freed_slot_goes_to_the_class_below_its_floor_first() -> None:
    b = budget(4)
    b.ended("normal", full=False)
    run(b, "high", 4)  # full, low still waiting for its floor
    low = asyncio.create_task(b.take("low", lambda: 4))
    high = asyncio.create_task(b.take("high", lambda: 4))
    await asyncio.sleep(0.01)
    assert not low.done() and not high.done()
    b.done("high")
    grant = await asyncio.wait_for(low, 1)
    assert (grant.n, grant.probe) == (1, False)
    await asyncio.sleep(0.01)
    assert not high.done()
    b.done("high")
    assert (await asyncio.wait_for(high, 1)).n == 1


async def test_a_class_without_backlog_probes_for_one_outside_the_budget() -> None:
    b = budget(2)
    run(b, "high", 2)
    b.ended("low", full=False)
    grant = await asyncio.wait_for(b.take("low", lambda: 2), 1)
    assert (grant.n, grant.probe) == (1, True)
