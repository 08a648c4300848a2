"""Transport counters, in the spirit of kcp-go's SNMP struct.

One :class:`Counters` object per session, plus one process-wide object (:data:`SNMP`) that every
session also adds to. Counters are plain integer attributes (slots; in the compiled build, the
fields of a native class, which compiled code reaches without a lookup by name) so the hot path
does a single ``+=``; :meth:`Counters.snapshot` turns them into a dict for logs, the RPC ``stats`` call and tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, TypeVar

_FIELDS: tuple[str, ...] = (
    # UDP level
    "bytes_sent",  # UDP payload bytes written
    "bytes_received",  # UDP payload bytes read
    "out_pkts",  # datagrams written
    "in_pkts",  # datagrams read
    "send_syscalls",  # sendto/sendmmsg calls
    "recv_syscalls",  # recvfrom/recvmmsg calls
    # KCP level
    "in_segs",
    "out_segs",
    "in_bytes",  # KCP payload bytes accepted by an engine
    "out_bytes",
    "retrans_segs",  # every retransmission
    "fast_retrans_segs",  # retransmitted because of skipped acks
    "early_retrans_segs",  # kcp-go's early retransmit (counted as fast in ikcp terms)
    "lost_segs",  # retransmitted because the RTO expired
    "copy_segs",  # spaced copies sent by the sparse-flight loss recovery (kcp.engine)
    "repeat_segs",  # duplicate segments received
    "acks_held",  # lone acks held for a second segment (kcp.SessionConfig.ack_hold)
    "reacks_sent",  # ACKs repeated as REACKs (secure mode's repeated acks)
    "reacks_useful",  # REACKs that acknowledged a segment its ACK had not: a spurious resend saved
    "wins_repeated",  # window updates sent again: no data came after the one that reopened the window
    "kcp_in_errors",  # engine refused the packet (bad conv, bad cmd, lying length)
    # packet layer
    "in_errs",  # packets dropped before the engine for any reason below
    "in_csum_errors",  # crc32 mismatch after decryption
    "decrypt_errors",  # AEAD tag failure or undecryptable packet
    "short_packets",  # too short for the configured headers
    "fec_recovered",
    "fec_errs",  # shards that could not be used (bad size, reconstruct failure)
    "fec_parity_shards",  # parity shards received
    "fec_short_shards",  # groups given up because too few shards arrived
    "fec_plain_out",  # packets a session with FEC sent plain: its peer sends plain (kcp.pipeline)
    "oob_in",
    "oob_out",
    # sessions
    "active_opens",  # sessions we dialled
    "passive_opens",  # sessions a listener accepted
    "curr_estab",  # sessions open now
    "max_conn",  # the highest curr_estab seen
    "closed",
    "dropped_no_session",  # listener: packet for no session and no room to create one
    "dropped_table_full",
    "dropped_address_full",  # a new session from an address holding max_sessions_per_address
    "dropped_bad_conv",
    "dropped_backlog_full",
    # compat-mode admission (kcp.admission): unproven peers, replays, rate limit, restarts
    "dropped_replay",  # a datagram another address already used, or a pending peer's exact copy
    "dropped_rate_limited",  # a proven peer kept waiting: its source prefix is over its session rate
    "pending_created",  # unproven peers held (a first datagram from an unknown address)
    "pending_promoted",  # unproven peers that proved themselves and became sessions
    "pending_expired",  # unproven peers dropped after pending_timeout
    "pending_evicted",  # unproven peers dropped to make room (max_pending)
    "pending_overflow",  # datagrams of unproven peers not kept (pending_datagrams, max_pending_bytes)
    "restart_deferred",  # a proven new conv from a live session's address, held: the old one is not quiet
    "sessions_replaced",  # live sessions replaced by a proven new conversation (kcp-go's restart rule)
    # wire hints (kcp.wirehint) in compat mode; secure mode counts its own (secure_hints_*)
    "wire_hints_sent",  # compat listener: a secure initiation answered "this server speaks kcp-go's wire"
    "wire_hints_rate_limited",  # compat listener: hints not sent (per source and total rate)
    "wire_hints_received",  # compat dial: a hint bound to what we sent (the session ended with its reason)
    "wire_hints_ignored",  # compat dial: a hint not bound to what we sent (forged or stale): fed as usual
    # secure mode (kcp.secure): folded in from the handshake cores and the connections
    # (SECURE_SUMMARY says which SecureCounters feed each one)
    "secure_handshakes",  # handshakes completed (dialled and accepted)
    "secure_handshake_failures",  # dials that failed: timeout, PSK mismatch, refusal
    "secure_bad_mac1",  # initiations dropped silently: wrong server key / PSK, or garbage
    "secure_retries_sent",  # stateless cookie retries (the server was under load)
    "secure_handshakes_rate_limited",  # initiations dropped under load: over handshake_rate per address
    "secure_datagrams_rate_limited",  # transport datagrams dropped under load: over datagram_rate per address
    "secure_refused",  # authenticated refusals (bad token, version, parameters, draining)
    "secure_half_open_dropped",  # unconfirmed handshakes evicted or expired
    "secure_decrypt_errors",  # packets whose AEAD tag did not verify
    "secure_replays",  # duplicate or too-old packet numbers, replayed initiations
    "secure_unknown_cid",  # transport packets for no connection ID we know
    "secure_key_updates",  # key updates we started
    "secure_path_changes",  # a peer moved to a new address (migration)
    "secure_path_validated",
    "secure_path_failed",
    "secure_closes_sent",
    "secure_closes_received",
    "secure_goaways_sent",
    "secure_goaways_received",
    "secure_stateless_resets_sent",
    "secure_stateless_resets_received",
    "secure_part_errors",  # DATA_PART pieces dropped: not agreed, malformed, contradicting, too large
    "secure_parts_dropped",  # payloads given up while reassembling DATA_PART pieces (evicted, expired)
)


_C = TypeVar("_C", bound="CounterSet")


class CounterSet:
    """Named integer counters in slots (a subclass lists them in ``FIELDS`` and ``__slots__``).

    Attribute access (``c.name += 1``) is the hot path; :meth:`snapshot` returns a dict,
    :meth:`add` aggregates another set of the same kind, :meth:`total` many.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ()
    __slots__ = ()

    def __init__(self) -> None:
        self.reset()

    def snapshot(self) -> dict[str, int]:
        """Return the current values as a new dict (field order is stable)."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def reset(self) -> None:
        """Set every counter to zero."""
        for name in self.FIELDS:
            setattr(self, name, 0)

    def add(self, other: CounterSet, fields: Iterable[str] | None = None) -> None:
        """Add ``other`` (of the same kind) into this set: every field, or only ``fields``."""
        for name in self.FIELDS if fields is None else fields:
            v = getattr(other, name)
            if v:
                setattr(self, name, getattr(self, name) + v)

    @classmethod
    def total(cls: type[_C], sets: Iterable[CounterSet]) -> _C:
        """A new set holding the sum of ``sets``."""
        out = cls()
        for s in sets:
            out.add(s)
        return out

    def __repr__(self) -> str:
        nonzero = {k: v for k, v in self.snapshot().items() if v}
        return f"{type(self).__name__}({nonzero})"


class Counters(CounterSet):
    """The transport's counters (one set per session/endpoint, plus :data:`SNMP`)."""

    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS
    __slots__ = _FIELDS

    # Declared for type checkers; the values live in the slots above.
    bytes_sent: int
    bytes_received: int
    out_pkts: int
    in_pkts: int
    send_syscalls: int
    recv_syscalls: int
    in_segs: int
    out_segs: int
    in_bytes: int
    out_bytes: int
    retrans_segs: int
    fast_retrans_segs: int
    early_retrans_segs: int
    lost_segs: int
    copy_segs: int
    repeat_segs: int
    acks_held: int
    reacks_sent: int
    reacks_useful: int
    wins_repeated: int
    kcp_in_errors: int
    in_errs: int
    in_csum_errors: int
    decrypt_errors: int
    short_packets: int
    fec_recovered: int
    fec_errs: int
    fec_parity_shards: int
    fec_short_shards: int
    fec_plain_out: int
    oob_in: int
    oob_out: int
    active_opens: int
    passive_opens: int
    curr_estab: int
    max_conn: int
    closed: int
    dropped_no_session: int
    dropped_table_full: int
    dropped_address_full: int
    dropped_bad_conv: int
    dropped_backlog_full: int
    dropped_replay: int
    dropped_rate_limited: int
    pending_created: int
    pending_promoted: int
    pending_expired: int
    pending_evicted: int
    pending_overflow: int
    restart_deferred: int
    sessions_replaced: int
    wire_hints_sent: int
    wire_hints_rate_limited: int
    wire_hints_received: int
    wire_hints_ignored: int
    secure_handshakes: int
    secure_handshake_failures: int
    secure_bad_mac1: int
    secure_retries_sent: int
    secure_handshakes_rate_limited: int
    secure_datagrams_rate_limited: int
    secure_refused: int
    secure_half_open_dropped: int
    secure_decrypt_errors: int
    secure_replays: int
    secure_unknown_cid: int
    secure_key_updates: int
    secure_path_changes: int
    secure_path_validated: int
    secure_path_failed: int
    secure_closes_sent: int
    secure_closes_received: int
    secure_goaways_sent: int
    secure_goaways_received: int
    secure_stateless_resets_sent: int
    secure_stateless_resets_received: int
    secure_part_errors: int
    secure_parts_dropped: int

    def add_secure(self, sc: CounterSet) -> None:
        """Add secure mode's counters ``sc`` into the ``secure_*`` summary fields
        (:data:`SECURE_SUMMARY` says which feed each one)."""
        for field, sources in SECURE_SUMMARY.items():
            v = sum(getattr(sc, f) for f in sources)
            if v:
                setattr(self, field, getattr(self, field) + v)


