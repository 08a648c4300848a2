"""A seeded, simulated datagram link driven by virtual time, for tests and benchmarks.

:class:`SimLink` is one direction of a link. ``send(datagram)`` schedules the datagram (or drops,
duplicates or delays it, as the seeded rng decides); ``deliver(now)`` returns every datagram whose
arrival time is ``<= now``, in arrival order. Nothing here reads a clock: the driver sets
``link.now`` (or passes ``now`` to :meth:`SimLink.send`), so runs are exactly reproducible.

Each datagram independently:

* is lost with probability ``loss`` (with Gilbert-Elliott burst loss, ``ge_p`` > 0: the link
  moves Good→Bad with probability ``ge_p`` and Bad→Good with ``ge_r`` per datagram, as linkemu
  does, and loses ``ge_bad_loss`` of the datagrams in Bad and ``loss`` of those in Good);
* otherwise arrives after ``delay`` plus a uniform ``0..jitter`` ms (plus the serialisation time
  ``len / rate`` behind earlier datagrams when ``rate``, in bytes per ms, is set; with ``limit``
  ms of queue already waiting it is dropped as a full router queue would);
* with probability ``reorder`` gets an extra ``1..reorder_extra`` ms, so later datagrams
  overtake it;
* with probability ``dup`` arrives a second time (with its own jitter).

:func:`drive` runs two endpoints (anything with ``input(data, now)``, ``update(now)`` and
``check(now)``, e.g. :class:`kcp.engine.KCP`) against each other over two links, jumping the
virtual clock from event to event.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Protocol, cast

__all__ = ["Endpoint", "SimLink", "call_latencies", "drive"]


class SimLink:
    """One direction of a seeded lossy link (see the module docstring for the model)."""

    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay: int = 0,
        jitter: int = 0,
        rate: float | None = None,
        limit: int | None = None,
        reorder_extra: int | None = None,
        ge_p: float = 0.0,
        ge_r: float = 0.25,
        ge_bad_loss: float = 1.0,
    ) -> None:
        for name, p in (
            ("loss", loss),
            ("dup", dup),
            ("reorder", reorder),
            ("ge_p", ge_p),
            ("ge_r", ge_r),
            ("ge_bad_loss", ge_bad_loss),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p!r}")
        if delay < 0 or jitter < 0:
            raise ValueError("delay and jitter must be >= 0")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 bytes/ms")
        self.loss = loss
        self.ge_p = ge_p
        self.ge_r = ge_r
        self.ge_bad_loss = ge_bad_loss
        self.ge_bad = False
        self.dup = dup
        self.reorder = reorder
        self.delay = delay
        self.jitter = jitter
        self.rate = rate
        self.limit = limit
        self.reorder_extra = reorder_extra if reorder_extra is not None else max(10, delay)
        self.now = 0
        self._rng = random.Random(seed)
        self._heap: list[tuple[int, int, bytes]] = []
        self._seq = 0
        self._busy = 0.0
        self.sent = 0
        self.lost = 0
        self.duplicated = 0
        self.reordered = 0
        self.delivered = 0

    def _schedule(self, data: bytes, base: float) -> None:
        rng = self._rng
        t = base + self.delay
        if self.jitter:
            t += rng.randint(0, self.jitter)
        if self.reorder and rng.random() < self.reorder:
            t += rng.randint(1, self.reorder_extra)
            self.reordered += 1
        self._seq += 1
        heapq.heappush(self._heap, (int(t), self._seq, data))

    def send(self, data: bytes, now: int | None = None) -> None:
        """Offer one datagram to the link at ``now`` (default: ``self.now``)."""
        if now is None:
            now = self.now
        self.sent += 1
        rng = self._rng
        loss = self.loss
        if self.ge_p:
            if self.ge_bad:
                loss = self.ge_bad_loss
                if rng.random() < self.ge_r:
                    self.ge_bad = False
            elif rng.random() < self.ge_p:
                self.ge_bad = True
        if loss and rng.random() < loss:
            self.lost += 1
            return
        base: float = now
        if self.rate is not None:
            start = self._busy if self._busy > now else float(now)
            if self.limit is not None and start - now > self.limit:
                self.lost += 1
                return
            self._busy = start + len(data) / self.rate
            base = self._busy
        self._schedule(data, base)
        if self.dup and rng.random() < self.dup:
            self.duplicated += 1
            self._schedule(data, base)

    __call__ = send  # so a link can be an engine's ``output`` callback directly

    def deliver(self, now: int) -> list[bytes]:
        """Pop every datagram that has arrived by ``now``, in arrival order."""
        heap = self._heap
        out: list[bytes] = []
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        self.delivered += len(out)
        return out

    def next_arrival(self) -> int | None:
        """Arrival time of the next datagram in flight, or None."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return len(self._heap)


