"""The options of the web listeners (docs/wire-format/web.md): :class:`WebOptions` (what both
share), :class:`WebSocketOptions` and :class:`WebTransportOptions`. Frozen and validated once,
at construction: a bad value raises :class:`~kcprpc.errors.UsageError` naming it."""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kcp.fieldcheck import check_fields
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig
from kcprpc.web.framing import MAX_TOKEN

__all__ = [
    "DEFAULT_PATH",
    "MAX_WEBTRANSPORT_DATAGRAM",
    "Authorize",
    "WebOptions",
    "WebSocketOptions",
    "WebTransportOptions",
]

MAX_WEBTRANSPORT_DATAGRAM = 1024
"""The largest RPC datagram over WebTransport (docs/wire-format/web.md, "WebTransport notes")."""

DEFAULT_PATH = "/kcprpc"
"""Where a web client connects unless the listener says otherwise."""

Authorize = Callable[[bytes, "bytes | None", Any], "str | Awaitable[str | None] | None"]
"""``authorize(token, None, address)``: None to accept the client, else the refusal message it
sees (UNAUTHENTICATED); sync or async. The same hook as a secure KCP server's
(``SecureWire.authorize``), whose second argument, the client's static key, a web client has not."""


@dataclass(frozen=True)
class WebOptions:
    """What every web listener takes.

    * ``path``: where clients connect (default ``/kcprpc``);
    * ``origins``: the browser origins allowed (exact match, e.g. ``"https://game.example"``;
      ``"*"`` allows any); a request without ``Origin`` (not a browser) is always allowed. Empty:
      no browser origin is allowed;
    * ``authorize``: the hook the ``OPEN`` token goes to (:data:`Authorize`); None: the server's
      ``SecureWire.authorize`` when it has one, else every client is accepted;
    * ``open_timeout``: seconds a new connection has to send ``OPEN``;
    * ``max_message_size``: the largest message a client may send (WebSocket message,
      WebTransport handshake), default 64 KiB;
    * ``max_datagram``: the largest RPC datagram (``ACCEPT``'s max datagram), both ways;
    * ``max_receive_buffer``: stream bytes received and not yet read per connection;
    * ``max_connections``: web connections at once on this listener (more are refused with
      RESOURCE_EXHAUSTED); None: no bound;
    * ``mux``: the mux settings (None: the server's ``transport.mux``); a client that speaks only
      an older smux version gets that version.
    """

    path: str = DEFAULT_PATH
    origins: tuple[str, ...] = ()
    authorize: Authorize | None = None
    open_timeout: float = 5.0
    max_message_size: int = 64 * 1024
    max_datagram: int = 16 * 1024
    max_receive_buffer: int = 4 * 1024 * 1024
    max_connections: int | None = 10_000
    mux: MuxConfig | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.path, str) or not self.path.startswith("/") or "?" in self.path:
            raise UsageError(f"{name}: path must start with '/' (and hold no query), not {self.path!r}")
        origins = self.origins
        if isinstance(origins, str):
            origins = (origins,)
        try:
            origins = tuple(origins)
        except TypeError:
            raise UsageError(f"{name}: origins must be a list of origins, not {self.origins!r}") from None
        for o in origins:
            if not isinstance(o, str) or not o or (o != "*" and ("://" not in o or o.endswith("/"))):
                raise UsageError(
                    f"{name}: an origin is 'scheme://host[:port]' (no path, no trailing '/') or '*', not {o!r}"
                )
        object.__setattr__(self, "origins", origins)
        check_fields(self, UsageError)  # (after origins: a str or a list of them is taken)
        if self.authorize is not None and not callable(self.authorize):
            raise UsageError(f"{name}: authorize must be a callable (token, None, address) -> str | None")
        _positive(name, "open_timeout", self.open_timeout)
        _int(name, "max_message_size", self.max_message_size, 64)
        _int(name, "max_datagram", self.max_datagram, 1, 0xFFFF)
        _int(name, "max_receive_buffer", self.max_receive_buffer, 1024)
        if self.max_connections is not None:
            _int(name, "max_connections", self.max_connections, 1)
        if self.mux is not None and not isinstance(self.mux, MuxConfig):
            raise UsageError(f"{name}: mux must be a kcprpc.MuxConfig, not {type(self.mux).__name__}")
        if self.max_message_size < MAX_TOKEN + 5:
            raise UsageError(f"{name}: max_message_size must hold an OPEN with the largest token")

    def origin_allowed(self, origin: str | None) -> bool:
        """True when a request with this ``Origin`` header (None: none sent) may connect."""
        return origin is None or "*" in self.origins or origin in self.origins


