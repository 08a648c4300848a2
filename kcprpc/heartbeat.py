"""Heartbeat policy and reconnect backoff (sans-I/O: times are passed in as ``now`` in ms).

The client sends ``PING`` every ``interval_ms``; the peer answers ``PONG`` at once. Each pong gives
an RTT sample (smoothed like TCP's SRTT, 1/8 gain). If nothing at all is received for
``timeout_ms`` the peer is declared dead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from kcp.fieldcheck import check_fields
from kcprpc.errors import UsageError


class HeartbeatAction(Enum):
    """What the driver must do after :meth:`Heartbeat.poll`."""

    NONE = 0
    PING = 1
    DEAD = 2


@dataclass(frozen=True)
class HeartbeatConfig:
    """Ping every ``interval`` seconds; the peer is dead after ``timeout`` seconds of silence.

    Liveness rides on the traffic that already flows: a PING that falls due while frames went
    both ways within the last ``interval`` (calls and their replies; over secure KCP also the
    transport's acks of what arrived, which the server's silence check counts) is skipped (one
    still goes out every ``4 * max_interval``, for a fresh RTT sample), and while the
    connection is quiet and each PING is answered, the interval doubles up to ``max_interval``
    (None: ``min(timeout / 2, 4 * interval)``). An unanswered PING brings it back to ``interval``,
    counted from that PING: a PING not answered within ``interval`` is followed by the next one
    then, not a stretched interval later (one lost PING on a quiet, lossy link used to be enough
    to declare the peer dead: the next went out as the timeout ran out).
    A dead peer is still declared ``timeout`` seconds after the last thing it sent, whatever the
    interval. ``max_interval=interval`` pings at a fixed rate (the behaviour before issue 16). A
    client never stretches beyond 2.5 times the heartbeat interval its server announces in
    WELCOME; a server's heartbeat timeout (its sweep closes silent sessions) must stay above
    that, as the defaults do (2.5 s against the server's 10 s).
    """

    interval: float = 1.0
    timeout: float = 5.0
    max_interval: float | None = None

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if self.interval <= 0 or self.timeout <= self.interval:
            raise UsageError("heartbeat needs 0 < interval < timeout")
        if self.max_interval is not None and not self.interval <= self.max_interval < self.timeout:
            raise UsageError("heartbeat needs interval <= max_interval < timeout")

    @property
    def longest_interval(self) -> float:
        """The interval a quiet connection stretches to (``max_interval`` or its default)."""
        if self.max_interval is not None:
            return self.max_interval
        return max(self.interval, min(self.timeout / 2, 4 * self.interval))


class Heartbeat:
    """Heartbeat state of one connection (see :class:`HeartbeatConfig` for the policy).

    The driver passes ``activity`` to :meth:`poll`: a count that grows whenever this side sends
    something other than its PINGs (calls started). Traffic both ways within the last interval
    replaces a PING; ``skipped`` counts the PINGs that were not needed."""

    __slots__ = (
        "_activity",
        "_nonce",
        "_sent",
        "current_ms",
        "interval_ms",
        "last_ping",
        "last_ping_sent",
        "last_receive",
        "last_rtt_ms",
        "max_interval_ms",
        "min_rtt_ms",
        "skipped",
        "srtt_ms",
        "timeout_ms",
    )

    def __init__(self, config: HeartbeatConfig, now: int) -> None:
        self.interval_ms = int(config.interval * 1000)
        self.timeout_ms = int(config.timeout * 1000)
        self.max_interval_ms = int(config.longest_interval * 1000)
        self.current_ms = self.interval_ms  # the interval now (stretched while quiet)
        self.last_receive = now
        self.last_ping = now  # the last PING sent or skipped
        self.last_ping_sent = now
        self._nonce = 0
        self._sent: dict[int, int] = {}
        self._activity = 0
        self.skipped = 0
        self.srtt_ms: float | None = None
        self.last_rtt_ms: float | None = None
        self.min_rtt_ms: float | None = None

    def limit_interval(self, ms: int) -> None:
        """Never stretch beyond ``ms`` (nor below ``interval``): the client caps its quiet interval
        at 2.5 times the heartbeat interval its server announces in WELCOME, so that a server
        with a short heartbeat timeout still hears from a quiet client often enough."""
        self.max_interval_ms = max(self.interval_ms, min(self.max_interval_ms, ms))
        self.current_ms = min(self.current_ms, self.max_interval_ms)

    def on_receive(self, now: int) -> None:
        """Any frame arrived."""
        self.last_receive = now

    def on_pong(self, nonce: int, now: int) -> float | None:
        """A pong arrived; returns the RTT sample in ms, or None for an unknown nonce."""
        self.last_receive = now
        sent = self._sent.pop(nonce, None)
        if sent is None:
            return None
        # drop older outstanding pings: their pongs are late or lost
        for n in [n for n in self._sent if n < nonce]:
            del self._sent[n]
        rtt = float(now - sent)
        self.last_rtt_ms = rtt
        self.min_rtt_ms = rtt if self.min_rtt_ms is None else min(self.min_rtt_ms, rtt)
        self.srtt_ms = rtt if self.srtt_ms is None else self.srtt_ms + (rtt - self.srtt_ms) / 8
        return rtt

    def _wait_ms(self) -> int:
        """The interval before the next PING: ``interval`` while the last one is unanswered."""
        nonce = self._nonce
        return self.interval_ms if nonce != 0 and nonce in self._sent else self.current_ms

    def poll(self, now: int, activity: int = 0) -> tuple[HeartbeatAction, int]:
        """(action, nonce to send with a PING). ``activity``: see the class docstring."""
        if now - self.last_receive >= self.timeout_ms:
            return HeartbeatAction.DEAD, 0
        if now - self.last_ping < self._wait_ms():
            return HeartbeatAction.NONE, 0
        sent_something = activity != self._activity
        self._activity = activity
        self.last_ping = now
        if (
            sent_something
            and now - self.last_receive < self.interval_ms
            and now - self.last_ping_sent < 4 * self.max_interval_ms  # an RTT sample now and then
        ):
            self.skipped += 1  # traffic went both ways: the peer is there and knows we are
            return HeartbeatAction.NONE, 0
        answered = self._nonce != 0 and self._nonce not in self._sent  # the last PING's PONG came back
        self.current_ms = min(2 * self.current_ms, self.max_interval_ms) if answered else self.interval_ms
        self.last_ping_sent = now
        self._nonce = (self._nonce + 1) & 0xFFFFFFFF
        self._sent[self._nonce] = now
        if len(self._sent) > 64:
            del self._sent[min(self._sent)]
        return HeartbeatAction.PING, self._nonce

    def next_wakeup(self, now: int) -> int:
        """Milliseconds until :meth:`poll` may act."""
        return max(1, min(self.last_ping + self._wait_ms(), self.last_receive + self.timeout_ms) - now)


class SendStall:
    """Is the peer consuming what waits for it? Pings prove that a peer is there, not that it reads.

    Feed :meth:`observe` samples of the bytes held for the peer (``backlog``) and of a count that
    grows whenever the peer consumes some of them (``progress``: any unit, only changes matter).
    The peer is stalled once data has waited for ``timeout_ms`` and, all that time, ``progress``
    did not move and ``backlog`` never fell below its level at the start. A sample with nothing
    waiting ends a stall.
    """

    __slots__ = ("_low", "_progress", "_since", "timeout_ms")

    def __init__(self, timeout_ms: int) -> None:
        if timeout_ms <= 0:
            raise UsageError("the stall timeout must be positive")
        self.timeout_ms = timeout_ms
        self._since: int | None = None
        self._progress = 0
        self._low = 0

    @property
    def since(self) -> int | None:
        """When the current stretch without consumption began (ms), or None when nothing waits."""
        return self._since

    def observe(self, now: int, backlog: int, progress: int) -> bool:
        """One sample at ``now`` (ms); True when the peer has consumed nothing for ``timeout_ms``."""
        if backlog <= 0:
            self._since = None
            return False
        if self._since is None or progress != self._progress or backlog < self._low:
            self._since = now
            self._progress = progress
            self._low = backlog
            return False
        return now - self._since >= self.timeout_ms


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with jitter. ``max_attempts=None`` retries forever."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None
    restore: bool = True  # re-join rooms and re-subscribe topics after reconnecting

    def __post_init__(self) -> None:
        check_fields(self, UsageError)
        if self.initial < 0 or self.maximum < self.initial:
            raise UsageError(
                f"ReconnectPolicy needs 0 <= initial <= maximum, not {self.initial}, {self.maximum}"
            )
        if self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise UsageError(
                f"ReconnectPolicy needs multiplier >= 1 and 0 <= jitter <= 1, not {self.multiplier}, {self.jitter}"
            )
        if self.max_attempts is not None and self.max_attempts < 0:
            raise UsageError(
                f"ReconnectPolicy.max_attempts must be None (forever) or 0 or more, not {self.max_attempts}"
            )

    def delay(self, attempt: int, rng: Callable[[int], bytes] = os.urandom) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based)."""
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        r = int.from_bytes(rng(4), "big") / 0xFFFFFFFF  # 0..1
        return max(0.0, base * (1 + self.jitter * (2 * r - 1)))
