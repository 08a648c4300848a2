"""A client's connection lifecycle: connect, lose the link, drain on GOAWAY, reconnect.

:class:`Lifecycle` owns the client's current :class:`~kcprpc.link.Link` (``lifecycle.link``) and
everything that replaces it: the first connect (HELLO, WELCOME, the link's reader tasks), the
transport's events (a transport GOAWAY, a close with a status, a path change), a link that ends
(``on_disconnect``, then a reconnect when the client's :class:`~kcprpc.heartbeat.ReconnectPolicy`
asks for one, with ``HELLO.restore`` when it restores and ``HELLO.resume`` when the last
WELCOME gave a resume token: :mod:`kcprpc.resume`), and ``close()`` (which tells the server, so
that the session is not kept for a resume). The client reads
``lifecycle.link`` on every call and talks to the lifecycle only through its public names; the
lifecycle sees its client through :class:`LifecycleOwner` (the user's hooks, called with the
client, and two counters).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from kcprpc.client_config import ClientConfig
from kcprpc.direct_events import advance
from kcprpc.errors import RpcError, UsageError, no_answer
from kcprpc.heartbeat import ReconnectPolicy
from kcprpc.link import Link, LinkHooks
from kcprpc.protocol.frames import Event, Welcome
from kcprpc.resume import TOKEN_SIZE, SessionExpired, resume_proof
from kcprpc.status import Status
from kcprpc.subscriptions import Subscriptions
from kcprpc.transport import Connection, maybe_await
from kcprpc.transport_events import PathChanged, PeerClosed, PeerDraining, PingAnswered, TransportEvent

log = logging.getLogger("kcprpc.client")

__all__ = ["Connector", "Lifecycle", "LifecycleOwner"]

Connector = Callable[[], Awaitable[Connection]]


class LifecycleOwner(Protocol):
    """What the lifecycle reads and counts on its client: its config, the user's hooks (each called
    with the client itself) and the reconnect and path-change counters."""

    config: ClientConfig
    reconnects: int
    resumes: int
    path_changes: int
    on_reconnect: Callable[[Any], Any] | None
    on_disconnect: Callable[[Any, str], Any] | None
    on_give_up: Callable[[Any, RpcError], Any] | None
    on_path_change: Callable[[Any, Any, Any], Any] | None


class Lifecycle:
    """The connection of one client, across reconnects (see the module docstring).

    ``spawn`` runs a background awaitable held by the client; ``counters`` are the client's receive
    and protocol counters, shared by every link; ``rng`` draws the reconnect jitter."""

    def __init__(
        self,
        owner: LifecycleOwner,
        connector: Connector,
        subscriptions: Subscriptions,
        counters: dict[str, int],
        spawn: Callable[[Awaitable[Any]], None],
        rng: Callable[[int], bytes],
    ) -> None:
        self._owner = owner
        self._connector = connector
        self._subscriptions = subscriptions
        self._counters = counters
        self._spawn = spawn
        self._rng = rng
        self._hooks = LinkHooks(subscriptions.handle, subscriptions.room, self._on_goaway, self._link_lost)
        self._reconnect_task: asyncio.Task[None] | None = None
        self.link: Link | None = None
        """The current link (None before the first connect; after it ends, until replaced)."""
        self.closing = False
        """True once ``close()`` was called: nothing reconnects any more."""
        self.ready = asyncio.Event()
        """Set while a link is up and not draining."""
        self.gave_up: RpcError | None = None
        """Set when reconnecting stopped after ``ReconnectPolicy.max_attempts`` (UNAVAILABLE, with
        the last attempt's error): new calls and waits fail with it at once."""
        self._settled = asyncio.Event()  # set when connected or given up: what a waiter waits for
        self._resume: tuple[str, bytes] | None = None  # (session id, token) of the last WELCOME
        self.addresses = 1
        """How many server addresses the connector takes turns on (``kcprpc.connect(fallbacks=)``)."""
        self.rotate: Callable[[], None] | None = None
        """Moves the connector to its next address; called after each failed attempt."""

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self.link is not None and not self.link.closed

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until (re)connected; raises :attr:`gave_up` once reconnecting has given up."""
        while not self.ready.is_set():
            if self.closing:
                raise RpcError(Status.CANCELLED, "client closed")
            if self.gave_up is not None:
                raise self.gave_up
            self._settled.clear()
            await asyncio.wait_for(self._settled.wait(), timeout)

    def require_link(self) -> Link:
        """The link a new call goes out on; raises CANCELLED after ``close()``, else UNAVAILABLE
        while there is none (or it drains)."""
        link = self.link
        if link is None or link.closed or link.goaway:
            if self.closing:
                raise RpcError(Status.CANCELLED, "client closed")
            if self.gave_up is not None:
                raise self.gave_up
            raise RpcError(Status.UNAVAILABLE, "not connected")
        return link

    async def connect_first(self, restore: bool) -> None:
        """:meth:`connect_once`, once per address of the connector while they are UNAVAILABLE
        (nothing answers): the first connect reaches a live node if any of them is one."""
        for tries_left in range(self.addresses - 1, -1, -1):
            try:
                await self.connect_once(restore)
                return
            except RpcError as e:
                if e.status != Status.UNAVAILABLE or not tries_left:
                    raise

    async def connect_once(self, restore: bool) -> None:
        """Dial, say HELLO (with the subscriptions' restore claim when ``restore``), wait for
        WELCOME and make the new link the current one. Raises :class:`RpcError` (UNAVAILABLE on a
        timeout) or the connector's error; after a failure the connector moves to its next address
        (:attr:`rotate`), so that a reconnect tries another node."""
        try:
            await self._connect_once(restore)
        except BaseException:
            if self.rotate is not None:
                self.rotate()
            raise

    async def _connect_once(self, restore: bool) -> None:
        cfg = self._owner.config
        timeout = cfg.connect_timeout
        try:
            # a secure handshake gives up after connect_timeout with its own reason; the slack lets
            # that reason (not this generic one) reach the caller
            conn = await asyncio.wait_for(self._connector(), timeout + 1.0)
        except TimeoutError:
            raise RpcError(Status.UNAVAILABLE, f"no connection to the server within {timeout:g} s") from None
        link: Link | None = None
        try:
            control = await conn.open_stream()
            decoded, partial = cfg.receive_limits()
            link = Link(
                conn,
                control,
                self._hooks,
                max_message_size=cfg.max_message_size,
                heartbeat=cfg.heartbeat,
                receive=(decoded, partial, cfg.partial_frame_timeout),
                counters=self._counters,
            )
            conn.add_event_callback(functools.partial(self._on_transport_event, link))
            claim = self._subscriptions.restore_claim() if restore else None
            resume = self._resume_claim(conn)
            if resume is not None and claim is None:  # offsets only: what to replay, never membership
                claim = {"offsets": self._subscriptions.restore_claim()["offsets"]}
            link.writer.send(link.protocol.hello(dict(cfg.metadata), claim, resume))
            reader = link.loop.create_task(link.read_control())
            link.tasks.append(reader)
            try:
                welcome = await asyncio.wait_for(asyncio.shield(link.welcome), timeout)
            except TimeoutError:
                raise RpcError(Status.UNAVAILABLE, no_answer(conn.remote_address, timeout)) from None
        except BaseException as exc:
            if link is not None:
                link.shutdown(RpcError(Status.UNAVAILABLE, "connect failed"))
            await conn.abort()  # the peer never answered: nothing to linger for
            if isinstance(exc, (ConnectionError, EOFError)):  # the transport ended (a server's CLOSE
                # right after the handshake: the mux error says why) before HELLO was answered
                raise RpcError(Status.UNAVAILABLE, f"connect failed: {exc}") from None
            raise
        link.session_id = welcome.session_id
        previous = self._resume
        self._resume = self._ticket(welcome)
        if resume is not None and previous is not None:
            if welcome.resumed:
                self._owner.resumes += 1
            else:
                expired = SessionExpired(
                    session_id=previous[0], reason=welcome.resume_error or "session expired"
                )
                self._subscriptions.handle(
                    Event("kcprpc.SessionExpired", expired.model_dump(), None, None, None)
                )
        resumed = resume is not None and welcome.resumed is True
        direct = welcome.direct if resumed else None  # [sent again, missed]: a resumed session's
        # what came before the WELCOME (replays, the session's own events), after SessionExpired
        # and before the recovery reports
        last = resume["last"] if resume is not None and resumed else 0
        if direct is not None:  # the missed ones follow last: told once, then passed
            last = advance(last, direct[1])
        link.release_held(last)
        if restore or resume is not None:
            self._subscriptions.restored(welcome.restored)
        if direct is not None and any(direct):  # replayed or missed some
            self._subscriptions.direct_recovered(direct, link.last_direct)
        link.tasks.append(link.loop.create_task(link.read_datagrams()))
        old = self.link
        if link.hb is not None:
            if old is not None and old.hb is not None and link.hb.srtt_ms is None:
                link.hb.srtt_ms = old.hb.srtt_ms  # keep showing the last RTT until the new link measures
            link.tasks.append(link.loop.create_task(link.heartbeat()))
        self.link = link
        self.gave_up = None
        self.ready.set()
        self._settled.set()

    async def close(self) -> None:
        """Stop reconnecting and close the link; its calls in flight fail with CANCELLED. The server
        is told (a GOAWAY on the control stream): the session ends for good, nothing resumes it."""
        self.closing = True
        self._resume = None
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        link = self.link
        if link is not None:
            if not link.closed:
                link.writer.send(link.protocol.leaving())
            link.writer.flush()
            link.shutdown(RpcError(Status.CANCELLED, "client closed"))
            await link.conn.close()
        self.ready.clear()
        self._settled.set()  # what waits for a connection fails now (it waited for good)

    # ------------------------------------------------------------------ resume
    def _resume_claim(self, conn: Connection) -> dict[str, Any] | None:
        """The HELLO's ``resume`` for a new connection: the last session's id and the proof of its
        token bound to this connection (:func:`kcprpc.resume.resume_proof`), or None (no token, or
        a connection without a channel binding: compat mode)."""
        if self._resume is None:
            return None
        binding = conn.channel_binding
        if binding is None:
            return None
        sid, token = self._resume
        last = self.link.last_direct if self.link is not None else 0  # numbered direct events handled
        return {"sid": sid, "proof": resume_proof(token, sid, binding), "last": last}

    @staticmethod
    def _ticket(welcome: Welcome) -> tuple[str, bytes] | None:
        """(session id, token) of a WELCOME that makes its session resumable, else None."""
        ticket = welcome.resume
        sid = welcome.session_id
        if ticket is None or sid is None:
            return None
        token = ticket.get("token")
        if type(token) is not bytes or len(token) != TOKEN_SIZE:
            return None
        return sid, token

    @property
    def resumable(self) -> bool:
        """True when the next reconnect will ask to resume the session (the last WELCOME gave a
        token)."""
        return self._resume is not None

    def rebind(self) -> Any:
        """Move the secure-mode connection to a new local UDP socket; returns the new local address."""
        link = self.link
        if link is None or link.closed:
            raise UsageError("rebind() needs an open secure-mode KCP connection")
        return link.conn.rebind()

    def transport_stats(self) -> dict[str, int]:
        """The integer counters of the current (or last) connection's transport; ``{}`` before the
        first connect (``Client.transport_stats``)."""
        link = self.link
        if link is None:
            return {}
        try:
            raw = link.conn.stats()
        except Exception:  # a transport torn down under us: nothing left to read
            return {}
        return {k: int(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    # ------------------------------------------------------------------ link hooks
    def _link_lost(self, link: Link, reason: str) -> None:
        if link.closed:
            return
        link.shutdown(link.peer_error or RpcError(Status.UNAVAILABLE, reason))
        self._spawn(link.conn.close())
        current = self.link is link
        if current:
            self.ready.clear()
        if self.closing or not current:
            return  # an old link (replaced after a GOAWAY) ending changes nothing
        owner = self._owner
        if owner.on_disconnect is not None:  # (one that raises must not keep the reconnect from starting)
            self._call_hook("on_disconnect", owner.on_disconnect, owner, reason)
        self._start_reconnect()

    def _on_goaway(self, link: Link) -> None:
        # The server drains: calls in flight on this link finish there; new calls fail fast with
        # UNAVAILABLE until a new connection is up (dialled now when a reconnect policy is set).
        # The one drain path, for the RPC GOAWAY frame and for a secure transport GOAWAY alike.
        if link.goaway:
            return
        link.goaway = True
        if self.link is link and not self.closing:
            self.ready.clear()
            self._start_reconnect()

    def _on_transport_event(self, link: Link, ev: TransportEvent) -> None:
        """Events of the transport under ``link`` (secure mode; runs in the receive path)."""
        if type(ev) is PingAnswered:  # the transport's answer to a heartbeat (Link.heartbeat)
            link.pong(ev.nonce)
        elif isinstance(ev, PeerDraining):
            # a transport GOAWAY (a kcp-level listener.goaway()) drains like the RPC GOAWAY frame
            self._on_goaway(link)
        elif isinstance(ev, PeerClosed):
            # data already received is still read to the end; the link ends with this reason
            status = ev.status
            if status is not None:  # the server ended the RPC connection with a status
                link.peer_error = RpcError(status, ev.message or status.name)
                link.peer_reason = f"closed by the server: {status.name}: {ev.message}"
            else:
                link.peer_reason = "closed by the server: " + ev.reason
        elif isinstance(ev, PathChanged):
            owner = self._owner
            owner.path_changes += 1
            if owner.on_path_change is not None:
                self._call_hook("on_path_change", owner.on_path_change, owner, ev.old, ev.new)

    # ------------------------------------------------------------------ reconnects
    def _start_reconnect(self) -> None:
        policy = self._owner.config.reconnect
        if policy is None:  # nothing will connect again but client.connect(): fail what waits for it
            self.gave_up = RpcError(Status.UNAVAILABLE, "connection lost, and no reconnect policy")
            self._settled.set()
        elif self.gave_up is None and (self._reconnect_task is None or self._reconnect_task.done()):
            # (once given up, only client.connect() starts over: a second loss told nothing new)
            self._reconnect_task = asyncio.ensure_future(self._reconnect_loop(policy))

    async def _reconnect_loop(self, policy: ReconnectPolicy) -> None:
        attempt = 0
        last: BaseException | None = None
        while not self.closing:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                self._give_up(attempt, last)
                return
            await asyncio.sleep(policy.delay(attempt, self._rng))
            attempt += 1
            try:
                await self.connect_once(restore=policy.restore)
            except (TimeoutError, ConnectionError, OSError, EOFError, RpcError) as e:
                last = e
                continue
            owner = self._owner
            owner.reconnects += 1
            if owner.on_reconnect is not None:
                try:
                    await maybe_await(owner.on_reconnect(owner))
                except Exception:  # the connection is up all the same
                    log.exception("on_reconnect handler raised")
            return

    def _give_up(self, attempts: int, last: BaseException | None) -> None:
        """Reconnecting stopped: fail what waits for a connection, log it once, tell the app."""
        if isinstance(last, RpcError):
            why = last.message
        else:
            why = (str(last) or type(last).__name__) if last is not None else "no attempt"
        err = RpcError(Status.UNAVAILABLE, f"gave up reconnecting after {attempts} attempts: {why}")
        self.gave_up = err
        self._settled.set()
        log.warning("%s", err.message)
        owner = self._owner
        if owner.on_give_up is not None:
            self._call_hook("on_give_up", owner.on_give_up, owner, err)

    def _call_hook(self, name: str, hook: Callable[..., Any], *args: Any) -> None:
        """Call a user hook from the connection's own callbacks: an async one runs as a task; one
        that raises is logged, and the connection goes on."""
        try:
            r = hook(*args)
            if inspect.isawaitable(r):
                self._spawn(r)
        except Exception:
            log.exception("%s handler raised", name)