SNMP = Counters()
"""Process-wide counters; sessions add to these as well as to their own."""

SECURE_SUMMARY: dict[str, tuple[str, ...]] = {
    "secure_handshakes": ("handshakes_completed", "accepted"),
    "secure_handshake_failures": ("handshakes_failed",),
    "secure_bad_mac1": ("bad_mac1",),
    "secure_retries_sent": ("retries_sent",),
    "secure_handshakes_rate_limited": ("handshakes_rate_limited",),
    "secure_datagrams_rate_limited": ("datagrams_rate_limited",),
    "secure_refused": ("refused", "accept_failed"),
    "secure_half_open_dropped": ("half_open_evicted", "half_open_expired"),
    "secure_decrypt_errors": ("decrypt_errors", "handshake_decrypt_errors"),
    "secure_replays": ("replay_duplicates", "replay_too_old", "initiation_replays"),
    "secure_unknown_cid": ("unknown_cid",),
    "secure_key_updates": ("key_updates",),
    "secure_path_changes": ("path_changes",),
    "secure_path_validated": ("path_validated",),
    "secure_path_failed": ("path_failed",),
    "secure_closes_sent": ("closes_sent",),
    "secure_closes_received": ("closes_received",),
    "secure_goaways_sent": ("goaways_sent",),
    "secure_goaways_received": ("goaways_received",),
    "secure_stateless_resets_sent": ("stateless_resets_sent",),
    "secure_stateless_resets_received": ("stateless_resets_received",),
    "secure_part_errors": ("part_errors",),
    "secure_parts_dropped": ("parts_dropped",),
}
"""Which :class:`kcp.secure.SecureCounters` feed each process-wide ``secure_*`` field of
:class:`Counters` (``kcp.SNMP`` / ``kcp.snmp()``)."""


def fold_secure(sc: CounterSet) -> None:
    """Add secure mode's counters into :data:`SNMP` (once, when their owner ends)."""
    SNMP.add_secure(sc)
