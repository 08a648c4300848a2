"""The real transport: ``kcprpc.mux`` streams over a ``kcp`` session, and KCP OOB datagrams.

:class:`MuxConnection` adapts a :class:`~kcprpc.mux.MuxSession` (plus anything with
``send_datagram``/``recv_datagram``) to :class:`~kcprpc.transport.Connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any, Protocol

from kcprpc.config import RPC_MUX_CONFIG
from kcprpc.errors import RpcError, UsageError
from kcprpc.mux import MuxConfig, MuxSession
from kcprpc.status import Status
from kcprpc.transport import ByteStream


class DatagramPort(Protocol):
    """Unreliable datagrams (a KCP session's OOB path)."""

    def send_datagram(self, data: bytes) -> None:
        """Send one datagram."""
        ...

    async def recv_datagram(self) -> bytes:
        """Receive one datagram."""
        ...


class MuxConnection:
    """A :class:`~kcprpc.transport.Connection` made of a mux session and a datagram port."""

    def __init__(
        self,
        mux: MuxSession,
        datagrams: DatagramPort | None = None,
        *,
        max_datagram_size: int = 1100,
        remote_address: Any = None,
        on_close: Any = None,
    ) -> None:
        self.mux = mux
        self.datagrams = datagrams
        self._max_dgram = max_datagram_size if datagrams is not None else 0
        self._remote = remote_address
        self._on_close = on_close
        self._closed_ev = asyncio.Event()

    async def open_stream(self) -> ByteStream:
        """Open a mux stream."""
        return await self.mux.open_stream()

    async def accept_stream(self) -> ByteStream:
        """Accept a mux stream (raises a ``ConnectionError`` subclass once closed)."""
        return await self.mux.accept_stream()

    def send_datagram(self, data: bytes) -> None:
        """Send an OOB datagram."""
        if self.datagrams is None or self.mux.closed:
            raise ConnectionError("no datagram path")
        self.datagrams.send_datagram(data)

    async def recv_datagram(self) -> bytes:
        """Receive an OOB datagram."""
        if self.datagrams is None:
            await self._closed_ev.wait()
            raise ConnectionError("connection closed")
        return await self.datagrams.recv_datagram()  # raises a ConnectionError once the session ended

    @property
    def max_datagram_size(self) -> int:
        """Largest OOB payload."""
        return self._max_dgram

    @property
    def max_paused_streams(self) -> int:
        """How many streams may stop being read at once (see :class:`kcprpc.transport.ParkingLot`).
        smux v2: each holds at most one stream window of the session's receive buffer, and one
        window stays free for the rest (the control stream); v1 has no per-stream window: none."""
        cfg = self.mux.config
        if cfg.version < 2:
            return 0
        return max(0, cfg.max_receive_buffer // cfg.max_stream_buffer - 1)

    @property
    def closed(self) -> bool:
        """True once the mux session is dead."""
        return self.mux.closed or self._closed_ev.is_set()

    async def close(self) -> None:
        """Close the mux session and the transport under it."""
        self._closed_ev.set()
        with contextlib.suppress(Exception):
            await self.mux.close()
        if self._on_close is not None:
            with contextlib.suppress(Exception):
                r = self._on_close()
                if asyncio.iscoroutine(r):
                    await r

    async def abort(self, code: int | None = None, message: str = "") -> None:
        """Close at once, dropping unsent and unacknowledged data (a peer that never answered, or
        one that stopped reading). A secure KCP session tells the peer ``code`` and ``message`` in
        its authenticated CLOSE."""
        ab = getattr(self.datagrams, "abort", None)
        if callable(ab):
            with contextlib.suppress(Exception):
                if code is None:
                    ab()
                else:
                    ab(code, message)
        await self.close()

    def send_backlog(self) -> int:
        """Bytes held for the peer: written to mux streams and not sent yet, plus what the KCP
        session has not had acknowledged (:meth:`kcprpc.mux.MuxSession.send_backlog`)."""
        return self.mux.send_backlog()

    def send_progress(self) -> int:
        """A count that changes whenever the peer consumes some of what waits for it (KCP
        acknowledgements, mux windows): :meth:`kcprpc.mux.MuxSession.send_progress`."""
        return self.mux.send_progress()

    def stats(self) -> dict[str, int]:
        """Mux counters plus, when available, the KCP session's counters."""
        out = {f"mux_{k}": v for k, v in self.mux.counters.items()}
        st = getattr(self.datagrams, "stats", None)
        if st is not None:
            with contextlib.suppress(Exception):
                out.update(st() if callable(st) else st)
        return out

    @property
    def remote_address(self) -> Any:
        """Peer address (follows a secure-mode session when its peer migrates)."""
        return getattr(self.datagrams, "remote_address", None) or self._remote

    def add_event_callback(self, callback: Any) -> bool:
        """Secure mode: call ``callback(event)`` for each transport event of the KCP session
        (``kcp.secure.PathChanged``, ``PathValidated``, ``PathFailed``, ``GoAwayReceived``,
        ``ConnectionClosed``, ``KeyUpdated``); it runs in the receive path and must not block.
        Returns False (and does nothing) when the connection has no such events."""
        add = getattr(self.datagrams, "add_event_callback", None)
        if add is None or self.wire_mode != "secure":
            return False
        add(callback)
        return True

    def rebind(self) -> Any:
        """Secure client connections: move to a new local UDP socket (a phone changing networks);
        calls continue. Returns the new local address."""
        rebind = getattr(self.datagrams, "rebind", None)
        if rebind is None or self.wire_mode != "secure":
            raise UsageError("rebind() needs a secure-mode KCP connection")
        return rebind()

    @property
    def wire_mode(self) -> str | None:
        """``"secure"`` or ``"compat"`` for a KCP session, None in memory."""
        mode = getattr(self.datagrams, "mode", None)
        return mode if isinstance(mode, str) else None

    @property
    def peer_public_key(self) -> bytes | None:
        """Secure mode: the peer's static X25519 public key (a client that ran the pinned-key
        handshake; a server's is the key the client pinned), else None."""
        sec = getattr(self.datagrams, "secure", None)
        key = getattr(sec, "peer_static", None)
        return key if isinstance(key, bytes) else None


class _DatagramPipe:
    """In-memory datagram port (for mux-over-memory tests)."""

    def __init__(self) -> None:
        self.peer: _DatagramPipe | None = None
        self._q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    def send_datagram(self, data: bytes) -> None:
        if self.peer is not None and not self.closed:
            self.peer._q.put_nowait(bytes(data))

    async def recv_datagram(self) -> bytes:
        item = await self._q.get() if not self.closed else None
        if item is None:
            self.closed = True
            raise ConnectionError("connection closed")
        return item

    def close(self) -> None:
        for p in (self, self.peer):
            if p is not None and not p.closed:
                p._q.put_nowait(None)


def mux_memory_pair(config: MuxConfig | None = None) -> tuple[MuxConnection, MuxConnection]:
    """(client, server) connections: real mux over an in-memory pipe, with in-memory datagrams."""
    from kcprpc.mux.testing import memory_pair

    c, s = memory_pair(config or RPC_MUX_CONFIG)
    dc, ds = _DatagramPipe(), _DatagramPipe()
    dc.peer, ds.peer = ds, dc
    return MuxConnection(c, dc, remote_address=("mux-memory", 1)), MuxConnection(
        s, ds, remote_address=("mux-memory", 2)
    )




WIRE_MODES = ("secure", "compat")

_SECURE_ONLY = ("server_public_key", "static_private_key", "token", "authorize")


def resolve_mode(mode: str | None, crypt: str | None, **secure: Any) -> str:
    """The wire mode a kcprpc endpoint runs: ``mode`` when given, else ``"compat"`` when a kcp-go
    cipher name is given as ``crypt=`` and ``"secure"`` otherwise (the default between kcprpc peers).

    Conflicts raise :class:`kcprpc.UsageError`: ``crypt=`` with ``mode="secure"`` (secure mode always
    runs its own AEAD), and the secure-only keywords (``server_public_key``, ``static_private_key``,
    ``token``, ``authorize``) with compat mode, whether explicit or implied by ``crypt=``.
    """
    if mode is not None and mode not in WIRE_MODES:
        raise UsageError(f"mode must be 'secure' or 'compat', not {mode!r}")
    given = [k for k in _SECURE_ONLY if secure.get(k) not in (None, b"", "")]
    if mode is None:
        mode = "compat" if crypt is not None else "secure"
        if mode == "compat" and given:
            raise UsageError(
                f"crypt={crypt!r} selects compat mode (kcp-go's packet format), which has no handshake: "
                f"{', '.join(given)} need secure mode (drop crypt=; secure mode always encrypts)"
            )
    if mode == "secure" and crypt is not None:
        raise UsageError(
            f"crypt={crypt!r} is a kcp-go cipher (compat mode); secure mode always uses its own AEAD: "
            "drop crypt= (key= is then the secure pre-shared passphrase), or pass mode='compat'"
        )
    if mode == "compat" and given:
        raise UsageError(f"{', '.join(given)} need mode='secure' (compat mode has no handshake)")
    return mode


ANONYMOUS_PSK = bytes(32)
"""The PSK of a secure endpoint given no key at all: a public value, so the session is encrypted
(Noise NN: forward secret against passive observers) but authenticates nobody. docs/rpc.md."""


def _kcp_options(
    mode: str | None,
    crypt: str | None,
    key: bytes | str | None,
    fec: tuple[int, int] | None,
    mux_config: MuxConfig | None,
    options: dict[str, Any],
    *,
    server: bool,
    server_public_key: bytes | None = None,
    static_private_key: bytes | None = None,
    token: bytes | str | None = None,
    authorize: Any = None,
) -> dict[str, Any]:
    """Keyword arguments of ``kcp.dial`` / ``kcp.listen``: the resolved wire mode (see
    :func:`resolve_mode`); ``fec=(data, parity)`` becomes kcp's shard counts; in secure mode the
    mux version is offered in the handshake (a mismatch is refused there, with its reason), and an
    endpoint without any key runs anonymously (:data:`ANONYMOUS_PSK`); other session options pass
    through."""
    data, parity = fec if fec is not None else (0, 0)
    mode = resolve_mode(
        mode,
        crypt,
        server_public_key=server_public_key,
        static_private_key=static_private_key,
        token=token,
        authorize=authorize,
    )
    out: dict[str, Any] = {
        "mode": mode,
        "key": key,
        "data_shards": int(data),
        "parity_shards": int(parity),
        **options,
    }
    if mode == "compat":
        out["crypt"] = crypt
        return out
    secure_options = dict(out.pop("secure_options", None) or {})
    secure_options.setdefault("mux_versions", ((mux_config or RPC_MUX_CONFIG).version,))
    anonymous = key is None and out.get("psk") is None and static_private_key is None
    if server:
        out["static_private_key"] = static_private_key
        out["authorize"] = authorize
        if anonymous:  # a public PSK must not make stateless resets forgeable: a per-process reset key
            secure_options.setdefault("reset_key", _process_reset_key())
    else:
        out["server_public_key"] = server_public_key
        out["static_private_key"] = static_private_key
        out["token"] = token or b""
        anonymous = anonymous and server_public_key is None
    if anonymous:
        out["psk"] = ANONYMOUS_PSK
    out["secure_options"] = secure_options
    return out


def _wire_call(opts: dict[str, Any], *, server: bool) -> dict[str, Any]:
    """kcp.dial/listen's (wire, session=, io=, ...) from :func:`_kcp_options`' keywords (interim:
    kcprpc.config.Transport replaces both)."""
    import dataclasses

    import kcp
    from kcp.secure import SecureConfig

    opts = dict(opts)
    mode = opts.pop("mode")
    key = opts.pop("key", None)
    psk = opts.pop("psk", None)
    fec = (opts.pop("data_shards", 0), opts.pop("parity_shards", 0))
    fec = fec if fec[0] > 0 and fec[1] > 0 else (0, 0)
    out: dict[str, Any] = {}
    io_fields = {"local_addr": "local_address", "reuse_port": "reuse_port", "mmsg": "mmsg", "gso": "gso"}
    io = {io_fields[k]: opts.pop(k) for k in list(opts) if k in io_fields}
    for k in ("max_sessions", "backlog", "admission", "on_accept", "rng", "conv"):
        if k in opts:
            out[k] = opts.pop(k)
    timeout = opts.pop("handshake_timeout", None)
    if mode == "compat":
        wire: Any = kcp.CompatWire(crypt=opts.pop("crypt", None), key=key, fec=fec)
    else:
        secure_options = dict(opts.pop("secure_options", None) or {})
        if timeout is not None:
            secure_options["handshake_timeout_ms"] = max(1, int(timeout * 1000))
        wire = kcp.SecureWire(
            key=key if key is not None else psk,
            static_private_key=opts.pop("static_private_key", None),
            server_public_key=opts.pop("server_public_key", None),
            token=opts.pop("token", b"") or b"",
            authorize=opts.pop("authorize", None),
            fec=fec,
            config=SecureConfig(**secure_options) if secure_options else None,
        )
    session_cfg = opts.pop("config", None) or kcp.SessionConfig()
    known = {f.name for f in dataclasses.fields(kcp.SessionConfig)}
    unknown = set(opts) - known
    if unknown:
        raise kcp.KCPUsageError(f"unknown session option(s): {', '.join(sorted(unknown))}")
    out["wire"] = wire
    out["session"] = dataclasses.replace(session_cfg, **opts) if opts else session_cfg
    out["io"] = kcp.IOOptions(**io)
    return out


_RESET_KEY: list[bytes] = []


def _process_reset_key() -> bytes:
    if not _RESET_KEY:
        _RESET_KEY.append(os.urandom(32))
    return _RESET_KEY[0]


def handshake_error(e: Exception) -> RpcError:
    """The :class:`RpcError` ``kcprpc.connect`` raises for a failed secure handshake.

    No authenticated answer in time (wrong passphrase, wrong pinned key, server down or draining
    out of reach) and refusals for load or draining are ``UNAVAILABLE``; a PSK that does not match
    a pinned server and a token the server's ``authorize`` hook refused are ``UNAUTHENTICATED``;
    version, cipher suite or parameter refusals are ``FAILED_PRECONDITION``. The message is the
    handshake's own.
    """
    from kcp.secure import HandshakeRefused, HandshakeTimeout, Reason

    code = getattr(e, "code", 0)
    if isinstance(e, HandshakeTimeout):
        status = Status.UNAVAILABLE
    elif isinstance(e, HandshakeRefused):
        if code == Reason.BAD_TOKEN:
            status = Status.UNAVAILABLE if "going away" in str(e) else Status.UNAUTHENTICATED
        elif code in (Reason.SERVER_BUSY, Reason.GOING_AWAY):
            status = Status.UNAVAILABLE
        else:
            status = Status.FAILED_PRECONDITION
    elif "PSK mismatch" in str(e):
        status = Status.UNAUTHENTICATED
    else:
        status = Status.UNAVAILABLE
    return RpcError(status, f"secure {e}" if str(e).startswith("handshake") else str(e))


def wrap_session(session: Any, *, client: bool, mux_config: MuxConfig | None = None) -> MuxConnection:
    """A :class:`MuxConnection` over a ``kcp.KCPSession`` (streams on the session, OOB datagrams beside)."""
    mux = MuxSession(session, client=client, config=mux_config or RPC_MUX_CONFIG)
    try:
        max_dgram = int(session.max_datagram_size())
    except Exception:
        max_dgram = 0

    async def close_session() -> None:
        session.close()

    return MuxConnection(
        mux,
        session,
        max_datagram_size=max_dgram,
        remote_address=getattr(session, "remote_address", None),
        on_close=close_session,
    )


async def dial(
    host: str,
    port: int,
    *,
    mode: str | None = None,
    crypt: str | None = None,
    key: bytes | str | None = None,
    fec: tuple[int, int] | None = None,
    server_public_key: bytes | None = None,
    static_private_key: bytes | None = None,
    token: bytes | str | None = None,
    mux_config: MuxConfig | None = None,
    **session_options: Any,
) -> MuxConnection:
    """Dial a KCP session to ``host:port`` and start a client mux on it.

    The wire mode follows :func:`resolve_mode`; a failed secure handshake raises the
    :class:`RpcError` of :func:`handshake_error`.
    """
    import kcp
    from kcp.secure import HandshakeError

    opts = _kcp_options(
        mode,
        crypt,
        key,
        fec,
        mux_config,
        session_options,
        server=False,
        server_public_key=server_public_key,
        static_private_key=static_private_key,
        token=token,
    )
    try:
        session = await kcp.dial(host, port, **_wire_call(opts, server=False))
    except HandshakeError as e:
        raise handshake_error(e) from None
    except kcp.KCPUsageError as e:
        raise UsageError(str(e)) from None
    return wrap_session(session, client=True, mux_config=mux_config)


class RpcListener:
    """Accepts KCP sessions and hands them out as server-side :class:`MuxConnection` objects."""

    def __init__(self, listener: Any, mux_config: MuxConfig | None) -> None:
        self.listener = listener
        self.mux_config = mux_config

    @property
    def address(self) -> tuple[str, int]:
        """Bound (host, port)."""
        a = self.listener.address
        return (a[0], a[1])

    async def accept(self) -> MuxConnection:
        """The next connection (raises ``ConnectionError`` once closed)."""
        session = await self.listener.accept()
        return wrap_session(session, client=False, mux_config=self.mux_config)

    def stats(self) -> dict[str, int]:
        """Listener counters."""
        return dict(self.listener.stats)

    def drain(self) -> None:
        """Secure mode: refuse new handshakes with a clear reason (the client's ``connect()`` fails
        with UNAVAILABLE at once); a compat listener has no handshake, nothing to do."""
        if getattr(self.listener, "mode", None) == "secure":
            self.listener.drain()

    def close(self) -> None:
        """Stop listening and end every session."""
        self.listener.close()

    async def wait_closed(self) -> None:
        """Wait until closed."""
        await self.listener.wait_closed()


async def listen(
    host: str,
    port: int,
    *,
    mode: str | None = None,
    crypt: str | None = None,
    key: bytes | str | None = None,
    fec: tuple[int, int] | None = None,
    static_private_key: bytes | None = None,
    authorize: Any = None,
    mux_config: MuxConfig | None = None,
    **session_options: Any,
) -> RpcListener:
    """Listen for KCP sessions on ``host:port`` (wire mode as :func:`resolve_mode` decides)."""
    import kcp

    opts = _kcp_options(
        mode,
        crypt,
        key,
        fec,
        mux_config,
        session_options,
        server=True,
        static_private_key=static_private_key,
        authorize=authorize,
    )
    try:
        listener = await kcp.listen(host, port, **_wire_call(opts, server=True))
    except kcp.KCPUsageError as e:
        raise UsageError(str(e)) from None
    return RpcListener(listener, mux_config)
