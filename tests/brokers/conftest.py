"""The conformance suite's fixtures: ``broker``, a factory of fresh brokers of one backend
(parametrized over :data:`backends.BACKENDS`), each test on namespaces of its own.

``@pytest.mark.needs("feature", ...)`` on a case: it runs only against the backends that offer
every feature named (see :mod:`backends`); the others do not get the case (their ``lacks`` says
why), so nothing is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from backends import BACKENDS, Backend, Settings
from broker_helpers import until

from kcprpc.broker import Broker

_ids = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*features): the backend features a conformance case needs")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" not in metafunc.fixturenames:
        return
    needs = {f for m in metafunc.definition.iter_markers("needs") for f in m.args}
    names = [n for n, b in BACKENDS.items() if not needs & set(b.lacks)]
    metafunc.parametrize("backend_name", names, scope="session")


@pytest.fixture(scope="session")
def _opened() -> Iterator[dict[str, Backend]]:
    opened: dict[str, Backend] = {}
    try:
        yield opened
    finally:
        for b in opened.values():
            b.close()


@pytest.fixture(scope="session")
def backend(backend_name: str, _opened: dict[str, Backend]) -> Backend:
    """The backend, its servers started once for the session."""
    b = _opened.get(backend_name)
    if b is None:
        b = BACKENDS[backend_name]()
        b.open()
        _opened[backend_name] = b
    return b


class Brokers:
    """The ``broker`` fixture: ``await broker(history=3)`` makes a fresh, started broker on a new
    namespace; ``await broker.node(b)`` another instance on ``b``'s; all are closed at the end."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.made: list[Broker] = []
        self._ns: dict[int, tuple[str, Settings]] = {}

    async def __call__(self, **settings: Any) -> Broker:
        ns = f"t{os.getpid()}x{next(_ids)}"
        return await self._start(ns, Settings(**settings), None)

    async def node(self, of: Broker, **settings: Any) -> Broker:
        ns, base = self._ns[id(of)]
        return await self._start(ns, replace(base, **settings), of)

    async def _start(self, ns: str, s: Settings, of: Broker | None) -> Broker:
        b = self.backend.make(ns, s) if of is None else self.backend.node(of, ns, s)
        if b not in self.made:
            await b.start()
            self.made.append(b)
        self._ns[id(b)] = (ns, s)
        return b

    async def until(
        self, pred: Callable[[], bool | Awaitable[bool]], what: str = "the condition", timeout: float = 10.0
    ) -> None:
        """Wait (bounded) until ``pred()`` holds, letting the brokers' time pass between tries."""
        await until(pred, f"{what} ({self.name})", timeout, tick=self.backend.tick)

    async def aclose(self) -> None:
        await self.backend.ensure_up()
        for b in reversed(self.made):
            with contextlib.suppress(Exception):  # a crashed broker may fail to close: judged already
                await b.close()


STUCK_AFTER = 100.0
"""Seconds after which a broker test prints every asyncio task's stack (pytest-timeout ends it at
120 s and shows only the threads', where an idle loop waits in ``select``): which await never
ended. Once, in CI, a Redis presence test hung so, and nothing showed where."""


def _print_tasks() -> None:
    print(f"=== a broker test still runs after {STUCK_AFTER:g} s: its asyncio tasks ===", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


@pytest.fixture
async def broker(backend: Backend) -> AsyncIterator[Brokers]:
    """A factory of fresh brokers of one backend (see :class:`Brokers`)."""
    f = Brokers(backend)
    stuck = asyncio.get_running_loop().call_later(STUCK_AFTER, _print_tasks)
    try:
        yield f
    finally:
        await f.aclose()
        stuck.cancel()
