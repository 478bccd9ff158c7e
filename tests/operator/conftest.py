"""Fixtures for the operator tests.

The Kubernetes API here is **kmock's emulator** (PyPI ``kmock``, the
``kmock`` pytest fixture): an in-memory API server over real HTTP that stores,
lists, patches (JSON merge patch) and deletes objects. It has no controllers and
no garbage collector: tests play the Deployment controller when they need a
status, and check owner references rather than cascading deletion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import kmock as kmocklib
import kopf
import pytest
from operator_harness import IMAGE, Clock, Harness

from elemta.operator.kube import Kube
from elemta.operator.reconcile import Operator


@attrs.define(kw_only=True)
class Emulator(kmocklib.KubernetesEmulator):
    """kmock's emulator with a short request history.

    kmock matches each request against its whole history, which makes a test of
    a few hundred API calls slow; these tests assert on stored objects, not on
    the request log, so only the recent requests are kept for matching.
    """

    def __iter__(self) -> Iterator[Any]:
        yield from self._requests[-32:]


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    return {"cls": Emulator}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def kube(kmock: Any) -> AsyncIterator[Kube]:
    """An API client pointed at the kmock Kubernetes API emulator."""
    client = Kube(str(kmock.url))
    yield client
    await client.close()


@pytest.fixture
def memo(kube: Kube, clock: Clock) -> kopf.Memo:
    memo = kopf.Memo()
    memo.operator = Operator(kube=kube, default_image=IMAGE, clock=clock)
    return memo


@pytest.fixture
def operator(kube: Kube, memo: kopf.Memo) -> Harness:
    return Harness(kube, memo)
