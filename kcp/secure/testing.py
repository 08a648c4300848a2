"""Helpers for tests and benchmarks: seeded randomness and an in-memory handshake driver."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Callable
from typing import Any

from .config import Authorizer, ClientHello, HandshakeConfig
from .connection import SecureConnection
from .handshake import SecureClient, SecureServer

CLIENT_ADDR = ("10.0.0.2", 40000)
SERVER_ADDR = ("10.0.0.1", 4000)


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    """A deterministic ``rng(n) -> bytes`` for tests (never for real keys)."""
    r = random.Random(seed)
    return r.randbytes


class HostileClient(SecureClient):
    """A client whose proposal differs from what its (validated) config allows: ``changes`` replace
    fields of the :class:`ClientHello` it sends, e.g. ``HostileClient(cfg, fec=(200, 100))``.
    For tests and the abuse bench: the server must refuse or lower such proposals."""

    def __init__(
        self, config: HandshakeConfig, rng: Callable[[int], bytes] = os.urandom, **changes: Any
    ) -> None:
        self._changes = changes
        super().__init__(config, rng)

    def _hello(self) -> ClientHello:
        return dataclasses.replace(super()._hello(), **self._changes)


class CookieClient(SecureClient):
    """A client whose initiations carry the mac2 of a cookie fetched earlier (``cookie``; None: none
    until a RETRY brings one), as a flooding attacker's do once one RETRY proved its address: a
    server under load then answers them without asking again. :attr:`cookie` is the one it holds.
    For tests and the abuse bench: the server's handshake budget per address must stop them."""

    def __init__(
        self, config: HandshakeConfig, cookie: bytes | None = None, rng: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._given = cookie
        super().__init__(config, rng)

    def _start(self, now: int) -> bytes:
        super()._start(now)
        self._cookie = self._given
        return self._current()

    @property
    def cookie(self) -> bytes | None:
        return self._cookie


class HandshakeRun:
    """The outcome of :func:`run_handshake`: both endpoints, connections, and every datagram seen."""

    def __init__(self, client: SecureClient, server: SecureServer) -> None:
        self.client = client
        self.server = server
        self.client_conn: SecureConnection | None = None
        self.server_conn: SecureConnection | None = None
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        self.now = 0


def run_handshake(
    client_cfg: HandshakeConfig,
    server_cfg: HandshakeConfig,
    *,
    seed: int = 1,
    authorize: Authorizer | None = None,
    client_addr: Any = CLIENT_ADDR,
    server: SecureServer | None = None,
    max_ms: int = 60_000,
    drop: Callable[[bytes], bool] | None = None,
    client: SecureClient | None = None,
) -> HandshakeRun:
    """Run a handshake over a perfect in-memory link (1 ms per hop), firing timers as they fall due.

    Checks the anti-amplification rule on every server reply (raises AssertionError otherwise).
    ``client`` replaces the client built from ``client_cfg`` (e.g. a :class:`HostileClient`).
    """
    rng = seeded_rng(seed)
    srv = (
        server
        if server is not None
        else SecureServer(server_cfg, seeded_rng(seed + 1000), authorize=authorize)
    )
    cli = client if client is not None else SecureClient(client_cfg, rng)
    run = HandshakeRun(cli, srv)
    now = 0
    pending_to_server = [cli.initiate(now)]
    while now <= max_ms:
        for dgram in pending_to_server:
            run.to_server.append(dgram)
            if drop is not None and drop(dgram):
                continue
            r = srv.receive(dgram, client_addr, now)
            if r.accepted:
                run.server_conn = r.connection
            for reply, addr in r.replies:
                assert len(reply) <= len(dgram), "amplification: reply larger than request"
                assert addr == client_addr
                run.to_client.append(reply)
                if drop is not None and drop(reply):
                    continue
                conn = cli.receive(reply, SERVER_ADDR, now + 1)
                if conn is not None:
                    run.client_conn = conn
        now += 1
        pending_to_server = cli.datagrams_to_send(now)
        if run.client_conn is not None:
            pending_to_server += [d for d, _ in run.client_conn.datagrams_to_send(now)]
        if not pending_to_server:
            if cli.state != "initiating":
                break
            timer = cli.get_timer()
            if timer is None:
                break
            now = max(now, timer)
            cli.handle_timer(now)
            pending_to_server = cli.datagrams_to_send(now)
    run.now = now
    return run


def seal_raw(conn: SecureConnection, frame: bytes, now: int) -> bytes:
    """A transport datagram that carries ``frame`` (type byte and body) as it is: what a hostile
    peer that holds the keys can send (malformed DATA_PART pieces, say). For tests only."""
    return conn.seal_frame(frame, now)