@dataclass(frozen=True)
class WebSocketOptions(WebOptions):
    """A WebSocket listener's options (:class:`WebOptions` and):

    * ``ssl``: a server :class:`ssl.SSLContext` (``wss://`` and ``https://``), None: plain;
    * ``web_root``: a folder whose files are served on plain ``GET`` (the pages of a browser app);
      ``GET /kcprpc.json`` tells a browser where to connect (docs/wire-format/web.md, "Discovery");
    * ``max_static_bytes``: the bytes of ``web_root`` files this listener may have sent and not
      yet seen delivered (a reply counts until its connection closes), a quarter of it per IPv4
      address or IPv6 /64 (loopback exempt); past it a ``GET`` gets 503 (``http_busy``), but a
      file larger than a bound is served while nothing else is held against it. A
      client that asks for a large file and never reads it held the whole file in the server's
      send buffer, per connection;
    * ``max_datagram`` must fit a message: at most ``max_message_size - 1``.
    """

    ssl: ssl.SSLContext | None = None
    web_root: str | Path | None = None
    max_static_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ssl is not None and not isinstance(self.ssl, ssl.SSLContext):
            raise UsageError("WebSocketOptions: ssl must be an ssl.SSLContext")
        if self.max_datagram > self.max_message_size - 1:
            raise UsageError(
                "WebSocketOptions: max_datagram must be below max_message_size (a DATAGRAM message)"
            )
        _int("WebSocketOptions", "max_static_bytes", self.max_static_bytes, 0)
        if self.web_root is not None:
            root = Path(self.web_root)
            if not root.is_dir():
                raise UsageError(f"WebSocketOptions: web_root {str(root)!r} is not a folder")
            object.__setattr__(self, "web_root", root.resolve())


@dataclass(frozen=True)
class WebTransportOptions(WebOptions):
    """A WebTransport listener's options (:class:`WebOptions` and):

    * ``certificate`` and ``private_key``: PEM files of the TLS certificate (``kcprpc web-cert``
      makes a development one);
    * ``certificate_hashes``: the base64 SHA-256 hashes a browser pins with
      ``serverCertificateHashes`` (a development certificate's), announced by discovery;
    * ``max_datagram``: at most :data:`MAX_WEBTRANSPORT_DATAGRAM` (1024, the default): what
      Chromium sends (its ``datagrams.maxDatagramSize``) and what fits one 1200-byte QUIC packet;
    * ``handshake_rate`` and ``handshake_burst``: new QUIC connections a second (and at once) that
      may start a TLS handshake before their address is proven; past them a new connection gets a
      stateless Retry, and under load a proven address may start this many a second
      (:mod:`kcprpc.web.quic_admission`). ``handshake_rate=0``: a Retry for every new connection.
    """

    certificate: str | Path | None = None
    private_key: str | Path | None = None
    certificate_hashes: tuple[str, ...] = ()
    max_datagram: int = 1024
    handshake_rate: float = 50.0
    handshake_burst: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_datagram > MAX_WEBTRANSPORT_DATAGRAM:
            raise UsageError(
                f"WebTransportOptions: max_datagram must be at most {MAX_WEBTRANSPORT_DATAGRAM} "
                f"(a browser sends no larger WebTransport datagram), not {self.max_datagram}"
            )
        object.__setattr__(self, "certificate_hashes", tuple(self.certificate_hashes))
        rate = self.handshake_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate < 0
        ):
            raise UsageError(
                f"WebTransportOptions: handshake_rate must be a number >= 0 (a second), not {rate!r}"
            )
        _int("WebTransportOptions", "handshake_burst", self.handshake_burst, 1)


def _positive(owner: str, name: str, v: object) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise UsageError(f"{owner}: {name} must be a positive number of seconds, not {v!r}")


def _int(owner: str, name: str, v: object, lo: int, hi: int | None = None) -> None:
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        bound = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise UsageError(f"{owner}: {name} must be an int {bound}, not {v!r}")
