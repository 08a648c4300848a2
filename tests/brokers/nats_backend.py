"""The conformance suite's NATS backend: :class:`~kcprpc.nats_broker.NatsBroker` on a real
``nats-server -js`` (:mod:`nats_server`), started once per test session; each test gets its own
prefix, so its own streams."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from backends import ServerBackend, Settings
from nats_server import NatsServer

from kcprpc.broker import Broker
from kcprpc.nats_broker import NatsBroker


class NatsBackend(ServerBackend):
    """NatsBroker; ``stop``/``start`` keep the JetStream store (same epoch), ``restart`` wipes it."""

    name = "nats"
    lacks: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.server = NatsServer()

    def make(self, namespace: str, settings: Settings) -> Broker:
        return NatsBroker(
            self.server.url,
            prefix=namespace,
            history=settings.history,
            history_ttl=settings.history_ttl,
            policies=settings.policies,
            presence_ttl=settings.presence_ttl,
            timeout=settings.timeout,
            reconnect_wait=0.1,
        )

    async def stop(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.restart, wipe=True)

    async def cut(self, broker: Broker) -> None:
        # close the broker's TCP connection under nats-py: it sees EOF and reconnects
        nc: Any = getattr(broker, "_nc", None)
        assert nc is not None
        nc._transport.close()

    async def crash(self, broker: Broker) -> None:
        # a killed process: no presence cleanup, no refresh any more, its connection gone
        b: Any = broker
        b._present.clear()
        await b.close()
