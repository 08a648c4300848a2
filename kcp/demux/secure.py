"""Secure mode's lookup: sessions by connection ID, handshakes by the :class:`kcp.secure.SecureServer`
core (see :mod:`kcp.demux`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Final, Literal

from kcp.admission import Admission, AdmissionConfig
from kcp.batch import Address
from kcp.config import SecureWire
from kcp.datagram_budget import DatagramBudget
from kcp.demux import DemuxHost
from kcp.endpoint import Endpoint
from kcp.errors import KCPUsageError
from kcp.logutil import RateLimitedLog
from kcp.secure import Reason, SecureConnection, SecureServer
from kcp.secure.config import Refusal, outside_policy
from kcp.secure.connection import reason_text
from kcp.secure.packet import CID_LEN, TRANSPORT_TYPES
from kcp.secure_path import CLOSE_COPIES, SecurePath, conv_of, secure_config
from kcp.session import KCPSession
from kcp.snmp import track_secure_source, untrack_secure_source
from kcp.stats import fold_secure

__all__ = ["LOG_BURST", "LOG_INTERVAL", "SecureDemux"]

_CID_END: Final = 1 + CID_LEN
_WARN_REFUSALS: Final = (Reason.PARAMS_REFUSED, Reason.VERSION_MISMATCH, Reason.BAD_TOKEN)
LOG_BURST: Final = 10
"""Records per kind and listener that :class:`SecureDemux` logs per ``LOG_INTERVAL`` seconds."""
LOG_INTERVAL: Final = 60.0


class SecureDemux:
    """The listener's lookup in secure mode: sessions by connection ID, handshakes by the core."""

    __slots__ = (
        "_timer_entry",
        "_user_authorize",
        "budget",
        "draining",
        "ep",
        "host",
        "log",
        "paths",
        "server",
    )

    mode: Literal["compat", "secure"] = "secure"

    def __init__(self, host: DemuxHost, wire: SecureWire) -> None:
        self.host = host
        self.ep: Endpoint = host.endpoint
        self.draining = False
        self._timer_entry = -1  # TimerTarget: kcp.timers.NO_ENTRY
        self.paths: dict[bytes, SecurePath] = {}  # by our connection ID: the hot-path lookup
        self.log = RateLimitedLog(logging.getLogger("kcp.secure"), burst=LOG_BURST, interval=LOG_INTERVAL)
        self._user_authorize: Callable[[bytes, bytes | None, Any], str | None] | None = wire.authorize
        config = secure_config(wire, host.config, server=True)
        self.server = SecureServer(config, host.rng, authorize=self._authorize, now=self.ep.timers.now_ms())
        self.budget = DatagramBudget(config.datagram_rate, config.datagram_burst, config.exempt)
        """Under load, the datagrams per second the connections of one address may cost."""
        track_secure_source(self.server)

    def dispatch(self, data: bytes, addr: Address, now: int) -> None:
        """One datagram on the listener's socket."""
        if data and data[0] in TRANSPORT_TYPES:
            path = self.paths.get(bytes(data[1:_CID_END]))
            if path is not None:
                budget = path.budget
                if budget is not None and now < self.ep.busy_until and not budget.take(now):
                    # behind the socket, and this address is over its share: not even decrypted
                    self.server.counters.datagrams_rate_limited += 1
                    return
                if not path.input(data, addr, now):
                    self.server.counters.transport_rejected += 1
                return
        server = self.server
        r = server.receive(data, addr, now)
        if r.replies:
            self.ep.tx.extend(r.replies)
            timer = server.get_timer()
            if timer is not None:
                self.ep.timers.schedule(self, timer)
        if r.refusal is not None:
            self._log_refusal(r.refusal.code, r.refusal.message, addr)
        elif r.clamped is not None:
            self.log.info("clamped", "secure handshake from %s: %s (the server's policy)", addr, r.clamped)
        if r.accepted and r.connection is not None:
            self._accept(r.connection, r.payload, addr, now)
        else:  # a handshake step, a reset, garbage: no session here to keep the address cached for
            self.ep.forget(addr)

    def conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool:
        self.host.count("dropped_bad_conv")
        return False

    def key_of(self, s: KCPSession) -> Any:
        conn = s.secure
        assert conn is not None
        return conn.local_cid

    def session_gone(self, key: Any, removed: bool) -> None:
        """A session ended: its connection ID no longer routes, and the socket's address caches
        forget its peer's address (else every address that ever connected stays cached until the
        caches fill: :meth:`kcp.endpoint.Endpoint.forget`)."""
        path = self.paths.pop(key, None)
        if path is not None:
            self._release_budget(path)
            if not self.ep.closed:
                self.ep.forget(path.conn.peer_addr)
        self.update_load()

    def _release_budget(self, path: SecurePath) -> None:
        """The connection under ``path`` no longer spends its address's datagram budget."""
        if path.budget is not None:
            self.budget.release(path.budget)
            path.budget = None

    def sizes(self) -> dict[str, int]:
        out = dict.fromkeys(Admission(AdmissionConfig()).sizes(), 0)
        out["datagram_budgets"] = len(self.budget)  # addresses with a live connection (and a budget)
        return out

    def _log_refusal(self, code: int, message: str, addr: Address) -> None:
        if code in _WARN_REFUSALS and not self.draining:
            self.log.warning(
                "refused", "secure handshake from %s refused: %s", addr, reason_text(code, message)
            )
        else:  # cipher suite (the client retries at once), draining: routine
            self.log.info(
                "refused-routine", "secure handshake from %s refused: %s", addr, reason_text(code, message)
            )

    def _refuse(self, conn: SecureConnection, addr: Address, code: int, message: str, now: int) -> None:
        """A confirmed handshake gets no session: authenticated CLOSE with the reason, state freed."""
        if not conn.closed:
            pkt = conn.close(code, message, now)
            for _ in range(CLOSE_COPIES):
                self.ep.tx.append((pkt, addr))
        self.server.remove(conn)
        fold_secure(conn.counters)

    def _accept(self, conn: SecureConnection, payload: bytes | None, addr: Address, now: int) -> None:
        host = self.host
        if conn.closed:  # the client refused our answer: its CLOSE confirmed the keys and ended it
            self._refuse(conn, addr, Reason.NONE, "", now)
            self.log.info(
                "client refused",
                "secure client %s closed while confirming the handshake: %s",
                addr,
                reason_text(conn.close_code or 0, conn.close_message),
            )
            return
        refusal = host.room_for_one(addr=conn.peer_addr)
        if refusal is not None or host.closed:
            # the table is full (or we are closing): tell the client at once, authenticated
            self._refuse(conn, addr, Reason.SERVER_BUSY, refusal or "listener closed", now)
            return
        p = conn.params
        problem = outside_policy(self.server.config, p)  # negotiate() never allows it: a last check
        try:
            if problem is not None:
                raise KCPUsageError(problem)
            cfg = dataclasses.replace(host.config, mtu=p.mtu, snd_wnd=p.rcv_wnd, rcv_wnd=p.snd_wnd)
            path = SecurePath(self.ep, conn, now, self.server.remove)
            s = KCPSession(
                host,
                conv_of(conn),
                conn.peer_addr,
                cfg,
                path,
                fec=(p.data_shards, p.parity_shards),
                rng=host.rng,
            )
        except Exception as exc:  # no session for these parameters: tell the client, keep nothing
            self.server.counters.accept_failed += 1
            if problem is not None:
                self._refuse(conn, addr, Reason.PARAMS_REFUSED, problem, now)
            else:
                self._refuse(conn, addr, Reason.INTERNAL, "server could not set up the session", now)
            self.log.warning(
                "accept failed",
                "secure session from %s not set up (%s: %s); sent CLOSE",
                addr,
                type(exc).__name__,
                str(exc),  # not the exception: a kept record must not hold its frames (and the connection)
            )
            return
        path.budget = self.budget.charge(conn.peer_addr, now)
        self.paths[conn.local_cid] = path
        host.register(conn.local_cid, s)
        if conn.outbox or conn.events:
            path.on_timer(now)
        if payload is not None:
            s.feed(payload, now)
        self.update_load()

    def update_load(self) -> None:
        """Ask for address-proving cookies while the session table is nearly full.

        The core already switches to stateless retries when half-open handshakes reach
        ``retry_threshold`` or it did ``retry_rate`` handshakes this second; a listener with
        (nearly) no room for more sessions is under load as well.
        """
        host = self.host
        self.server.host_busy = self.draining or host.session_count() * 10 >= host.max_sessions * 9

    def close(self) -> None:
        """The listener closed: forget every half-open handshake and leave the timer heap."""
        for path in self.paths.values():
            self._release_budget(path)
        self.paths.clear()
        self.ep.timers.cancel(self)
        server = self.server
        server.handle_timer(self.ep.timers.now_ms() + server.config.half_open_timeout_ms + 1)
        if self.server is not None:
            untrack_secure_source(self.server)
            fold_secure(server.counters)

    def _on_timer(self, now: int) -> None:
        server = self.server
        server.handle_timer(now)
        timer = server.get_timer()
        if timer is not None:
            self.ep.timers.schedule(self, timer)

    def _authorize(self, token: bytes, client_static: bytes | None, addr: Any) -> str | Refusal | None:
        """The hook given to the core: refuses while draining, then asks the user's hook."""
        if self.draining:
            return Refusal(Reason.GOING_AWAY, "server is going away (draining); try another server")
        user = self._user_authorize
        return user(token, client_static, addr) if user is not None else None
