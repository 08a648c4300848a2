"""A sender-side, BBR-like congestion controller for KCP bulk flows (sans-I/O).

ikcp's own congestion window (``nc=0``) reads every loss, random loss included, as congestion,
and with ``nc=1`` (kcptun's modes, our default) there is none: a sender keeps its whole send
window in flight, and on a rate-limited link the excess waits in the bottleneck's queue (at
10 Mbit/s a 128-segment window is 140 ms of queue). :class:`BBRLite` instead models the path:

* the **bottleneck bandwidth** is the highest delivery rate (bytes acknowledged per unit of
  time, measured over about one RTT) seen in the last ``bw_rounds`` round trips;
* the **minimum RTT** is the lowest RTT seen in the last ``min_rtt_window`` ms; when it has not
  been seen again for that long, the controller drains the queue for ``probe_rtt_ms``
  (PROBE_RTT) so that it can be measured again;
* it sends at ``pacing_gain x bandwidth`` and keeps at most ``cwnd_gain x bandwidth x min RTT``
  bytes in flight. Its phases are BBR's: STARTUP (gain 2.89 until the bandwidth stops growing
  by 25 % for 3 rounds), DRAIN (gain 1/2.89 until in-flight is back to one BDP), then PROBE_BW
  (a cycle of 8 round trips at gains 1.25, 0.75, 1, 1, 1, 1, 1, 1).

Random loss is not a congestion signal: it does not shrink the window (the losses are only
counted, :attr:`BBRLite.lost_segs`). A queue is: when the RTT rises above ``queue_factor x min
RTT`` outside the 1.25 probe, the controller paces at 0.75 until it is back, and STARTUP ends
once the RTT reaches ``queue_factor x min RTT`` (a queue of a quarter BDP), not only when the
bandwidth stops growing; STARTUP's window is 1.5 x BDP, so it cannot fill a shallow queue. Rounds paced below 1 (DRAIN, the 0.75 phases) do not feed the bandwidth filter.

Time is integer milliseconds supplied by the caller (``now``); nothing here reads a clock. The
session layer (:mod:`kcp.session_cc`) drives it from the engine's counters and RTT: it calls
:meth:`BBRLite.on_ack` after each receive batch, :meth:`BBRLite.on_send` and
:meth:`BBRLite.on_loss` after each flush, and reads :attr:`BBRLite.cwnd` (segments) and
:meth:`BBRLite.quota` (bytes it may send now, a token bucket at :attr:`BBRLite.pacing_rate`).
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = ["BBRLite", "CCState"]

STARTUP_GAIN = 2.885  # 2 / ln 2: doubles the delivery rate each round
STARTUP_CWND_GAIN = 1.5  # BBR's is 2.89: here the window, not the pacer, bounds STARTUP's queue
MAX_LOSS = 0.5  # the loss compensation paces at most at 1 / (1 - MAX_LOSS) x the delivery rate
# Below this min RTT (ms) nothing is paced: the millisecond clock cannot resolve the path's RTT
# nor a queue on it, the window (2 x BDP plus half a burst) bounds the flight alone, and pacing a
# CPU-bound loopback flow only cut its batches (about 10 % of its throughput).
MIN_PACED_RTT = 3
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


class CCState(enum.Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


class BBRLite:
    """Bottleneck bandwidth and RTT estimates → a congestion window and a pacing rate.

    ``mss`` is the segment payload size in bytes (the unit of :attr:`cwnd`). The other keywords
    are the model's constants; the defaults are BBR's, scaled for KCP's 10 ms ticks.
    """

    __slots__ = (
        "_bw_samples",
        "_delivered",
        "_full_bw",
        "_full_bw_count",
        "_hist",
        "_last_refill",
        "_loss_hist",
        "_measured",
        "_phase",
        "_phase_start",
        "_probe_rtt_done",
        "_queue_drain",
        "_round_low_gain",
        "_round_max",
        "_round_retrans",
        "_round_sent",
        "_round_start",
        "_rtt",
        "_rtt_window_min",
        "burst_ms",
        "bw",
        "bw_rounds",
        "cwnd_gain",
        "initial_cwnd",
        "loss_comp",
        "lost_segs",
        "max_cwnd",
        "min_cwnd",
        "min_rtt",
        "min_rtt_stamp",
        "min_rtt_window",
        "mss",
        "pacing_gain",
        "probe_rtt_ms",
        "queue_factor",
        "rounds",
        "state",
        "tokens",
    )

    def __init__(
        self,
        mss: int,
        *,
        initial_cwnd: int = 32,
        min_cwnd: int = 4,
        max_cwnd: int = 1 << 16,
        bw_rounds: int = 10,
        min_rtt_window: int = 10_000,
        probe_rtt_ms: int = 200,
        queue_factor: float = 1.25,
        burst_ms: int = 20,
    ) -> None:
        if mss < 1:
            raise ValueError("mss must be >= 1")
        if not 1 <= min_cwnd <= initial_cwnd <= max_cwnd:
            raise ValueError("need 1 <= min_cwnd <= initial_cwnd <= max_cwnd")
        self.mss = mss
        self.initial_cwnd = initial_cwnd
        self.min_cwnd = min_cwnd
        self.max_cwnd = max_cwnd
        self.bw_rounds = bw_rounds
        self.min_rtt_window = min_rtt_window
        self.probe_rtt_ms = probe_rtt_ms
        self.queue_factor = queue_factor
        self.burst_ms = burst_ms
        self.state = CCState.STARTUP
        self.pacing_gain = STARTUP_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        self.bw = 0.0  # bottleneck bandwidth estimate, bytes per ms
        self.min_rtt = 0  # ms; 0 until the first sample
        self.min_rtt_stamp = 0
        self.rounds = 0
        self.tokens = 0.0  # pacing budget in bytes (may go below zero: a segment borrows)
        self._last_refill: int | None = None
        self._measured = False  # a delivery rate measured while the sender had more to send
        self._delivered = 0  # bytes acknowledged, cumulative
        self._hist: deque[tuple[int, int]] = deque()  # (time, delivered) for the rate samples
        self._bw_samples: deque[float] = deque()  # the max delivery rate of each recent round
        self._round_max = 0.0
        self._round_low_gain = False
        self._rtt = 0
        self._round_start = 0
        self.lost_segs = 0
        self.loss_comp = 1.0
        self._round_sent = 0
        self._round_retrans = 0
        self._loss_hist: deque[tuple[int, int]] = deque()
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._phase = 0
        self._phase_start = 0
        self._probe_rtt_done = 0
        self._rtt_window_min = 0
        self._queue_drain = False

    # -- outputs ---------------------------------------------------------------------------------
    @property
    def bdp(self) -> float:
        """Bandwidth x min RTT in bytes (0 before both are known)."""
        return self.bw * self.min_rtt

    @property
    def cwnd(self) -> int:
        """How many segments may be unacknowledged now."""
        if self.state is CCState.PROBE_RTT:
            return self.min_cwnd
        if not self.bw or not self.min_rtt:
            return self.initial_cwnd
        # BDP x gain, plus half a pacing burst of room (acks come back in batches)
        target = self.cwnd_gain * self.bdp + self.bw * (self.burst_ms >> 1)
        n = int(target / self.mss) + 1
        # STARTUP never offers less than the initial window (a request/response session, always
        # app-limited, stays there and keeps ikcp's behaviour for its bursts)
        low = self.initial_cwnd if self.state is CCState.STARTUP else self.min_cwnd
        if n < low:
            return low
        return n if n < self.max_cwnd else self.max_cwnd

    @property
    def measured(self) -> bool:
        """Whether a delivery rate was measured while the sender had data waiting (until then the
        controller does not pace, and stays in STARTUP)."""
        return self._measured

    @property
    def pacing_rate(self) -> float:
        """Bytes per second; 0 means not paced, window-limited only: no bandwidth measured yet
        while the sender had data waiting, or a path whose min RTT is below
        :data:`MIN_PACED_RTT` (loopback, a LAN)."""
        return self._rate() * 1000.0

    def _rate(self) -> float:
        if not self._measured or self.min_rtt < MIN_PACED_RTT:
            return 0.0
        return self.pacing_gain * self.bw * self.loss_comp

    def quota(self, now: int) -> float:
        """Bytes the pacer lets out now (the token bucket, refilled up to ``now``)."""
        self._refill(now)
        return self.tokens

    def next_send_time(self, now: int) -> int:
        """When the pacer next has a positive budget (``now`` if it has one already)."""
        self._refill(now)
        if self.tokens > 0:
            return now
        rate = self._rate()
        if rate <= 0:
            return now
        return now + int(-self.tokens / rate) + 1

    def _refill(self, now: int) -> None:
        last = self._last_refill
        self._last_refill = now
        rate = self._rate()
        if rate <= 0:
            self.tokens = float(self.initial_cwnd * self.mss)
            return
        if last is None or now <= last:
            return
        cap = max(rate * self.burst_ms, 2.0 * self.mss)
        t = self.tokens + rate * (now - last)
        self.tokens = t if t < cap else cap

    # -- inputs ----------------------------------------------------------------------------------
    def on_send(self, now: int, nbytes: int) -> None:
        """``nbytes`` of segment payload left (new data and retransmissions)."""
        self._refill(now)
        t = self.tokens - nbytes
        floor = -self._rate() * self.burst_ms
        self.tokens = t if t > floor or floor == 0 else floor  # a retransmission storm is not owed
        self._round_sent += nbytes

    def on_loss(self, now: int, nsegs: int) -> None:
        """``nsegs`` segments were retransmitted (timeout or fast resend): counted, not acted on."""
        self.lost_segs += nsegs
        self._round_retrans += nsegs * self.mss

    def on_ack(
        self, now: int, acked_bytes: int, rtt: int, inflight: int, *, app_limited: bool = False
    ) -> None:
        """After acks: ``acked_bytes`` newly acknowledged, ``rtt`` the current RTT estimate in ms
        (0: none yet), ``inflight`` the segments still unacknowledged; ``app_limited`` when the
        sender had nothing more to send (its samples may raise the estimate, never lower it)."""
        if rtt > 0:
            self._rtt = rtt
            self._update_min_rtt(now, rtt)
        if acked_bytes > 0:
            self._delivered += acked_bytes
            self._sample_rate(now, app_limited)
        self._advance_round(now, app_limited)
        self._update_state(now, rtt, inflight)

    def _update_min_rtt(self, now: int, rtt: int) -> None:
        if self.state is CCState.PROBE_RTT and (not self._rtt_window_min or rtt < self._rtt_window_min):
            self._rtt_window_min = rtt
        if not self.min_rtt or rtt <= self.min_rtt:
            self.min_rtt = rtt
            self.min_rtt_stamp = now

    def _sample_rate(self, now: int, app_limited: bool) -> None:
        hist = self._hist
        hist.append((now, self._delivered))
        window = self.min_rtt if self.min_rtt > 20 else 20
        while len(hist) > 2 and hist[1][0] <= now - window:
            hist.popleft()
        t0, d0 = hist[0]
        if now - t0 < window // 2 or now <= t0:
            return
        rate = (self._delivered - d0) / (now - t0)
        if app_limited:
            if rate < self.bw:
                return
        else:
            self._measured = True
        if rate > self._round_max:
            self._round_max = rate
        if rate > self.bw:
            self.bw = rate

    def _round_length(self) -> int:
        """A round trip as it is now (queue included, as BBR's delivery-counted rounds are)."""
        rtt = self._rtt if self._rtt > self.min_rtt else self.min_rtt
        return rtt if rtt > 10 else 10

    def _advance_round(self, now: int, app_limited: bool) -> None:
        if self.pacing_gain < 1.0:
            self._round_low_gain = True
        length = self._round_length()
        elapsed = now - self._round_start
        if elapsed < length:
            return
        self._round_start = now
        self.rounds += 1
        samples = self._bw_samples
        # A round short of data cannot lower the estimate, nor can one paced below it (DRAIN, the
        # 0.75 phase) unless a queue stood all along: then the link was busy, at its real rate.
        m = self._round_max
        queued = self.min_rtt and self._rtt > self.min_rtt * self.queue_factor
        if m > 0 and (m >= self.bw or (not app_limited and (queued or not self._round_low_gain))):
            samples.append(m)
            while len(samples) > self.bw_rounds:
                samples.popleft()
            self.bw = max(samples)
        self._round_low_gain = self.pacing_gain < 1.0
        self._round_max = 0.0
        lh = self._loss_hist
        lh.append((self._round_sent, self._round_retrans))
        self._round_sent = self._round_retrans = 0
        while len(lh) > self.bw_rounds:
            lh.popleft()
        sent = sum(x[0] for x in lh)
        if sent >= 16 * self.mss:
            lost = sum(x[1] for x in lh) / sent
            self.loss_comp = 1.0 / (1.0 - (lost if lost < MAX_LOSS else MAX_LOSS))
        if self.state is CCState.STARTUP and not app_limited and self.bw:
            if self.bw >= self._full_bw * 1.25:
                self._full_bw = self.bw
                self._full_bw_count = 0
            else:
                self._full_bw_count += 1

    def _update_state(self, now: int, rtt: int, inflight: int) -> None:
        st = self.state
        bdp_segs = self.bdp / self.mss
        if st is CCState.STARTUP:
            # the bandwidth stopped growing, or a queue of one BDP built up already
            if self._measured and (
                self._full_bw_count >= 3 or (rtt and self.min_rtt and rtt >= self.queue_factor * self.min_rtt)
            ):
                self._enter(CCState.DRAIN, now)
        elif st is CCState.DRAIN:
            if inflight <= bdp_segs or (rtt and rtt <= self.min_rtt * self.queue_factor):
                self._enter(CCState.PROBE_BW, now)
        elif st is CCState.PROBE_BW:
            if rtt and self.min_rtt:
                if rtt > self.min_rtt * self.queue_factor:
                    self._queue_drain = True
                elif rtt <= self.min_rtt * (1 + (self.queue_factor - 1) / 2):
                    self._queue_drain = False
            elapsed = now - self._phase_start
            if elapsed >= self._round_length() or (
                self._phase == 0 and self._queue_drain and elapsed >= self.min_rtt
            ):
                self._phase = (self._phase + 1) % len(PROBE_BW_GAINS)
                self._phase_start = now
            gain = PROBE_BW_GAINS[self._phase]
            if self._queue_drain and gain <= 1.0:
                gain = 0.75
            self.pacing_gain = gain
        elif st is CCState.PROBE_RTT:
            if now >= self._probe_rtt_done:
                if self._rtt_window_min:
                    self.min_rtt = self._rtt_window_min
                self.min_rtt_stamp = now
                self._enter(CCState.PROBE_BW, now)
            return
        if self.min_rtt and now - self.min_rtt_stamp > self.min_rtt_window:
            self._enter(CCState.PROBE_RTT, now)

    def _enter(self, state: CCState, now: int) -> None:
        self.state = state
        if state is CCState.DRAIN:
            self.pacing_gain = 1 / STARTUP_GAIN
            self.cwnd_gain = STARTUP_CWND_GAIN
        elif state is CCState.PROBE_BW:
            self.pacing_gain = 1.0
            self.cwnd_gain = 2.0
            self._phase = 2  # start cruising; the 1.25 probe comes round in 6 RTTs
            self._phase_start = now
            self._queue_drain = False
        elif state is CCState.PROBE_RTT:
            self.pacing_gain = 1.0
            length = self.min_rtt if self.min_rtt > 10 else 10
            self._probe_rtt_done = now + max(self.probe_rtt_ms, length)
            self._rtt_window_min = 0
