"""The brokers the conformance suite runs against, one :class:`Backend` each, registered in
:data:`BACKENDS`. Adding a broker to the suite = one subclass here (or in its own file) and one
entry in :data:`BACKENDS`.

A backend starts its servers once per test session (:meth:`Backend.open`), makes brokers on a
namespace of its own per test (:meth:`Backend.make`: a prefix, a database), and offers the
features the suite's cases need. A feature it cannot offer is named in :attr:`Backend.lacks` with
the reason: the cases that need it (``@pytest.mark.needs("feature")``) are then not generated for
it at all (never skipped).

Features:

* ``nodes``: several broker instances share one backend (several processes or machines);
* ``outage``: the backend can be stopped and started again with its data kept;
* ``restart``: the backend can be restarted with its data lost (the epoch changes);
* ``cut``: a broker's subscription link can be cut while the backend stays up (messages
  published meanwhile must be filled from the history);
* ``crash``: a broker can die as a killed process does (its presence entries must expire).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

from server_process import ServerProcess

from kcprpc.broker import Broker, HistoryPolicies, MemoryBroker


@dataclass(frozen=True)
class Settings:
    """What a case asks of a broker. ``presence_ttl``: seconds a crashed node's presence entries
    live (brokers across processes); ``timeout``: how long a call may wait on an unreachable
    backend before it raises BrokerUnavailable."""

    history: int = 1024
    history_ttl: float | None = None
    policies: HistoryPolicies | None = None
    presence_ttl: float = 1.0
    timeout: float = 0.5


class Backend:
    """One kind of broker under test."""

    name: ClassVar[str] = "?"
    lacks: ClassVar[dict[str, str]] = {}

    def open(self) -> None:
        """Start what the brokers connect to (once per test session)."""

    def close(self) -> None:
        """Stop it (end of the session)."""

    def make(self, namespace: str, settings: Settings) -> Broker:
        """A broker (not started yet) on ``namespace``: brokers made on one namespace share their
        keys, as processes sharing one backend do; other namespaces see none of them."""
        raise NotImplementedError

    def node(self, of: Broker, namespace: str, settings: Settings) -> Broker:
        """Another broker instance on ``of``'s namespace (another process or machine)."""
        return self.make(namespace, settings)

    async def tick(self) -> None:
        """Let a little of the brokers' time pass (one step of a bounded wait on a condition)."""
        await asyncio.sleep(0.01)

    async def ensure_up(self) -> None:
        """After each test: the backend is running again (a failed case may have left it stopped)."""

    async def stop(self) -> None:
        """``outage``: make the backend unreachable, its data kept."""
        raise NotImplementedError

    async def start(self) -> None:
        """``outage``/``restart``: bring the backend back (after :meth:`stop` or :meth:`restart`)."""
        raise NotImplementedError

    async def restart(self) -> None:
        """``restart``: stop the backend, losing every key, and start it again on the same address."""
        raise NotImplementedError

    async def cut(self, broker: Broker) -> None:
        """``cut``: break ``broker``'s subscription link; the backend stays up."""
        raise NotImplementedError

    async def crash(self, broker: Broker) -> None:
        """``crash``: ``broker`` stops as a killed process would (no cleanup)."""
        raise NotImplementedError


class ServerBackend(Backend):
    """A backend on one real server process (``server``, set by the subclass): started once for
    the session, started again after a test that left it stopped."""

    server: ServerProcess

    def open(self) -> None:
        self.server.start()

    def close(self) -> None:
        self.server.close()

    async def ensure_up(self) -> None:
        if not self.server.running:
            await asyncio.to_thread(self.server.start)

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)


class Clock:
    """An injected clock (seconds) for the in-process broker."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class MemoryBackend(Backend):
    """:class:`MemoryBroker`: one process; time is an injected clock each :meth:`tick` moves on."""

    name = "memory"
    lacks: ClassVar[dict[str, str]] = {
        "outage": "in-process: never unreachable",
        "restart": "in-process: nothing outlives the broker object",
        "cut": "in-process: no subscription link to cut",
        "crash": "in-process: the presence dies with the process that lists it",
    }

    def __init__(self) -> None:
        self.clock = Clock()

    def make(self, namespace: str, settings: Settings) -> Broker:
        return MemoryBroker(
            history=settings.history,
            history_ttl=settings.history_ttl,
            policies=settings.policies,
            now=self.clock,
        )

    def node(self, of: Broker, namespace: str, settings: Settings) -> Broker:
        # servers in one process share one MemoryBroker: that is its "several nodes"
        return of

    async def tick(self) -> None:
        self.clock.t += 0.05
        await asyncio.sleep(0)


def _all() -> dict[str, type[Backend]]:
    from nats_backend import NatsBackend
    from redis_backend import RedisBackend

    return {"memory": MemoryBackend, "redis": RedisBackend, "nats": NatsBackend}


BACKENDS: dict[str, type[Backend]] = _all()
"""name -> its Backend: the brokers every case of the suite runs against."""
