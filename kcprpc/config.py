"""How a kcprpc endpoint reaches its peers, described once: :class:`Transport`.

``Transport(wire, session=SessionConfig(...), mux=MuxConfig(...), io=IOOptions(...))`` is frozen
and validated when built; ``kcprpc.connect(host, port, transport=...)`` and
``kcprpc.Server(services, host, port, transport=...)`` pass it down unchanged to the mux and to
``kcp.dial``/``kcp.listen``. The wire is :class:`kcp.SecureWire` (the default between kcprpc
peers) or :class:`kcp.CompatWire` (kcp-go's format, for kcp-go and kcptun peers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kcp.config import CompatWire, IOOptions, SecureWire, SessionConfig, Wire
from kcprpc.errors import UsageError
from kcprpc.mux import MuxConfig

__all__ = ["RPC_MUX_CONFIG", "CompatWire", "IOOptions", "SecureWire", "SessionConfig", "Transport", "Wire"]

RPC_MUX_CONFIG = MuxConfig(version=2, max_stream_buffer=512 * 1024)
"""kcprpc peers speak smux v2 (per-stream flow control) unless told otherwise; both sides must agree
on the version. Each side announces a 512 KiB window per stream (smux's default, 64 KiB, held one
bulk stream to 0.67 of the raw KCP session's throughput in bench/mux.py; 512 KiB gives 0.86): the
reader grants more every half window read, so the sender always has at least 256 KiB, more than
KCP's default window holds in flight (128 segments). Memory stays bounded per connection by the
session-wide receive buffer (smux's 4 MiB): at most 7 streams may stall with a full window
(``MuxConnection.max_paused_streams``); docs/rpc.md, Flow control."""


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
