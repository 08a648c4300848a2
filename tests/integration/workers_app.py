"""The app the worker tests serve (``kcprpc serve tests.integration.workers_app:app --workers 2``):
a service that says which process answered."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import kcprpc
from kcprpc.workers import current_worker

KEY = "workers test key"


class Who(kcprpc.Service, name="test.Who"):
    """Which worker answered."""

    async def whoami(self) -> dict[str, int]:
        """The answering process's pid, worker index (-1 outside workers) and session count."""
        w = current_worker()
        server = kcprpc.current_context().server
        return {"pid": os.getpid(), "worker": -1 if w is None else w.index, "sessions": len(server.sessions)}


def app() -> kcprpc.Server:
    """A factory: each worker builds its own Server (the CLI sets host and port)."""
    return kcprpc.Server([Who()], key=KEY)


@contextlib.asynccontextmanager
async def _no_database(server: kcprpc.Server) -> AsyncIterator[None]:
    raise RuntimeError("the database is unreachable")
    yield


def broken_app() -> kcprpc.Server:
    """An app whose startup fails in every worker (its lifespan raises)."""
    return kcprpc.Server([Who()], key=KEY, lifespan=_no_database)


def push_app() -> kcprpc.Server:
    """The app of tests/integration/test_workers_redis.py: :class:`Who` and the multi-node tests'
    room/topic service (``--broker redis://...`` gives every worker the shared broker)."""
    from tests.integration.node_service import Node

    return kcprpc.Server([Who(), Node()], key=KEY)
