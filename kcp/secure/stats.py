"""Counters of secure mode: every dropped datagram and every protocol event is counted here."""

from __future__ import annotations

from typing import ClassVar

from kcp.stats import CounterSet

_FIELDS: tuple[str, ...] = (
    # handshake, client side
    "handshakes_initiated",
    "initiations_sent",  # including retransmissions and retries with a cookie
    "retries_received",
    "handshakes_completed",
    "handshakes_failed",
    # handshake, server side
    "initiations_received",
    "bad_mac1",  # wrong server key / PSK, or garbage: dropped silently
    "bad_mac2",  # cookie missing or stale while under load
    "retries_sent",
    "handshakes_rate_limited",  # initiations dropped under load: their address was over handshake_rate
    "initiation_replays",  # an initiation whose ephemeral key was already used
    "initiation_retransmits",  # same initiation again: the stored response is sent again
    "handshake_decrypt_errors",
    "refused",  # authenticated refusals sent (token, version, parameters)
    "params_refused",  # of those: a malformed proposal, or one above the server's policy (strict client)
    "fec_clamped",  # FEC proposals above the server's policy, answered with the server's own FEC
    "half_open",  # gauge: handshakes answered but not yet confirmed by the client
    "half_open_max",
    "half_open_evicted",
    "half_open_expired",
    "accepted",  # connections confirmed by the client's first packet
    "amplification_refused",  # a reply would have been larger than the datagram that caused it
    "accept_failed",  # confirmed handshakes the session layer could not set up: CLOSE sent, state freed
    "hints_sent",  # wire hints (kcp.wirehint) sent: wrong key, pattern, wire version, not the secure wire
    "hints_rate_limited",  # wire hints not sent: over hint_rate_per_source or hint_rate
    "hints_received",  # client: wire hints that echoed our initiation (the handshake failed at once)
    "hints_ignored",  # client: wire hints not bound to our initiation (forged or stale): dropped
    # transport
    "packets_sealed",
    "packets_opened",
    "short_packets",
    "bad_type",
    "unknown_cid",
    "decrypt_errors",
    "replay_duplicates",
    "replay_too_old",
    "frame_errors",
    "after_close",  # packets received after the connection closed
    "transport_rejected",  # listener: datagrams to a live connection ID that did not authenticate
    "datagrams_rate_limited",  # listener, under load: datagrams of an address over datagram_rate, not opened
    "key_updates",
    "key_updates_by_peer",
    "prev_key_used",
    "path_changes",
    "path_validated",
    "path_failed",
    "path_challenges_sent",
    "closes_sent",
    "closes_received",
    "goaways_sent",
    "goaways_received",
    "stateless_resets_sent",
    "stateless_resets_received",
    "mtu_probes_answered",  # padded PINGs with a probe id answered with a PING_ACK
    "mtu_probe_acks",  # PING_ACKs received (answers to our MTU probes)
    "payloads_split",  # payloads larger than the path MTU sent as DATA_PART pieces
    "parts_sent",  # DATA_PART datagrams sent
    "parts_received",  # DATA_PART frames received (authenticated)
    "parts_reassembled",  # payloads rebuilt from their pieces and delivered
    "part_errors",  # DATA_PART frames dropped: not agreed, malformed, contradicting, too large
    "parts_dropped",  # incomplete payloads given up: too old, or evicted for a newer one
)


class SecureCounters(CounterSet):
    """Secure mode's counters (a :class:`kcp.stats.CounterSet`: ``snapshot``, ``add``, ``reset``)."""

    FIELDS: ClassVar[tuple[str, ...]] = _FIELDS
    __slots__ = _FIELDS
    handshakes_initiated: int
    initiations_sent: int
    retries_received: int
    handshakes_completed: int
    handshakes_failed: int
    initiations_received: int
    bad_mac1: int
    bad_mac2: int
    retries_sent: int
    handshakes_rate_limited: int
    initiation_replays: int
    initiation_retransmits: int
    handshake_decrypt_errors: int
    refused: int
    params_refused: int
    fec_clamped: int
    half_open: int
    half_open_max: int
    half_open_evicted: int
    half_open_expired: int
    accepted: int
    amplification_refused: int
    accept_failed: int
    hints_sent: int
    hints_rate_limited: int
    hints_received: int
    hints_ignored: int
    packets_sealed: int
    packets_opened: int
    short_packets: int
    bad_type: int
    unknown_cid: int
    decrypt_errors: int
    replay_duplicates: int
    replay_too_old: int
    frame_errors: int
    after_close: int
    transport_rejected: int
    datagrams_rate_limited: int
    key_updates: int
    key_updates_by_peer: int
    prev_key_used: int
    path_changes: int
    path_validated: int
    path_failed: int
    path_challenges_sent: int
    closes_sent: int
    closes_received: int
    goaways_sent: int
    goaways_received: int
    stateless_resets_sent: int
    stateless_resets_received: int
    mtu_probes_answered: int
    mtu_probe_acks: int
    payloads_split: int
    parts_sent: int
    parts_received: int
    parts_reassembled: int
    part_errors: int
    parts_dropped: int
