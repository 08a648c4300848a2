"""Admission of new compat-mode peers: what a datagram from an unknown address may cost.

Compat mode (kcp-go's format) has no handshake: kcp-go creates a session for the first datagram
that decrypts and parses, and replaces a live session when its address sends another conv with
``sn == 0``. With a key that every player holds, and with source addresses that anyone can spoof,
that lets one captured packet, replayed from many addresses, fill the session table, and one
spoofed packet end another player's session. This module is the listener's sans-I/O admission
core (it takes ``now`` in milliseconds and never reads a clock or touches a socket):

* **Pending peers and their challenge.** The first datagram from an unknown address creates a
  small pending entry (its conv, that datagram, its time), not a session, and the listener
  answers it with a *challenge*: a PUSH segment without data, ``sn`` one below the peer's
  receive window (``0xFFFFFFFF`` for a fresh peer) and a random 32-bit ``ts``. Every ikcp-based
  engine (kcp-go, C ikcp, ours) acknowledges a segment below its window, echoing ``sn`` and
  ``ts``, and delivers nothing to its application, so a real client answers within one round
  trip whatever it is doing. The entry becomes a session only on that answer: a peer must
  receive what is sent to its address, which a spoofed source (or a replayed packet) cannot.
  Whatever the peer sent before its answer is held (:attr:`AdmissionConfig.pending_datagrams`)
  and fed to the session, so its first data is not lost. Entries are bounded
  (:attr:`AdmissionConfig.max_pending`, :attr:`AdmissionConfig.max_pending_bytes`; the oldest is
  evicted) and expire (:attr:`AdmissionConfig.pending_timeout`).
* **Replays across addresses.** A datagram that is byte-identical to the first or the proving
  datagram of a pending peer or a live session at *another* address is a replay (a real
  client's packets carry a fresh nonce and its own conv) and is dropped without state, so one
  captured packet sprayed from many addresses costs one pending entry, not one per address.
* **A rate limit per source prefix** (IPv4 /24, IPv6 /64 by default) on promotions to sessions,
  a token bucket per prefix (:attr:`AdmissionConfig.rate`, :attr:`AdmissionConfig.burst`). A
  peer that is over the limit stays pending; its next datagram (KCP retransmits until acked)
  tries again. Loopback is exempt by default (it cannot be spoofed from the network).
* **Restarts** (kcp-go's rule: another conv with ``sn == 0`` from a known address) create a
  pending *restart candidate* beside the live session, and the live session asks its peer
  whether it is still there (a KCP window probe, WASK, :data:`RESTART_POKES` times over
  :attr:`AdmissionConfig.restart_quiet`). The candidate replaces the session only once it
  answered its challenge as above, ``restart_quiet`` has passed, and the old session accepted
  nothing of its own conv since the candidate came (or is closing). An off-path attacker cannot
  answer the challenge (it goes to the victim, whose engine ignores another conv); an on-path one
  can, but a live peer answers the probes, so packets that someone else sends from its address
  never end its session. A peer that really restarted is gone and does not answer, so its new
  conversation takes over after ``restart_quiet``.

Every table is bounded; every refusal is counted by the listener (``kcp.stats.Counters``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from kcp.errors import KCPUsageError
from kcp.ratelimit import LOOPBACK, PrefixLimiter, SourceKeys, parse_networks

__all__ = ["ALIVE", "REPLACE", "RESTART_POKES", "WAIT", "Admission", "AdmissionConfig", "Pending"]

Address = Any
RESTART_POKES = 4
"""Liveness probes a restart candidate makes the old session send, over ``restart_quiet``."""
REPLACE, WAIT, ALIVE = 0, 1, 2
"""Answers of :meth:`Admission.restart_verdict`."""


@dataclass(frozen=True)
class AdmissionConfig:
    """Bounds on what unproven compat-mode peers may cost (see the module docstring).

    ``max_pending`` unproven peers are held at most, each for ``pending_timeout`` seconds, with
    its first datagram and up to ``pending_datagrams - 1`` out-of-band datagrams that came before
    the proof; the datagrams of all pending peers together stay under ``max_pending_bytes`` (the
    oldest peers are evicted first).
    ``rate`` new sessions per second (``burst`` at once) are admitted per source prefix of
    ``prefix_v4``/``prefix_v6`` bits; ``max_prefixes`` buckets are kept (the least recently used is
    dropped beyond that); addresses in ``exempt`` (CIDR strings; default: loopback) skip the rate
    limit. ``rate=0`` turns the rate limit off. ``restart_quiet`` (seconds) is how long the live
    session's peer has to answer liveness probes before a proven new conversation from its
    address replaces it (kcp-go replaces at once); a restart candidate is held for
    ``pending_timeout + restart_quiet``.
    """

    max_pending: int = 4096
    max_pending_bytes: int = 4 << 20
    pending_datagrams: int = 16
    pending_timeout: float = 5.0
    rate: float = 20.0
    burst: int = 200
    prefix_v4: int = 24
    prefix_v6: int = 64
    max_prefixes: int = 16384
    exempt: tuple[str, ...] = LOOPBACK
    restart_quiet: float = 2.0

    def __post_init__(self) -> None:
        if self.max_pending < 1 or self.max_prefixes < 1 or self.pending_datagrams < 1:
            raise KCPUsageError("max_pending, pending_datagrams and max_prefixes must be >= 1")
        if self.max_pending_bytes < 2048:
            raise KCPUsageError("max_pending_bytes must be >= 2048 (one datagram)")
        if self.pending_timeout <= 0 or self.restart_quiet < 0:
            raise KCPUsageError("pending_timeout must be > 0 and restart_quiet >= 0")
        if self.rate < 0 or (self.rate > 0 and self.burst < 1):
            raise KCPUsageError("rate must be >= 0 and burst >= 1")
        if not 0 <= self.prefix_v4 <= 32 or not 0 <= self.prefix_v6 <= 128:
            raise KCPUsageError("prefix_v4 must be in 0..32 and prefix_v6 in 0..128")
        try:
            parse_networks(self.exempt)
        except ValueError as exc:
            raise KCPUsageError(f"bad exempt network: {exc}") from None


class Pending:
    """One unproven peer: its conv, its first datagram (and OOB datagrams held until the proof),
    when it came, and whether a live session holds the address (a restart candidate)."""

    __slots__ = (
        "born",
        "challenge",
        "conv",
        "digest",
        "extra",
        "first",
        "next_challenge",
        "next_poke",
        "pokes",
        "restart",
        "size",
    )

    def __init__(
        self, conv: int, first: bytes, digest: int, born: int, restart: bool, challenge: int = 0
    ) -> None:
        self.conv = conv
        self.challenge = challenge  # the ts the peer must echo in its ack (the listener's challenge)
        self.next_challenge = born  # when the challenge may be sent (again)
        self.first = first
        self.digest = digest
        self.born = born
        self.restart = restart
        self.extra: list[bytes] | None = None
        self.size = len(first)
        self.pokes = 0  # restart candidates: liveness probes sent to the live session's peer
        self.next_poke = born

    def datagrams(self) -> list[bytes]:
        """What the peer sent before its proof, in order."""
        return [self.first] if self.extra is None else [self.first, *self.extra]


class Admission:
    """The pending table, the replay digests and the per-prefix token buckets (sans-I/O)."""

    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self.pending: OrderedDict[Address, Pending] = OrderedDict()
        self.restarts: dict[Address, Pending] = {}  # the pending entries that are restart candidates
        self.bytes = 0  # datagram bytes held by pending peers
        # digest of a datagram -> the address that used it as a first or proving datagram (a
        # pending peer or a live session); copies from any other address are replays
        self._seen: dict[int, Address] = {}
        self._owned: dict[Address, tuple[int, ...]] = {}  # a live session's digests, to forget them
        keys = SourceKeys(
            prefix_v4=config.prefix_v4,
            prefix_v6=config.prefix_v6,
            exempt=config.exempt,
            max_cached=config.max_prefixes,
        )
        self.limiter = PrefixLimiter(config.rate, config.burst, keys, max_prefixes=config.max_prefixes)
        """New sessions per source prefix (:mod:`kcp.ratelimit`)."""
        self._timeout_ms = int(config.pending_timeout * 1000)
        self._quiet_ms = int(config.restart_quiet * 1000)

    def __len__(self) -> int:
        return len(self.pending)

    # -- replays ---------------------------------------------------------------------------------
    def is_replay(self, digest: int, addr: Address) -> bool:
        """True if another address already used a datagram with this digest."""
        owner = self._seen.get(digest)
        return owner is not None and owner != addr

    # -- the pending table -----------------------------------------------------------------------
    def add(
        self,
        addr: Address,
        conv: int,
        first: bytes,
        digest: int,
        now: int,
        restart: bool,
        challenge: int = 0,
    ) -> list[Address]:
        """Hold a new unproven peer; returns the addresses of entries evicted to make room."""
        evicted: list[Address] = []
        pending = self.pending
        cfg = self.config
        while pending and (
            len(pending) >= cfg.max_pending or self.bytes + len(first) > cfg.max_pending_bytes
        ):
            old_addr, old = pending.popitem(last=False)
            self._removed(old_addr, old)
            evicted.append(old_addr)
        p = pending[addr] = Pending(conv, first, digest, now, restart, challenge)
        if restart:
            self.restarts[addr] = p
        self.bytes += len(first)
        self._seen[digest] = addr
        return evicted

    def hold(self, p: Pending, datagram: bytes) -> bool:
        """Keep one more datagram of a pending peer for its session; False when it does not fit."""
        n = len(datagram)
        extra = p.extra
        if (0 if extra is None else len(extra)) + 1 >= self.config.pending_datagrams:
            return False
        if self.bytes + n > self.config.max_pending_bytes:
            return False
        if extra is None:
            p.extra = [datagram]
        else:
            extra.append(datagram)
        p.size += n
        self.bytes += n
        return True

    def take(self, addr: Address, proof_digest: int) -> Pending:
        """Remove a proven peer from the table; its digests stay owned by the new session."""
        p = self.pending.pop(addr)
        self.bytes -= p.size
        if p.restart:
            del self.restarts[addr]
        self._seen[proof_digest] = addr
        self._owned[addr] = (p.digest, proof_digest)
        return p

    def drop(self, addr: Address) -> Pending | None:
        """Forget a pending peer (its digest too)."""
        p = self.pending.pop(addr, None)
        if p is not None:
            self._removed(addr, p)
        return p

    def _removed(self, addr: Address, p: Pending) -> None:
        self.bytes -= p.size
        if p.restart:
            del self.restarts[addr]
        self._unsee(p.digest, addr)

    def session_closed(self, addr: Address) -> None:
        """A session admitted from ``addr`` ended: its datagrams are no longer replays."""
        for d in self._owned.pop(addr, ()):
            self._unsee(d, addr)

    def _unsee(self, digest: int, addr: Address) -> None:
        if self._seen.get(digest) == addr:
            del self._seen[digest]

    def _deadline(self, p: Pending) -> int:
        """When ``p`` expires: ``pending_timeout`` after it came (a restart candidate gets
        ``restart_quiet`` more, the time its old peer has to answer)."""
        return p.born + self._timeout_ms + (self._quiet_ms if p.restart else 0)

    def expire(self, now: int) -> list[tuple[Address, Pending]]:
        """Remove and return the entries whose time is up."""
        out: list[tuple[Address, Pending]] = []
        pending = self.pending
        limit = now - self._timeout_ms
        for _ in range(len(pending)):  # oldest first; bounded: a restart candidate may move back
            addr, p = next(iter(pending.items()))
            if p.born > limit:
                break
            if p.restart and self._deadline(p) > now:
                pending.move_to_end(addr)  # handled below when its own time is up
                continue
            del pending[addr]
            self._removed(addr, p)
            out.append((addr, p))
        for addr, p in list(self.restarts.items()):
            if self._deadline(p) <= now:
                del pending[addr]
                self._removed(addr, p)
                out.append((addr, p))
        self.limiter.prune(now)
        return out

    def next_due(self) -> int | None:
        """When :meth:`expire` or :meth:`due_pokes` next has work (ms), None when never."""
        if not self.pending:
            return None
        due = self._deadline(next(iter(self.pending.values())))
        for p in self.restarts.values():
            d = self._deadline(p)
            if p.pokes < RESTART_POKES and p.next_poke < d:
                d = p.next_poke
            if d < due:
                due = d
        return due

    def due_pokes(self, now: int) -> list[Address]:
        """Addresses whose live session should probe its peer now: each restart candidate makes
        the listener ask the old peer :data:`RESTART_POKES` times, spread over ``restart_quiet``
        (a live peer answers, which keeps its session)."""
        out: list[Address] = []
        step = max(1, self._quiet_ms // RESTART_POKES)
        for addr, p in self.restarts.items():
            if p.pokes < RESTART_POKES and now >= p.next_poke:
                p.pokes += 1
                p.next_poke = now + step
                out.append(addr)
        return out

    def restart_verdict(self, p: Pending, last_valid: int, closing: bool, now: int) -> int:
        """May proven restart candidate ``p`` replace the live session at its address?

        ``last_valid`` is when that session last accepted a packet of its own conv. Returns
        :data:`REPLACE` (the session is closing, or it accepted nothing since the candidate came
        and ``restart_quiet`` has passed: its peer did not answer the liveness probes),
        :data:`WAIT`, or :data:`ALIVE` (the old peer spoke after the candidate came: the candidate
        is not a restart of it).
        """
        if closing:
            return REPLACE
        if last_valid >= p.born:
            return ALIVE
        return REPLACE if now - p.born >= self._quiet_ms else WAIT

    # -- the rate limit per source prefix --------------------------------------------------------
    def prefix(self, addr: Address) -> Any:
        """The rate-limit key of ``addr`` (its network prefix), or None when exempt or unparsable."""
        return self.limiter.keys.key(addr)

    def allow(self, addr: Address, now: int) -> bool:
        """Take one token from ``addr``'s prefix bucket; False when it is empty."""
        return self.limiter.allow(addr, now)

    # -- introspection ---------------------------------------------------------------------------
    def sizes(self) -> dict[str, int]:
        """Table sizes: pending peers, remembered digests, owned digests, rate-limit buckets."""
        return {
            "pending": len(self.pending),
            "pending_bytes": self.bytes,
            "restart_candidates": len(self.restarts),
            "seen_digests": len(self._seen),
            "owned": len(self._owned),
            "prefix_buckets": len(self.limiter),
        }

    def clear(self) -> None:
        """Forget everything (the listener closed)."""
        self.pending.clear()
        self.restarts.clear()
        self.bytes = 0
        self._seen.clear()
        self._owned.clear()
        self.limiter.clear()
