"""Which session a listener's datagram belongs to: by address (compat) or by connection ID (secure).

A listener serves one wire mode and holds one demux (docs/security.md explains why):

* :class:`kcp.demux.address.AddressDemux`, kcp-go's rules. A datagram from a known address goes to that address's
  session. A datagram from an unknown address that, once through the packet layer (decrypt,
  crc32, FEC framing), holds a well-formed KCP packet starts a conversation with that packet's
  conversation id (kcp-go's ``Listener.packetInput``), but not at once: it first becomes a small
  *pending* entry, answered with a challenge (a data-less PUSH below the peer's receive window,
  with a random ``ts``), and turns into a session when the address acknowledges it, which every
  ikcp-based engine does by itself. A spoofed or replayed datagram therefore costs no session, and
  copies of one datagram from other addresses are dropped (:mod:`kcp.admission`). On a known
  address, a KCP packet with another conv is dropped, unless its ``sn`` is 0: then the peer may have
  restarted (kcp-go's rule), and the new conversation replaces the old session once it answered
  its challenge and the old peer has not answered liveness probes for
  ``AdmissionConfig.restart_quiet``. FEC parity shards and OOB packets never start a conversation.
* :class:`kcp.demux.secure.SecureDemux`: transport packets are found by connection ID, everything else goes to the
  :class:`kcp.secure.SecureServer` core (initiations, cookies, confirmations); a confirmed
  handshake becomes a session with the negotiated parameters.

Both talk to their listener through :class:`DemuxHost` only. The package is imported by every
listener; :mod:`kcp.demux.secure` (and with it :mod:`kcp.secure`) only by secure ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from kcp.batch import Address
from kcp.config import SessionConfig
from kcp.session import KCPSession, SessionHost

__all__ = ["Demux", "DemuxHost"]


class DemuxHost(SessionHost, Protocol):
    """What a demux needs from its listener (which is also its sessions' host)."""

    @property
    def config(self) -> SessionConfig: ...

    @property
    def max_sessions(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def rng(self) -> Callable[[int], bytes]: ...

    def session_at(self, key: Any) -> KCPSession | None: ...

    @property
    def table(self) -> Mapping[Any, KCPSession]:
        """The session table, read-only (the hot path looks sessions up in it directly)."""

    def session_count(self) -> int: ...

    def room_for_one(self, replacing: bool = False, addr: Any = None) -> str | None:
        """None if one more session (from ``addr``: within its share per address) fits; else the
        drop is counted and the reason returned."""

    def register(self, key: Any, session: KCPSession) -> None:
        """Put a new session in the table and hand it out."""

    def count(self, name: str) -> None:
        """Add one to a counter of the listener (and :data:`kcp.stats.SNMP`)."""


class Demux(Protocol):
    """A listener's lookup (see the module docstring)."""

    mode: Literal["compat", "secure"]

    def dispatch(self, data: bytes, addr: Address, now: int) -> None: ...

    def conv_mismatch(self, s: KCPSession, datagram: bytes, packet: bytes, now: int) -> bool: ...

    def key_of(self, s: KCPSession) -> Any: ...

    def session_gone(self, key: Any, removed: bool) -> None: ...

    def sizes(self) -> dict[str, int]: ...

    def close(self) -> None: ...