class Endpoint(Protocol):
    """What :func:`drive` needs from each side."""

    def input(self, data: bytes, now: int) -> object: ...

    def update(self, now: int) -> None: ...

    def check(self, now: int) -> int: ...


def drive(
    a: Endpoint,
    b: Endpoint,
    ab: SimLink,
    ba: SimLink,
    step: Callable[[int], bool],
    *,
    start: int = 0,
    max_ms: int = 10_000_000,
    after_input: Callable[[Endpoint, int], None] | None = None,
) -> int:
    """Run ``a`` and ``b`` until ``step(now)`` returns True; return the virtual time then.

    At each event time: deliver arrived datagrams (``ab`` into ``b``, ``ba`` into ``a``), call
    ``after_input(endpoint, now)`` for an endpoint that got data (e.g. to flush acks at once),
    ``update`` both, then ``step(now)`` (the application: send, recv, check progress). The clock
    then jumps to the earliest of both ``check()`` times and the next arrival. The links' ``now``
    is kept in step, so engines may use ``link.send`` as their output. Raises ``TimeoutError``
    after ``max_ms`` of virtual time.
    """
    now = start
    deadline = start + max_ms
    routes = ((ab, b), (ba, a))
    while True:
        ab.now = ba.now = now
        for link, dst in routes:
            got = link.deliver(now)
            for d in got:
                dst.input(d, now)
            if got and after_input is not None:
                after_input(dst, now)
        a.update(now)
        b.update(now)
        if step(now):
            return now
        nxt = min(a.check(now), b.check(now))
        for link, _ in routes:
            t = link.next_arrival()
            if t is not None and t < nxt:
                nxt = t
        now = nxt if nxt > now else now + 1
        if now > deadline:
            raise TimeoutError(f"simulation did not finish within {max_ms} virtual ms")


class CallEngine(Endpoint, Protocol):
    """What :func:`call_latencies` needs of each side (:class:`kcp.engine.KCP` has it)."""

    def send(self, data: bytes) -> int: ...

    def recv(self) -> bytes | None: ...

    def flush(self, now: int | None = None) -> None: ...


def call_latencies(
    a: CallEngine, b: CallEngine, ab: SimLink, ba: SimLink, n: int, payload: bytes = b"q" * 64
) -> list[int]:
    """``n`` sequential calls from ``a`` to ``b`` (the engines' ``output`` already wired to the
    links): ``a`` sends ``payload``, ``b`` sends back what it read, and the call ends when ``a``
    has read the answer; returns the latencies in virtual ms, in call order. Acks are flushed at
    once after each input, as a session with ``ack_nodelay`` does (a unary call, issue 15).
    Virtual time goes on from the links' clock, so a run can be continued with another call
    (for example after changing the links' loss)."""
    lat: list[int] = []
    sent = [-1]

    def after_input(ep: Endpoint, now: int) -> None:
        if ep is b:
            while (m := b.recv()) is not None:
                b.send(m)
        cast("CallEngine", ep).flush()

    def step(now: int) -> bool:
        if sent[0] >= 0:
            if a.recv() is None:
                return False
            lat.append(now - sent[0])
            if len(lat) == n:
                return True
        sent[0] = now
        a.send(payload)
        a.flush()
        return False

    start = max(ab.now, ba.now)
    drive(a, b, ab, ba, step, start=start, after_input=after_input, max_ms=n * 60_000)
    return lat
