"""The server's resumable sessions (docs/rpc.md, "Resume: the same session after a reconnect").

:class:`ResumeTable` is the bookkeeping: who holds a valid resume token, which sessions are
detached (their connection lost, kept for a resume) and in what order, and the check of a
resuming HELLO's claim; it never runs a hook and never closes anything. :class:`SessionKeeper`
decides what happens to a session whose connection is lost (detached, or gone), to a detached
one whose window ends or that is evicted, and to a resuming HELLO, and runs the application's
``on_detach`` / ``on_resume`` hooks.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from kcp.logutil import RateLimitedLog
from kcp.ratelimit import SourceKeys, address_keys
from kcprpc.codec import pack
from kcprpc.errors import RpcError
from kcprpc.msgpack_size import held_size
from kcprpc.resume import TOKEN_SIZE, parse_claim, resume_proof
from kcprpc.server_config import ServerConfig
from kcprpc.server_session import ServerSession, SessionHook
from kcprpc.transport import maybe_await, spawn

log = logging.getLogger("kcprpc.server")
_hook_log = RateLimitedLog(log, burst=10, interval=60.0)  # a client decides how often hooks run

__all__ = [
    "DETACHED_BASE",
    "EXPIRED",
    "REFUSED",
    "RESUME_COUNTERS",
    "KeeperHost",
    "ResumeTable",
    "SessionKeeper",
    "detached_cost",
]

DETACHED_BASE: Final = 6 * 1024
"""Bytes one detached session holds besides its metadata, presence info and names (its object,
protocol state, sets and dicts; measured as the server's RSS growth per session)."""


def detached_cost(session: ServerSession) -> int:
    """What ``session`` is charged against ``max_detached_bytes`` while it is detached: its
    metadata and presence info as they are held (decoded estimates, not their packed size)."""
    names = sum(len(r) for r in session.rooms) + sum(len(t) for t in session.topics)
    return (
        DETACHED_BASE
        + held_size(pack(session.metadata))
        + held_size(pack(session.presence))
        + 2 * names
        + session.held_events_bytes
        + (session.direct.bytes if session.direct is not None else 0)
    )


EXPIRED: Final = "session expired"
"""Why a resume failed: the session is gone (its window ended, it was evicted, or never was)."""
REFUSED: Final = "resume refused"
"""Why a resume failed: the claim was malformed, its proof wrong (a forged or used token, another
connection's proof), the peer's identity differs, or ``on_resume`` refused it."""

RESUME_COUNTERS: Final = (
    "sessions_detached",  # connections lost whose session was kept for a resume
    "sessions_resumed",  # ... and taken back by their client
    "sessions_expired",  # ... and gone when their window ended (or was set to 0)
    "resumes_refused",  # resume claims refused: malformed, bad proof, another identity, on_resume
    "resumes_expired",  # resume claims of a session no longer kept (its window ended, a restart: honest)
    "detached_evicted",  # detached sessions gone at once past max_detached_sessions
    "detached_events_held",  # reliable events sent to detached sessions, held for their resume
    "detached_events_overflowed",  # detached sessions gone: sent more than detached_send_buffer
)


class ResumeTable:
    """Sessions holding a valid resume token (connected or detached), and the detached ones in the
    order they detached (the oldest is evicted first). ``rng`` draws the tokens.

    One address (``keys``: an IPv4 address or IPv6 /64, :func:`kcp.ratelimit.address_keys`) keeps
    at most ``ServerConfig.max_connections_per_address`` detached sessions: past it its own oldest
    goes, so a client that connects and vanishes again and again cannot push everyone else's
    sessions out of the table."""

    def __init__(
        self,
        config: ServerConfig,
        stats: dict[str, int],
        rng: Callable[[int], bytes] = os.urandom,
        keys: SourceKeys | None = None,
    ) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng
        self.keys = keys if keys is not None else address_keys()
        self.by_id: dict[str, ServerSession] = {}
        self.detached: OrderedDict[str, ServerSession] = OrderedDict()
        self.detached_bytes = 0  # the detached sessions' charge (detached_cost) against max_detached_bytes
        self._cost: dict[str, int] = {}
        # a detached session's address (its key) -> that address's detached sessions, oldest first
        self._by_source: dict[Any, OrderedDict[str, ServerSession]] = {}
        self._source: dict[str, Any] = {}  # a detached session's id -> its address's key
        for k in RESUME_COUNTERS:
            stats.setdefault(k, 0)

    @property
    def enabled(self) -> bool:
        """True when sessions may be kept for a resume at all."""
        return bool(self.config.resume_window) and self.config.max_detached_sessions > 0

    def ticket(self, session: ServerSession) -> dict[str, Any] | None:
        """A fresh token for ``session``'s WELCOME (the previous one is void), or None when it
        cannot be resumed (resume off, a window of 0, or a connection without a channel binding)."""
        window = session.resume_window
        if (
            not self.enabled
            or not window
            or window <= 0
            or not session.may_resume
            or session.conn.channel_binding is None
        ):
            self.forget(session)
            return None
        token = self.rng(TOKEN_SIZE)
        session.resume_token = token
        self.by_id[session.id] = session
        return {"token": token, "window_ms": int(window * 1000)}

    def claim(self, new: ServerSession, value: Any) -> tuple[ServerSession, bytes, int] | str:
        """Check a HELLO's ``resume`` claim arriving on ``new``'s connection. Proven: the session it
        names, the token it used, which is void from now on (the session is out of the detached
        list, its timer stopped), and the last numbered direct event the client says it handled.
        Else :data:`EXPIRED` or :data:`REFUSED` (counted); the session a forged claim names is not
        touched."""
        stats = self.stats
        claim = parse_claim(value)
        if claim is None:
            stats["resumes_refused"] += 1
            return REFUSED
        old = self.by_id.get(claim.sid)
        token = old.resume_token if old is not None else None
        # not may_resume: ended meanwhile (session.close(), a penalty, more events than
        # detached_send_buffer) while its teardown has not run yet
        if old is None or token is None or old is new or not old.may_resume:
            stats["resumes_expired"] += 1
            return EXPIRED
        binding = new.conn.channel_binding
        if binding is None or not hmac.compare_digest(resume_proof(token, claim.sid, binding), claim.proof):
            stats["resumes_refused"] += 1
            return REFUSED
        key = old.peer_public_key
        if key is not None and key != new.peer_public_key:
            stats["resumes_refused"] += 1
            return REFUSED
        self.forget(old)  # the token is used: once
        return old, token, claim.last

    def put_back(self, session: ServerSession, token: bytes) -> list[ServerSession]:
        """A proven resume did not complete (its new connection was lost meanwhile): the session is
        detached again with the token the client still holds (its window starts again). Returns
        the sessions evicted past the bounds to make room for it again (the caller ends them)."""
        session.resume_token = token
        self.by_id[session.id] = session
        self._keep(session)
        return self._evict([])

    def detach(self, session: ServerSession) -> list[ServerSession]:
        """``session`` is detached now: the sessions evicted to make room (its address's oldest
        past that address's share, then the oldest of all; no longer resumable; the caller ends
        them)."""
        self._keep(session)
        evicted: list[ServerSession] = []
        cfg = self.config
        mine = self._by_source.get(self._source.get(session.id))
        cap = cfg.max_connections_per_address
        while mine is not None and cap is not None and len(mine) > cap:
            oldest = next(iter(mine.values()))
            self.forget(oldest)
            evicted.append(oldest)
        return self._evict(evicted)

    def recharge(self, session: ServerSession, grew: int) -> list[ServerSession]:
        """A detached ``session`` holds ``grew`` bytes more (events sent to it): add them to its
        charge; returns the sessions evicted past the bounds (the caller ends them)."""
        if not self.waiting(session):
            return []
        self._cost[session.id] += grew
        self.detached_bytes += grew
        return self._evict([])

    def _evict(self, evicted: list[ServerSession]) -> list[ServerSession]:
        cfg = self.config
        while len(self.detached) > cfg.max_detached_sessions or (
            self.detached_bytes > cfg.max_detached_bytes and self.detached
        ):
            oldest = next(iter(self.detached.values()))
            self.forget(oldest)
            evicted.append(oldest)
        return evicted

    def _keep(self, session: ServerSession) -> None:
        cost = detached_cost(session)
        sid = session.id
        self.detached[sid] = session
        self.detached_bytes += cost - self._cost.get(sid, 0)
        self._cost[sid] = cost
        key = self.keys.key(session.remote_address)
        if key is not None and sid not in self._source:
            self._source[sid] = key
            self._by_source.setdefault(key, OrderedDict())[sid] = session

    def waiting(self, session: ServerSession) -> bool:
        """True while ``session`` is detached and still resumable."""
        return self.detached.get(session.id) is session

    def forget(self, session: ServerSession) -> int:
        """``session`` can no longer be resumed (its token void, out of the detached list, its
        timer stopped); returns its charge against ``max_detached_bytes`` (0 if not detached)."""
        session.resume_token = None
        cost = 0
        if self.by_id.get(session.id) is session:
            del self.by_id[session.id]
        if self.detached.get(session.id) is session:
            del self.detached[session.id]
            cost = self._cost.pop(session.id, 0)
            self.detached_bytes -= cost
            key = self._source.pop(session.id, None)
            if key is not None:
                mine = self._by_source[key]
                del mine[session.id]
                if not mine:
                    del self._by_source[key]
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        return cost


class KeeperHost(Protocol):
    """What :class:`SessionKeeper` uses of its server (:class:`kcprpc.Server`)."""

    config: ServerConfig
    stats: dict[str, int]
    sessions: set[ServerSession]
    tasks: set[asyncio.Task[Any]]
    on_detach: SessionHook | None
    on_resume: SessionHook | None

    @property
    def closing(self) -> bool:
        """True once the server began shutting down."""


class SessionKeeper:
    """What happens to a session whose connection is lost, and to a resuming HELLO: it is
    detached (kept, its window running, ``on_detach``), taken back (``on_resume``, then it runs on
    the new connection), or gone (``gone(session)``: out of the hub, ``on_disconnect``). The
    server gives it ``end_connection(session)`` (a connection's teardown: calls cancelled, send
    backlog released) and ``gone``."""

    def __init__(
        self,
        host: KeeperHost,
        table: ResumeTable,
        end_connection: Callable[[ServerSession], None],
        gone: Callable[[ServerSession], Awaitable[None]],
    ) -> None:
        self.host = host
        self.table = table
        self.end_connection = end_connection
        self.gone = gone

    def may_detach(self, s: ServerSession) -> bool:
        """True when ``s``, whose connection is lost, is kept for a resume."""
        window = s.resume_window
        return (
            s.may_resume
            and s.resume_token is not None
            and not self.host.closing
            and bool(window)
            and window is not None
            and window > 0
            and self.table.enabled
        )

    def detach(self, s: ServerSession) -> list[ServerSession]:
        """Keep ``s`` for a resume: it lets go of its connection and stays in its rooms and topics
        (nothing is sent to it). Returns the sessions evicted to make room for it (past
        ``max_detached_sessions``, the ones detached longest ago), for :meth:`detached`."""
        s.release()
        s.detaches += 1
        self.host.stats["sessions_detached"] += 1
        evicted = self.table.detach(s)
        self.host.stats["detached_evicted"] += len(evicted)
        return evicted

    async def detached(self, s: ServerSession, evicted: list[ServerSession], this: int) -> None:
        """After :meth:`detach` (``this``: ``s.detaches`` right after it): the evicted sessions
        are gone, ``on_detach`` runs, then the window of ``s`` (``s.resume_window``, read now)
        starts. Nothing runs for ``s`` when it was resumed and detached again meanwhile (while
        the lost connection's close lingered): that detach runs its own."""
        for old in evicted:
            await self.gone(old)
        if s.detaches != this:
            return
        if self.host.on_detach is not None and self.table.waiting(s):
            try:
                await maybe_await(self.host.on_detach(s))
            except Exception:
                _hook_log.exception("on_detach", "on_detach hook failed")
        if not self.table.waiting(s) or s.detaches != this:
            return  # resumed, evicted or gone meanwhile
        window = s.resume_window
        if not window or window <= 0:
            self.host.stats["sessions_expired"] += 1
            await self.gone(s)
            return
        if s.expiry is not None:
            s.expiry.cancel()
        s.expiry = asyncio.get_running_loop().call_later(window, self.expire, s)

    def wait_again(self, s: ServerSession, token: bytes) -> None:
        """A proven resume of ``s`` did not complete (its new connection was lost): ``s`` is
        detached again, resumable with ``token``, its window started again; the sessions evicted
        to make room for it (it may be one of them, past the bytes bound) are ended."""
        evicted = self.table.put_back(s, token)
        if self.table.waiting(s):
            window = s.resume_window or self.host.config.resume_window or 0.0
            s.expiry = asyncio.get_running_loop().call_later(window, self.expire, s)
        self.host.stats["detached_evicted"] += len(evicted)
        for other in evicted:
            spawn(self.host.tasks, self.gone(other))

    def expire(self, s: ServerSession) -> None:
        """The window of a detached ``s`` ended: it is gone (its timer's callback)."""
        s.expiry = None
        if self.table.waiting(s):
            self.host.stats["sessions_expired"] += 1
            self.table.forget(s)
            spawn(self.host.tasks, self.gone(s))

    async def resume(self, session: ServerSession, claim: Any) -> ServerSession | str:
        """A HELLO on ``session`` (new, not welcomed) asks to resume with ``claim``. The claim must
        prove the token of a session that is still resumable, on this connection's channel
        binding, from the same peer key; then ``on_resume`` may refuse (RpcError). A session the
        server still thought connected is taken over (its old connection ends). Returns the
        resumed session, which now runs on ``session``'s connection, or why not (``session``
        then goes on as a fresh one)."""
        got = self.table.claim(session, claim)
        if isinstance(got, str):
            return got
        old, token, last = got
        if not old.detached:  # its old connection is not known to be lost yet: end it now
            conn = old.conn
            self.end_connection(old)
            self.host.sessions.discard(old)
            old.release()
            spawn(self.host.tasks, conn.close())
        if self.host.on_resume is not None:
            try:
                await maybe_await(self.host.on_resume(old))
            except asyncio.CancelledError:  # the server shuts down, or the new connection was lost
                if self.host.closing:
                    await self.gone(old)
                else:
                    self.wait_again(old, token)
                raise
            except Exception as e:
                if not isinstance(e, RpcError):
                    _hook_log.exception("on_resume", "on_resume hook failed")
                self.host.stats["resumes_refused"] += 1
                await self.gone(old)
                return REFUSED
        if self.host.closing or not old.may_resume:
            # shutting down, or the session was ended meanwhile: session.close(), more events
            # held for it than detached_send_buffer (the client's resume fails: it missed some)
            self.host.stats["resumes_expired"] += 1
            await self.gone(old)
            return EXPIRED
        if session.closed:  # the new connection was lost meanwhile: the session waits again
            self.wait_again(old, token)
            return EXPIRED
        old.adopt(session, last)
        self.host.sessions.discard(session)
        self.host.sessions.add(old)
        self.host.stats["sessions_resumed"] += 1
        return old
