"""How a kcprpc endpoint reaches its peers, described once: :class:`Transport`.

``Transport(wire, session=SessionConfig(...), mux=MuxConfig(...), io=IOOptions(...))`` is frozen
and validated when built; ``kcprpc.connect(host, port, transport=...)`` and
``kcprpc.Server(services, host, port, transport=...)`` pass it down unchanged to the mux and to
``kcp.dial``/``kcp.listen``. The wire is :class:`kcp.SecureWire` (the default between kcprpc
peers) or :class:`kcp.CompatWire` (kcp-go's format, for kcp-go and kcptun peers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Literal

from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcp.errors import KCPUsageError
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig

__all__ = [
    "ANONYMOUS_PSK",
    "RPC_MUX_CONFIG",
    "CompatWire",
    "IOOptions",
    "MuxConfig",
    "SecureWire",
    "SessionConfig",
    "Transport",
    "Wire",
    "described_transport",
    "effective_transport",
]

RPC_MUX_CONFIG = MuxConfig(version=2, max_stream_buffer=512 * 1024, max_streams=1024)
"""kcprpc peers speak smux v2 (per-stream flow control) unless told otherwise; both sides must agree
on the version. Each side announces a 512 KiB window per stream (smux's default, 64 KiB, held one
bulk stream to 0.67 of the raw KCP session's throughput in bench/mux.py; 512 KiB gives 0.86): the
reader grants more every half window read, so the sender always has at least 256 KiB (KCP's default
window, 512 segments, holds more: several streams share it). Memory stays bounded per connection by the
session-wide receive buffer (smux's 4 MiB): at most 7 streams may stall with a full window
(``MuxConnection.max_paused_streams``); docs/rpc.md, Flow control. A connection has at most 1,024
streams open (smux has no bound; the mux's own default is 4,096): a session runs at most
``max_subscriptions`` (1,000) streaming calls beside its control stream, and each stream a client
opens costs the server about 5 KB, so a SYN past 1,024 is refused before any of it is made."""


@dataclass(frozen=True)
class Transport:
    """The wire format, the KCP session's tuning, the stream mux and the socket options.

    The default is a secure wire with no key: encrypted but anonymous (docs/rpc.md, "Wire modes");
    give ``SecureWire(key="passphrase")`` and/or pin the server's key to authenticate.
    """

    wire: Wire = field(default_factory=SecureWire)
    session: SessionConfig = field(default_factory=SessionConfig)
    mux: MuxConfig = RPC_MUX_CONFIG
    io: IOOptions = field(default_factory=IOOptions)

    def __post_init__(self) -> None:
        for name, cls in (
            ("wire", (CompatWire, SecureWire)),
            ("session", (SessionConfig,)),
            ("mux", (MuxConfig,)),
            ("io", (IOOptions,)),
        ):
            value = getattr(self, name)
            if not isinstance(value, cls):
                want = " or ".join(c.__name__ for c in cls)
                raise UsageError(f"Transport.{name} must be a {want}, not {type(value).__name__}")

    @property
    def mode(self) -> Literal["secure", "compat"]:
        """``"secure"`` or ``"compat"``."""
        return self.wire.mode


ANONYMOUS_PSK = bytes(32)
"""The PSK of a secure endpoint given no key at all: a public value, so the session is encrypted
(Noise NN: forward secret against passive observers) but authenticates nobody. docs/rpc.md."""

_RESET_KEY: list[bytes] = []


def process_reset_key() -> bytes:
    """A random key drawn once per process: the stateless-reset key of anonymous secure servers
    (a public PSK must not make their resets forgeable)."""
    if not _RESET_KEY:
        _RESET_KEY.append(os.urandom(32))
    return _RESET_KEY[0]


def described_transport(key: bytes | str | None, transport: Transport | None, *, where: str) -> Transport:
    """The :class:`Transport` a ``key=``/``transport=`` pair of arguments describes (``where`` names
    the API in errors): ``key`` alone is ``Transport(SecureWire(key=key))``, neither is the default
    (an anonymous secure wire). Both raise :class:`UsageError`, as does a transport of another type."""
    if key is not None and transport is not None:
        raise UsageError(
            f"{where}: give key= or transport=, not both (put the key in the wire: "
            "transport=Transport(SecureWire(key=...)))"
        )
    if transport is None:
        try:
            return Transport(SecureWire(key=key))
        except KCPUsageError as e:
            raise UsageError(f"{where}: {e}") from None
    if not isinstance(transport, Transport):
        raise UsageError(
            f"{where}: transport= must be a kcprpc.Transport, not {type(transport).__name__} "
            "(e.g. Transport(SecureWire(key=...)) or Transport(CompatWire(crypt=..., key=...)))"
        )
    return transport


def effective_transport(
    transport: Transport,
    *,
    side: Literal["client", "server"],
    handshake_timeout: float | None = None,
) -> Transport:
    """The :class:`Transport` an endpoint actually runs, from the one its user described: the one
    place where kcprpc adds to a user's transport (``kcp.dial``/``kcp.listen`` get its parts unchanged).

    For a :class:`SecureWire`:

    * no key at all (no ``key``, no ``static_private_key``, and for a client no
      ``server_public_key``): the public :data:`ANONYMOUS_PSK`, and on a server a per-process
      stateless-reset key (docs/rpc.md, "Wire modes");
    * the mux version (``transport.mux.version``) is the only one offered or accepted in the
      handshake (``SecureConfig.mux_versions``): a mismatch is refused there, with its reason;
    * a client's ``handshake_timeout`` (seconds; ``ClientConfig.connect_timeout``) becomes
      ``SecureConfig.handshake_timeout_ms`` unless the wire's config sets one (a value other than
      the default).

    A :class:`CompatWire` runs as given. Raises :class:`UsageError` for a transport this side
    cannot run: not a :class:`Transport`, ``authorize`` on a client, ``server_public_key`` or
    ``token`` on a server, a ``SecureConfig.mux_versions`` without the mux's version.
    """
    where = "kcprpc.connect" if side == "client" else "kcprpc.Server"
    transport = described_transport(None, transport, where=where)
    wire = transport.wire
    if isinstance(wire, CompatWire):
        return transport
    from kcp.secure.config import SecureConfig  # imported on first use: compat-only programs skip it

    default = SecureConfig()
    changes: dict[str, object] = {}
    anonymous = wire.key is None and wire.static_private_key is None
    if side == "client":
        anonymous = anonymous and wire.server_public_key is None
    if anonymous:
        changes["key"] = ANONYMOUS_PSK
    cfg = wire.config or default
    secure: dict[str, object] = {}
    version = transport.mux.version
    if cfg.mux_versions != (version,):
        if cfg.mux_versions != default.mux_versions and version not in cfg.mux_versions:
            raise UsageError(
                f"{where}: SecureWire.config.mux_versions={cfg.mux_versions} does not hold the mux's "
                f"version {version} (set the version in Transport.mux, the handshake offers it)"
            )
        secure["mux_versions"] = (version,)
    if side == "server" and anonymous and cfg.reset_key is None:
        secure["reset_key"] = process_reset_key()
    if handshake_timeout is not None and cfg.handshake_timeout_ms == default.handshake_timeout_ms:
        ms = max(1, int(handshake_timeout * 1000))
        if ms != cfg.handshake_timeout_ms:
            secure["handshake_timeout_ms"] = ms
    if secure:
        changes["config"] = replace(cfg, **secure)  # type: ignore[arg-type]
    if changes:
        wire = replace(wire, **changes)  # type: ignore[arg-type]
    try:
        if side == "client":
            wire.check_client()
        else:
            wire.check_server()
    except KCPUsageError as e:
        raise UsageError(f"{where}: {e}") from None
    return transport if wire is transport.wire else replace(transport, wire=wire)
