"""The conformance suite's Redis backend: one real ``redis-server`` for the session
(redis_server.py), a key prefix of its own per test, outages by stopping the server with its data
saved, restarts that lose the data, cut subscription links (``CLIENT KILL TYPE pubsub``) and
crashed nodes (:meth:`RedisBroker.abort`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from backends import ServerBackend, Settings
from redis_server import RedisServer

from kcprpc.broker import Broker


class RedisBackend(ServerBackend):
    name = "redis"
    lacks: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self.server = RedisServer()

    def make(self, namespace: str, settings: Settings) -> Broker:
        from kcprpc.redis_broker import RedisBroker

        return RedisBroker(
            self.server.url(),
            prefix=f"kcprpc-test:{namespace}",
            history=settings.history,
            history_ttl=settings.history_ttl,
            policies=settings.policies,
            presence_ttl=settings.presence_ttl,
            timeout=settings.timeout,
            reconnect_initial=0.02,
            reconnect_max=0.2,
        )

    async def stop(self) -> None:
        # SHUTDOWN SAVE writes the data to the server's dir; start() loads it again
        await asyncio.to_thread(self._shutdown_save)

    def _shutdown_save(self) -> None:
        p = self.server.proc
        assert p is not None
        with contextlib.suppress(OSError):  # the server closes the connection as it exits
            self.server.command("SHUTDOWN", "SAVE")
        p.wait(timeout=10)
        self.server.proc = None

    async def restart(self) -> None:
        await asyncio.to_thread(self._restart_empty)

    def _restart_empty(self) -> None:
        self.server.stop()  # SIGKILL: nothing saved
        (self.server.dir / "dump.rdb").unlink(missing_ok=True)
        self.server.start()

    async def cut(self, broker: Broker) -> None:
        from kcprpc.redis_broker import RedisBroker

        assert isinstance(broker, RedisBroker)
        name = f"{broker.prefix}/{broker.node_id}"
        ids = await asyncio.to_thread(self.server.client_ids, name)
        assert ids, f"no subscription link named {name}"
        for i in ids:
            await asyncio.to_thread(self.server.command, "CLIENT", "KILL", "ID", i)

    async def crash(self, broker: Broker) -> None:
        from kcprpc.redis_broker import RedisBroker

        assert isinstance(broker, RedisBroker)
        await broker.abort()
