"""A seeded lossy UDP relay for loopback tests and benchmarks.

It sits between a client and a server. Each client address gets its own upstream socket towards
the target, so the server sees one remote address per client, as it would across a NAT. Both
directions apply, from separate seeded random streams, loss, duplication, a fixed delay with
jitter, and reordering (a reordered datagram is held back by an extra delay so later ones pass
it). With no delay configured, forwarded datagrams leave in the same loop tick.

Loss is random (Bernoulli) by default. ``ge_p``/``ge_r`` (``--ge-p``/``--ge-r``, percentages, as
linkemu's options of the same names) make it Gilbert-Elliott burst loss: per datagram, a direction
moves from its Good state to Bad with ``ge_p`` % and back with ``ge_r`` %; it loses ``ge_bad_loss``
% (default 100) in Bad and ``loss`` % in Good. ``--ge-p 1 --ge-r 25`` loses 1/26 (3.85 %) of the
datagrams, in bursts of 4 on average.

``rate`` (``--rate``, kbit/s, 0: none) makes each direction a bottleneck of that rate, after the
loss: a datagram (its size plus 28 bytes of IP and UDP headers) leaves when the ones before it
have, and a tail-drop queue holds at most ``queue`` ms (``--queue``, default 50) of it; what does
not fit is dropped and counted (``up_overflow``, ``down_overflow``). The delay comes after the
bottleneck, as on linkemu's links.

Command line::

    python -m kcp.relay --listen 127.0.0.1:9000 --target 127.0.0.1:9001 \\
        --loss 10 --delay 25 --jitter 5 --dup 1 --reorder 1 --seed 1
    python -m kcp.relay --listen 127.0.0.1:9000 --target 127.0.0.1:9001 --ge-p 1 --ge-r 25 --delay 40

In-process (an async context manager)::

    async with LossyRelay(("127.0.0.1", 0), server_addr, loss=10, seed=1) as relay:
        session = await kcp.dial(*relay.address)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import random
import socket
import sys
from types import TracebackType

from kcp.batch import Address, DatagramIO, open_udp_socket

__all__ = ["LossyRelay", "main"]

_UP = 0  # client -> target
_DOWN = 1  # target -> client


def _parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class _Direction:
    """Impairment of one direction: its own random stream and counters."""

    __slots__ = ("bad", "delivered", "dropped", "duplicated", "link_free", "overflow", "reordered", "rng")

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.bad = False  # Gilbert-Elliott: in the Bad state
        self.delivered = 0
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.overflow = 0  # dropped by the rate limit's full queue
        self.link_free = 0.0  # ms: when the bottleneck has sent what it queued so far


class LossyRelay:
    """A UDP relay that impairs traffic in both directions (percentages and milliseconds).

    ``loss_up``/``loss_down`` override ``loss`` for one direction (up is client to target).
    ``ge_p``/``ge_r`` > 0 make the loss Gilbert-Elliott bursts (module docstring), in both directions.
    ``max_clients`` bounds the number of client addresses (one upstream socket each); datagrams
    from further addresses are dropped and counted.
    """

    def __init__(
        self,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        target: tuple[str, int] = ("127.0.0.1", 0),
        *,
        loss: float = 0.0,
        loss_up: float | None = None,
        loss_down: float | None = None,
        delay: float = 0.0,
        jitter: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 5.0,
        ge_p: float = 0.0,
        ge_r: float = 25.0,
        ge_bad_loss: float = 100.0,
        rate: float = 0.0,
        queue: float = 50.0,
        seed: int = 1,
        max_clients: int = 4096,
    ) -> None:
        for name, value in (
            ("loss", loss),
            ("loss_up", loss_up),
            ("loss_down", loss_down),
            ("dup", dup),
            ("reorder", reorder),
            ("ge_p", ge_p),
            ("ge_r", ge_r),
            ("ge_bad_loss", ge_bad_loss),
        ):
            if value is not None and not 0.0 <= value <= 100.0:
                raise ValueError(f"{name} must be a percentage in 0..100")
        if delay < 0 or jitter < 0 or reorder_delay < 0:
            raise ValueError("delay, jitter and reorder_delay must be >= 0")
        if rate < 0 or queue < 0:
            raise ValueError("rate and queue must be >= 0")
        self.listen_addr = listen
        self.target = target
        self.loss = (
            (loss if loss_up is None else loss_up) / 100.0,
            (loss if loss_down is None else loss_down) / 100.0,
        )
        self.delay = delay
        self.jitter = min(jitter, delay) if delay else jitter
        self.dup = dup / 100.0
        self.reorder = reorder / 100.0
        self.reorder_delay = reorder_delay
        self.ge_p = ge_p / 100.0
        self.ge_r = ge_r / 100.0
        self.ge_bad_loss = ge_bad_loss / 100.0
        self.rate = rate  # kbit/s = bits per ms
        self.queue = queue
        self.max_clients = max_clients
        self._dirs = (_Direction(seed * 2 + 1), _Direction(seed * 2 + 2))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._front: socket.socket | None = None
        self._front_io: DatagramIO | None = None
        self._clients: dict[Address, tuple[socket.socket, DatagramIO]] = {}
        self._out: dict[DatagramIO, list[tuple[bytes, Address]]] = {}
        self._flush_scheduled = False
        self._pending: list[tuple[float, int, bytes, DatagramIO, Address]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._last_due = [0.0, 0.0]
        self.dropped_clients = 0
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The address clients send to."""
        if self._front is None:
            raise RuntimeError("relay not started")
        name = self._front.getsockname()
        return (name[0], name[1])

    async def start(self) -> LossyRelay:
        """Bind the front socket and start relaying."""
        self._loop = asyncio.get_running_loop()
        self._front = open_udp_socket(*self.listen_addr)
        self._front_io = DatagramIO(self._front)
        self._loop.add_reader(self._front.fileno(), self._on_front)
        return self

    async def close(self) -> None:
        """Stop relaying and close every socket."""
        if self.closed:
            return
        self.closed = True
        loop = self._loop
        if self._timer is not None:
            self._timer.cancel()
        if loop is not None and self._front is not None:
            loop.remove_reader(self._front.fileno())
            self._front.close()
        for sock, _ in self._clients.values():
            if loop is not None:
                loop.remove_reader(sock.fileno())
            sock.close()
        self._clients.clear()
        self._pending.clear()

    async def __aenter__(self) -> LossyRelay:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def stats(self) -> dict[str, int]:
        """Counters per direction (``up`` is client to target) and client table size."""
        out: dict[str, int] = {"clients": len(self._clients), "dropped_clients": self.dropped_clients}
        for name, d in zip(("up", "down"), self._dirs, strict=False):
            out[f"{name}_delivered"] = d.delivered
            out[f"{name}_dropped"] = d.dropped
            out[f"{name}_duplicated"] = d.duplicated
            out[f"{name}_reordered"] = d.reordered
            out[f"{name}_overflow"] = d.overflow
        return out

    # -- forwarding ------------------------------------------------------------------------------
    def _on_front(self) -> None:
        assert self._front_io is not None and self._loop is not None
        for data, addr in self._front_io.recv():
            client = self._clients.get(addr)
            if client is None:
                if len(self._clients) >= self.max_clients:
                    self.dropped_clients += 1
                    continue
                up = open_udp_socket(self.target[0] if ":" not in self.target[0] else "::", 0)
                try:
                    up.connect(self.target)
                except OSError:
                    up.close()
                    continue
                client = (up, DatagramIO(up))
                self._clients[addr] = client
                self._loop.add_reader(up.fileno(), self._on_upstream, addr)
            self._impair(_UP, data, client[1], self.target)

    def _on_upstream(self, addr: Address) -> None:
        client = self._clients.get(addr)
        if client is None or self._front_io is None:
            return
        for data, _ in client[1].recv():
            self._impair(_DOWN, data, self._front_io, addr)

    def _impair(self, direction: int, data: bytes, io: DatagramIO, addr: Address) -> None:
        d = self._dirs[direction]
        rng = d.rng
        p_loss = self.loss[direction]
        if self.ge_p > 0:  # Gilbert-Elliott: this datagram's state, then the next one's
            if d.bad:
                p_loss = self.ge_bad_loss
                d.bad = rng.random() >= self.ge_r
            else:
                d.bad = rng.random() < self.ge_p
        if rng.random() < p_loss:
            d.dropped += 1
            return
        bottleneck = -1.0  # when the rate limit lets this datagram out (ms; -1: no limit)
        if self.rate:
            assert self._loop is not None
            now = self._loop.time() * 1000.0
            start = d.link_free if d.link_free > now else now
            if start - now > self.queue:  # the queue is full: tail drop
                d.overflow += 1
                return
            bottleneck = d.link_free = start + (len(data) + 28) * 8 / self.rate
        copies = 1
        if self.dup and rng.random() < self.dup:
            copies = 2
            d.duplicated += 1
        for _ in range(copies):
            extra = 0.0
            if self.reorder and rng.random() < self.reorder:
                extra = self.reorder_delay + self.jitter
                d.reordered += 1
            if self.delay or self.jitter or extra or bottleneck >= 0:
                assert self._loop is not None
                now = bottleneck if bottleneck >= 0 else self._loop.time() * 1000.0
                due = now + self.delay + (rng.uniform(-self.jitter, self.jitter) if self.jitter else 0.0)
                if extra:
                    due += extra
                else:
                    # keep the in-order stream FIFO: jitter spreads datagrams, never swaps them
                    due = max(due, self._last_due[direction])
                    self._last_due[direction] = due
                self._seq += 1
                heapq.heappush(self._pending, (due, self._seq, data, io, addr))
                d.delivered += 1
                self._arm()
            else:
                d.delivered += 1
                self._queue(io, data, addr)

    def _queue(self, io: DatagramIO, data: bytes, addr: Address) -> None:
        out = self._out.get(io)
        if out is None:
            out = self._out[io] = []
        out.append((data, addr))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        outs, self._out = self._out, {}
        if self.closed:
            return
        for io, items in outs.items():
            io.send(items)  # a full socket buffer drops the rest: it is a lossy link

    def _arm(self) -> None:
        assert self._loop is not None
        if not self._pending:
            return
        due = self._pending[0][0] / 1000.0
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer_at = due  # uvloop's TimerHandle has no when()
        self._timer = self._loop.call_at(due, self._release)

    def _release(self) -> None:
        self._timer = None
        if self.closed:
            return
        assert self._loop is not None
        now = self._loop.time() * 1000.0 + 0.5
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, _, data, io, addr = heapq.heappop(pending)
            self._queue(io, data, addr)
        self._arm()


