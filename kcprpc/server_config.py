"""The limits and timings of an RPC server: :class:`ServerConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from kcp.engine import ACK_HOLD_MAX
from kcp.fieldcheck import check_fields
from kcp.gcpolicy import GcPolicy
from kcprpc import codec
from kcprpc.errors import UsageError
from kcprpc.heartbeat import HeartbeatConfig
from kcprpc.presence import PresenceConfig
from kcprpc.receive_settings import ReceiveSettings
from kcprpc.send_lanes import LaneConfig

__all__ = ["ServerConfig"]


DEFAULT_RECEIVE_TOTAL = 24 * 1024 * 1024
"""``ServerConfig.max_receive_total``'s default floor (4 x ``max_partial_frame_bytes`` when larger)."""


@dataclass(frozen=True)
class ServerConfig(ReceiveSettings):
    """Limits and timings of a server (per connection unless said otherwise)."""

    max_message_size: int = codec.DEFAULT_MAX_MESSAGE_SIZE
    max_connections: int = 16384
    """KCP connections at once (per process; the listener's session table). Past it a new one is
    refused (secure mode: SERVER_BUSY, which the client's connect raises as UNAVAILABLE)."""
    max_connections_per_address: int | None = 256
    """What one IPv4 address or IPv6 /64 may hold of ``max_connections`` and of the web listeners'
    connections, all transports together (``Server.connection_sources``), so that one client that
    holds the key cannot fill the table for everyone else (``dropped_address_full`` in the
    listener's stats). Loopback is exempt (``SecureConfig.exempt``). None: no limit. Raise it for
    players behind a carrier NAT that puts more than this many of them on one address."""
    max_concurrent_calls: int = 1000
    max_subscriptions: int = 1000  # topics plus streaming calls open at once
    heartbeat: HeartbeatConfig = field(default_factory=lambda: HeartbeatConfig(interval=1.0, timeout=10.0))
    shutdown_grace: float = 5.0
    stream_high_water: int = 64 * 1024
    max_rooms: int = 256  # rooms one session may be in (ServerSession.join past it: RESOURCE_EXHAUSTED)
    max_name_length: int = 256  # characters in a room or topic name (longer: INVALID_ARGUMENT)
    max_streams_total: int = 16384
    """Streams open on all connections together besides each one's control stream (per process):
    streaming calls, and streams a client opened and left idle. Each costs the server about 5.4 KB
    while idle (its reader, decoder and mux buffers). At it a new stream is refused
    (``streams_refused``) and the connections with the most (more than 8:
    ``kcprpc.process_bounds.STREAM_ALLOWANCE``) are ended with RESOURCE_EXHAUSTED ("streams"), the
    largest first, until the count is under 90 % of it (``streams_shed``). Raise it for a server
    that keeps more streaming calls open at once."""
    max_membership_bytes: int = 32 * 1024 * 1024
    """What the rooms and topics of all sessions together may cost the server (per process): each
    room or topic with local members (``kcprpc.push.KEY_COST`` plus its name, about 1 KB), and each
    session's memberships past its first 4 KiB (``MEMBERSHIP_ALLOWANCE``; ``MEMBERSHIP_COST`` plus
    the name each, about 300 to 550 bytes), as measured. Past it the sessions in the most are ended
    with RESOURCE_EXHAUSTED ("memberships"), the largest first, until the total is under 90 % of it
    (``memberships_shed``). Sessions each in a few rooms and topics are never counted; past that,
    about 100,000 memberships of shared topics fit in the default: raise it for a server that keeps
    more."""
    max_concurrent_notifications: int = 64  # notify handlers running per session; past it they are dropped
    max_metadata_size: int = 16 * 1024  # bytes of HELLO metadata a session keeps (more: RESOURCE_EXHAUSTED)
    presence: PresenceConfig = field(default_factory=PresenceConfig)  # rooms/topics with presence
    gc: GcPolicy | None = field(default_factory=GcPolicy)
    """Garbage-collector tuning of :meth:`Server.serve`'s listener (:class:`kcp.GcPolicy`): freezes
    the long-lived session table out of the collector's full collections as it grows
    (docs/tuning.md, "Many sessions"). None: the collector is left alone."""
    # -- recovery (docs/rpc.md, "Recovery: positions, replay and history") --
    max_history_fetch: int = 1000  # messages one kcprpc.Push/History call returns at most
    history_rate: int = 1024 * 1024
    """Bytes of kept messages a second that ``kcprpc.Push/History`` returns to the sessions of one
    address (IPv4, or IPv6 /64; loopback exempt), on average: a bucket of ``history_burst``. A call
    is refused (RESOURCE_EXHAUSTED) while the address's bucket is empty; one call's answer may take
    it into debt. An answer costs the server about 30-90 ms of CPU per megabyte of messages (each
    payload is dumped and packed again), so without this one client calling History on a room with
    large states could take the server's core."""
    history_burst: int = 4 * 1024 * 1024
    replay_rate: int = 2 * 1024 * 1024
    """Bytes a second that recoveries (a reconnect's restore, a ``since=`` subscribe) replay to the
    sessions of one address (IPv4, or IPv6 /64; loopback exempt), on average: a bucket of
    ``replay_burst``. A recovery that starts while the bucket is empty replays nothing and reports
    what it would have replayed as missed (``Recovered(recovered=False, missed=N)``: the client may
    read it with ``client.history``); one may take the bucket into debt. Without it one client
    could make the server replay whole histories again and again (a HELLO naming 50 topics
    replayed 51,200 messages, 144 ms of CPU, per connection)."""
    replay_burst: int = 8 * 1024 * 1024
    restore_rate: int = 2000
    """Rooms and topics a second that reconnecting clients' HELLOs may name to restore, for all the
    sessions of one address (IPv4, or IPv6 /64; loopback exempt), on average: a bucket of
    ``restore_burst``. A HELLO whose restore starts while the bucket is empty restores nothing
    (``restores_refused``; its client gets ``ResumeFailed`` for each and may subscribe again).
    Each restored topic is a whole Subscribe: a HELLO naming 1,000 topics cost 50 ms of CPU, and
    a client reconnecting again and again could take the server's core (an audit)."""
    restore_burst: int = 20_000
    recovery_buffer: int = 1024  # live messages held per session and key while it replays; past it, given up
    recovery_buffer_bytes: int = 16 * 1024 * 1024
    """Bytes of live messages held back for one session, all its rooms and topics together, while
    their history is replayed (each message's EVENT frame, its payload's decoded estimate and 400
    bytes: ``kcprpc.push.held_size``); past it the recovery of the key whose message went over is
    given up as past ``recovery_buffer`` (``recoveries_overflowed``). ``recovery_buffer`` alone let
    one session pin 1024 messages of up to ``max_message_size`` for each of its ``max_rooms`` +
    ``max_subscriptions`` keys. The default holds one message of the default ``max_message_size``
    (about 8 MiB counted: frame and decoded payload), or 2.4 s of a 60 Hz room whose states list
    200 entities (115 KB counted each, 5.5 KB on the wire), far more than a history round trip
    takes. A message held for several sessions is one object: the sum is an upper bound."""
    recovery_buffer_total: int = 64 * 1024 * 1024
    """Bytes of live messages held back for all sessions together (per process), each message
    counted once (as in ``recovery_buffer_bytes``) however many sessions hold it, and 16 bytes for
    each further one (``kcprpc.push.HOLD_REF``): what the holds really keep alive. Past it the
    largest holds (a session's hold of one key, by what it counts for its session) are given up
    as past ``recovery_buffer`` (their recoveries report what they lost), largest first, until the
    total is under 90 % of it (``recoveries_shed``): a session holding little is never given up
    while larger holds remain. Without it sessions x ``recovery_buffer_bytes`` could be held (a
    client opening connections whose ``since=`` subscribes read a slow history, each holding
    16 MiB of distinct keys' messages). The default is four sessions at their own bound; a mass
    reconnect into the same rooms holds each message once, so it counts little (1,000 sessions
    holding the same 115 KB-counted tick: 131 KB). Raise it for a server whose many sessions
    recover different busy keys at once over a slow broker. At least ``recovery_buffer_bytes``."""
    # -- resume (docs/rpc.md, "Resume: the same session after a reconnect") --
    resume_window: float | None = 30.0
    """Seconds a session whose connection was lost is kept (its id, state, rooms, topics) for its
    client to resume; each session's ``session.resume_window`` starts from it. None or 0: no
    resume (a lost connection ends its session at once, as ``on_disconnect`` says)."""
    max_detached_sessions: int = 10_000
    """Sessions kept for a resume at once (per process); past it the one detached longest ago is
    gone at once (``detached_evicted``). 0: no resume."""
    max_detached_bytes: int = 32 * 1024 * 1024
    """Memory the sessions kept for a resume may hold at once (per process), estimated per session
    as :data:`kcprpc.session_table.DETACHED_BASE` plus its metadata, presence info and room and
    topic names (``session.state`` is the application's to keep small); past it the ones detached
    longest ago are gone at once (``detached_evicted``). About 5,000 sessions with little metadata
    fit in the default: raise it (and the count) for a server that must keep more across a mass
    disconnect."""
    detached_send_buffer: int = 64 * 1024
    """Bytes of reliable events sent to one session (``session.send``) while it is detached, held
    for its resume and sent first when it resumes; they count in ``max_detached_bytes``. For a
    client that takes numbered direct events (the Python and TypeScript clients), also what it has
    not acknowledged while connected (each event plus 64 bytes): past it the oldest are forgotten,
    and its resume reports exactly how many it missed (``kcprpc.Recovered(key="session")``). For
    any other client, past it the session is gone (its client's resume fails with
    ``SessionExpired``: nothing it was sent is lost without its knowing). Unreliable ones are
    dropped (``unreliable_dropped``). Rooms and topics need none of this: their messages are
    replayed from the broker's history."""
    # -- the send side: clients that stop reading (docs/rpc.md, "Clients that stop reading") --
    max_send_backlog: int = 8 * 1024 * 1024  # bytes held for one client: past it, "slow consumer"
    max_send_backlog_total: int = 64 * 1024 * 1024  # the same for every client together (per process)
    slow_consumer_timeout: float | None = 10.0  # s with data waiting and none of it consumed
    lanes: LaneConfig = field(default_factory=LaneConfig)
    """Send lanes: latest-wins keys and priority classes of events (docs/rpc.md, "Latest-wins and
    priorities"); used only by events sent with a key or a lane."""
    # -- receive-side memory per connection (docs/rpc.md, "Flow control and memory per connection")
    max_decoded_bytes: int | None = None
    """Estimated bytes of decoded request bodies one connection may hold (those of running calls
    and of unread streamed messages); a body that would exceed it is refused without being decoded
    (RESOURCE_EXHAUSTED). None: 8 MiB, or ``2 * max_message_size`` if larger."""
    max_partial_frame_bytes: int | None = None
    """Bytes of frames received in part that the streams of one connection may hold together
    (the control stream may hold one frame more); a stream whose frame does not fit stops being
    read until it does (or, with no pause slot left, the frame is refused). None:
    ``max_message_size + 9 + 256 KiB`` (4.25 MiB)."""
    partial_frame_timeout: float | None = 10.0
    """A frame received in part that gets no further byte for this long is dropped (its call fails
    with RESOURCE_EXHAUSTED) and its buffer space given back. None: never."""
    max_receive_total: int | None = None
    """What all clients together may make the server hold on the receive side (per process): frames
    received in part and bytes received and not read yet (mux buffers, KCP queues; decoded bodies
    are bounded per connection by ``max_decoded_bytes``). Past it the clients holding the most are ended with RESOURCE_EXHAUSTED ("receive
    memory"), the largest first, until the total is under 90 % of it (``receive_shed``). None:
    24 MiB, or 4 x ``max_partial_frame_bytes`` if larger. Raise it for a server that takes many large
    messages at once: each one in progress holds up to its size."""

    ack_hold: int = 0
    """Held acks for subscribers (docs/tuning.md "Delayed acks"): WELCOME asks every secure-mode
    KCP client to hold its transport's lone acks up to this many ms once it only receives, so
    that it acks every second push (1..250; 0: not asked, the default). Less server CPU per push,
    at the cost of a slower recovery of a push lost while its client holds. A client whose own
    ``kcp.SessionConfig.ack_hold`` is set keeps it; the TypeScript client and web transports ack
    every push."""

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if (
            self.max_message_size <= 0
            or self.max_connections <= 0
            or (self.max_connections_per_address is not None and self.max_connections_per_address <= 0)
            or self.max_concurrent_calls <= 0
            or self.max_subscriptions < 0
            or self.max_rooms < 0
            or self.max_name_length <= 0
            or self.max_membership_bytes <= 0
            or self.max_streams_total <= 0
            or self.max_concurrent_notifications <= 0
            or self.max_metadata_size <= 0
            or self.max_detached_sessions < 0
            or self.max_detached_bytes < 0
            or self.detached_send_buffer < 0
        ):
            raise UsageError("limits must be positive")
        if self.max_history_fetch <= 0 or self.recovery_buffer < 0 or self.recovery_buffer_bytes < 0:
            raise UsageError(
                "max_history_fetch must be positive, recovery_buffer and recovery_buffer_bytes 0 or more"
            )
        if (
            self.history_rate <= 0
            or self.history_burst <= 0
            or self.replay_rate <= 0
            or self.replay_burst <= 0
            or self.restore_rate <= 0
            or self.restore_burst <= 0
        ):
            raise UsageError(
                "history_rate, history_burst, replay_rate, replay_burst, restore_rate and restore_burst "
                "must be positive"
            )
        if self.max_send_backlog <= self.max_message_size:
            raise UsageError("max_send_backlog must be larger than max_message_size (one reply must fit)")
        if self.recovery_buffer_total < self.recovery_buffer_bytes:
            raise UsageError("recovery_buffer_total must be at least recovery_buffer_bytes")
        if self.max_send_backlog_total < self.max_send_backlog:
            raise UsageError("max_send_backlog_total must be at least max_send_backlog")
        if self.resume_window is not None and not self.resume_window >= 0:
            raise UsageError("resume_window must be None or seconds >= 0")
        if self.slow_consumer_timeout is not None and self.slow_consumer_timeout <= 0:
            raise UsageError("slow_consumer_timeout must be positive or None")
        if type(self.ack_hold) is not int or not 0 <= self.ack_hold <= ACK_HOLD_MAX:
            raise UsageError(f"ack_hold must be in 0..{ACK_HOLD_MAX} ms, got {self.ack_hold!r}")
        self.receive_total()

    def receive_total(self) -> int:
        """The effective ``max_receive_total``; raises :class:`~kcprpc.errors.UsageError` when one
        connection's frames in part (``max_partial_frame_bytes``) would not fit in it."""
        _decoded, partial = self.receive_limits()
        if self.max_receive_total is None:
            return max(DEFAULT_RECEIVE_TOTAL, 4 * partial)
        if self.max_receive_total < partial:
            raise UsageError(
                f"max_receive_total ({self.max_receive_total}) must be at least one connection's "
                f"max_partial_frame_bytes ({partial})"
            )
        return self.max_receive_total