def main(argv: list[str] | None = None) -> int:
    """Run the relay from the command line until interrupted."""
    p = argparse.ArgumentParser(prog="python -m kcp.relay", description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=_parse_hostport, required=True, help="HOST:PORT clients send to")
    p.add_argument("--target", type=_parse_hostport, required=True, help="HOST:PORT of the server")
    p.add_argument("--loss", type=float, default=0.0, help="loss %% in each direction")
    p.add_argument("--loss-up", type=float, default=None, help="loss %% client->server (overrides --loss)")
    p.add_argument("--loss-down", type=float, default=None, help="loss %% server->client (overrides --loss)")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay, ms")
    p.add_argument("--jitter", type=float, default=0.0, help="+/- jitter, ms")
    p.add_argument("--dup", type=float, default=0.0, help="duplication %%")
    p.add_argument("--reorder", type=float, default=0.0, help="reordering %%")
    p.add_argument("--ge-p", type=float, default=0.0, help="burst loss: Good->Bad %% per datagram (0: off)")
    p.add_argument("--ge-r", type=float, default=25.0, help="burst loss: Bad->Good %% per datagram")
    p.add_argument("--ge-bad-loss", type=float, default=100.0, help="burst loss: loss %% in Bad")
    p.add_argument("--rate", type=float, default=0.0, help="bottleneck rate each way, kbit/s (0: none)")
    p.add_argument(
        "--queue", type=float, default=50.0, help="the bottleneck's tail-drop queue, ms of its rate"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-clients", type=int, default=4096)
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: run forever)"
    )
    args = p.parse_args(argv)

    async def run() -> None:
        relay = LossyRelay(
            args.listen,
            args.target,
            loss=args.loss,
            loss_up=args.loss_up,
            loss_down=args.loss_down,
            delay=args.delay,
            jitter=args.jitter,
            dup=args.dup,
            reorder=args.reorder,
            ge_p=args.ge_p,
            ge_r=args.ge_r,
            ge_bad_loss=args.ge_bad_loss,
            rate=args.rate,
            queue=args.queue,
            seed=args.seed,
            max_clients=args.max_clients,
        )
        async with relay:
            print(
                f"relay {relay.address[0]}:{relay.address[1]} -> {args.target[0]}:{args.target[1]}",
                flush=True,
            )
            try:
                if args.duration > 0:
                    await asyncio.sleep(args.duration)
                else:
                    await asyncio.Event().wait()
            finally:
                print(relay.stats, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
