"""kcp-go compatible forward error correction: shard headers, encoder and decoder.

Wire format (all little-endian; see ``docs/wire-format/fec.md``)::

    data shard   : seqid u32 | flag u16 = 0xf1 | size u16 = len(kcp packet) + 2 | kcp packet
    parity shard : seqid u32 | flag u16 = 0xf2 | parity bytes

A group is ``data_shards`` data shards followed by ``parity_shards`` parity shards with consecutive
seqids; group ``g`` owns seqids ``g * n .. g * n + n - 1`` (``n = data_shards + parity_shards``).
Reed-Solomon runs over everything after the 6-byte header (size field included), each shard
zero-padded to the longest data shard of its group; the parity shards have exactly that length.

The behaviour follows kcp-go v5.6.6x/v5.6.7x ``fec.go`` (see ``docs/fec.md`` for the facts and the
few deliberate differences). The Reed-Solomon codec is :mod:`kcp.rs`.

FEC "off" is ``(0, 0)`` (kcp-go: any side <= 0): the pipeline then constructs neither class.
"""

from __future__ import annotations

import struct
from collections import deque
from operator import itemgetter
from typing import Final

from kcp.errors import KCPTypeError, KCPUsageError
from kcp.rs import MAX_TOTAL_SHARDS, ReedSolomon, get_codec
from kcp.stats import Counters

__all__ = [
    "FEC_HEADER_SIZE",
    "FEC_HEADER_SIZE_PLUS2",
    "MAX_FEC_ENCODE_LATENCY",
    "MAX_SHARD_SETS",
    "OOB_SEQID",
    "TYPE_DATA",
    "TYPE_OOB",
    "TYPE_PARITY",
    "FECDecoder",
    "FECEncoder",
    "fec_enabled",
    "fec_flag",
    "fec_seqid",
    "is_fec",
    "paws",
]

FEC_HEADER_SIZE: Final = 6
"""seqid (4 bytes) + flag (2 bytes)."""
FEC_HEADER_SIZE_PLUS2: Final = 8
"""FEC header plus the 2-byte size field of data shards: the shortest packet kcp-go hands to FEC."""
TYPE_DATA: Final = 0xF1
TYPE_PARITY: Final = 0xF2
TYPE_OOB: Final = 0xF3
"""kcp-go's out-of-band packet flag (handled by the pipeline, never by FEC)."""
OOB_SEQID: Final = 0xFFFFFFFF
"""The seqid kcp-go writes into OOB packets; it is never a valid FEC seqid (it is >= paws)."""
MAX_FEC_ENCODE_LATENCY: Final = 500
"""kcp-go sess.go's ``maxFECEncodeLatency`` (ms), passed as the encoder's ``rto`` argument: parity is
emitted only if the group's last two data packets were less than this far apart."""
MAX_SHARD_SETS: Final = 3
"""The decoder keeps shard sets at most this many groups older than the newest group seen."""

_AUTOTUNE_SAMPLES: Final = 258
_second = itemgetter(1)


_HDR: Final = struct.Struct("<IH")
_HDR_SIZE: Final = struct.Struct("<IHH")
_pack_hdr = _HDR.pack
_pack_hdr_size = _HDR_SIZE.pack
_unpack_hdr = _HDR.unpack_from


def _itimediff(later: int, earlier: int) -> int:
    """``int32(later - earlier)`` on uint32 values, as kcp's ``_itimediff``."""
    return ((later - earlier + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def paws(shard_count: int) -> int:
    """Seqid modulus: the largest multiple of ``shard_count`` not above 0xFFFFFFFF.

    Seqids run ``0 .. paws - 1`` and then restart at 0, so a group never straddles the wrap.
    """
    return 0xFFFFFFFF // shard_count * shard_count


def fec_enabled(data_shards: int, parity_shards: int) -> bool:
    """Validate FEC parameters and say whether FEC is on.

    ``(0, 0)`` (or any ``parity_shards == 0`` with ``data_shards >= 0``) is off, as in kcp-go.
    Raises :class:`KCPUsageError` for negative counts, parity without data, or more than 256 shards.
    """
    if data_shards < 0 or parity_shards < 0:
        raise KCPUsageError(f"FEC shard counts must not be negative, got ({data_shards}, {parity_shards})")
    if parity_shards == 0:
        return False
    if data_shards == 0:
        raise KCPUsageError(f"FEC with {parity_shards} parity shards needs at least 1 data shard")
    if data_shards + parity_shards > MAX_TOTAL_SHARDS:
        raise KCPUsageError(
            f"FEC supports at most {MAX_TOTAL_SHARDS} shards per group (GF(2^8)), "
            f"got {data_shards} + {parity_shards}"
        )
    return True


def _check_params(data_shards: int, parity_shards: int) -> None:
    if not isinstance(data_shards, int) or not isinstance(parity_shards, int):
        raise KCPTypeError("FEC shard counts must be integers")
    if not fec_enabled(data_shards, parity_shards):
        raise KCPUsageError(
            f"FEC needs data_shards >= 1 and parity_shards >= 1, got ({data_shards}, {parity_shards}); "
            "(0, 0) means FEC off: do not construct an encoder or decoder"
        )


def fec_flag(packet: bytes) -> int:
    """The u16 flag at offset 4 (0xf1 data, 0xf2 parity, 0xf3 OOB), or -1 if the packet is shorter than 6."""
    if len(packet) < FEC_HEADER_SIZE:
        return -1
    return packet[4] | (packet[5] << 8)


def fec_seqid(packet: bytes) -> int:
    """The u32 seqid at offset 0 (the caller checks the length)."""
    return int.from_bytes(packet[:4], "little")


def is_fec(packet: bytes) -> bool:
    """True if ``packet`` is a data or parity shard kcp-go would hand to its FEC decoder.

    That is: flag 0xf1 or 0xf2 and at least :data:`FEC_HEADER_SIZE_PLUS2` bytes. (A bare KCP segment
    has its command, 81..84, at offset 4 and its fragment count at 5, so it never reads as 0x00f1/0x00f2.)
    """
    return (
        len(packet) >= FEC_HEADER_SIZE_PLUS2 and packet[5] == 0 and (packet[4] == 0xF1 or packet[4] == 0xF2)
    )


class FECEncoder:
    """Turns outgoing KCP packets into kcp-go FEC data shards, plus parity shards at each group's end.

    ``offset`` is the room kcp-go leaves in front of the FEC header for the crypt header (nonce +
    crc32, 20 bytes, when a cipher is on). With ``offset > 0`` the caller passes ``offset`` bytes of
    room followed by the KCP packet, and every returned shard starts with ``offset`` bytes of room
    (copied from the input for data shards, zeros for parity shards) that the caller overwrites.

    ``rto`` (ms, kcp-go's ``maxFECEncodeLatency`` = 500) is the continuity limit: when a group
    completes, its parity is emitted only if ``now - (now of the previous encode call) < rto``; otherwise
    the parity is skipped but its seqids are still consumed, so groups stay aligned. ``now`` must be a
    non-wrapping millisecond clock (kcp-go reads ``time.Now().UnixMilli()`` here). Before the first call
    the previous time is "infinitely long ago", as kcp-go's zero timestamp against the wall clock: with
    ``data_shards == 1`` the very first packet therefore gets no parity.
    """

    __slots__ = (
        "_codec",
        "_last_ts",
        "_max_len",
        "_next",
        "_paws",
        "_shards",
        "data_shards",
        "offset",
        "parity_shards",
        "rto",
    )

    def __init__(
        self, data_shards: int, parity_shards: int, offset: int = 0, *, rto: int = MAX_FEC_ENCODE_LATENCY
    ) -> None:
        _check_params(data_shards, parity_shards)
        if offset < 0:
            raise KCPUsageError(f"offset must not be negative, got {offset}")
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self.offset = offset
        self.rto = rto
        self._codec: ReedSolomon = get_codec(data_shards, parity_shards)
        self._paws = paws(data_shards + parity_shards)
        self._next = 0
        self._shards: list[bytes] = []  # data shards of the current group, as sent
        self._max_len = 0  # longest KCP packet of the current group
        self._last_ts: int | None = None

    @property
    def next_seqid(self) -> int:
        """The seqid the next shard will carry."""
        return self._next

    @next_seqid.setter
    def next_seqid(self, value: int) -> None:
        """Start at another seqid (tests and resumption); must be a group start below paws."""
        n = self.data_shards + self.parity_shards
        if not 0 <= value < self._paws or value % n:
            raise KCPUsageError(f"next_seqid must be a multiple of {n} below {self._paws}, got {value}")
        if self._shards:
            raise KCPUsageError("cannot move next_seqid in the middle of a group")
        self._next = value

    def encode(
        self, packet: bytes | bytearray | memoryview, now: int, with_parity: bool = True
    ) -> list[bytes]:
        """Seal one KCP packet as a data shard; return it, followed by the parity shards if it ends a group.

        ``with_parity=False`` skips a group's parity as the continuity limit does (its seqids are still
        consumed): :mod:`kcp.pipeline` sends none before the peer has shown it runs FEC.

        The encoder keeps the returned data shards until the group's parity is made; they are new
        ``bytes``, so the caller may reuse ``packet``'s buffer.
        """
        if type(packet) is not bytes:
            packet = bytes(packet)
        off = self.offset
        n = len(packet) - off
        if n < 0:
            raise KCPUsageError(f"packet shorter than the reserved offset ({len(packet)} < {off})")
        if n > 0xFFFF - 2:
            raise KCPUsageError(f"packet too long for the FEC size field ({n} bytes)")
        seq = self._next
        if off:
            shard = packet[:off] + _pack_hdr_size(seq, TYPE_DATA, n + 2) + packet[off:]
        else:
            shard = _pack_hdr_size(seq, TYPE_DATA, n + 2) + packet
        seq += 1
        if seq >= self._paws:
            seq = 0
        self._next = seq
        shards = self._shards
        shards.append(shard)
        if n > self._max_len:
            self._max_len = n
        last = self._last_ts
        self._last_ts = now
        if len(shards) < self.data_shards:
            return [shard]
        size = self._max_len + 2  # RS runs from the size field on: bodies are size field + packet
        self._shards = []
        self._max_len = 0
        if not with_parity or last is None or now - last >= self.rto:
            self._next = (seq + self.parity_shards) % self._paws
            return [shard]
        out = [shard]
        room = bytes(off)
        # whole shards go in; the room and the 6-byte header are shifted out by the codec
        for parity in self._codec.encode(shards, size, off + FEC_HEADER_SIZE):
            head = _pack_hdr(seq, TYPE_PARITY)
            out.append(room + head + parity if off else head + parity)
            seq += 1
            if seq >= self._paws:
                seq = 0
        self._next = seq
        return out


class _AutoTune:
    """kcp-go's FEC parameter detector: the last 258 (is_data, seqid) samples, searched for a period."""

    __slots__ = ("samples",)

    def __init__(self) -> None:
        self.samples: deque[tuple[bool, int]] = deque(maxlen=_AUTOTUNE_SAMPLES)

    def periods(self) -> tuple[int, int]:
        """(data run length, parity run length) found in the samples; -1 where none is found."""
        samples = self.samples
        if len(samples) < 3:
            return -1, -1
        seqs = [s[1] for s in samples]
        if max(seqs) - min(seqs) < 0x80000000:
            ordered = sorted(samples, key=_second)
        else:  # the samples straddle the 2^32 wrap: order them relative to the latest one
            base = samples[-1][1] - 0x80000000
            ordered = sorted(samples, key=lambda s: (s[1] - base) & 0xFFFFFFFF)
        return self._find_period(ordered, True), self._find_period(ordered, False)

    @staticmethod
    def _find_period(ordered: list[tuple[bool, int]], bit: bool) -> int:
        """Length of the first complete run of ``bit`` in seqid order, or -1.

        Every step up to the run's end must be seqid + 1; any gap or duplicate before it gives -1.
        """
        left = -1
        prev_bit, prev_seq = ordered[0]
        idx = 1
        count = len(ordered)
        while idx < count:
            cur_bit, cur_seq = ordered[idx]
            if (prev_seq + 1) & 0xFFFFFFFF != cur_seq:
                return -1
            if prev_bit != bit and cur_bit == bit:
                left = idx
                break
            prev_bit, prev_seq = cur_bit, cur_seq
            idx += 1
        if left < 0:
            return -1
        prev_bit, prev_seq = ordered[left]
        idx = left + 1
        while idx < count:
            cur_bit, cur_seq = ordered[idx]
            if (prev_seq + 1) & 0xFFFFFFFF != cur_seq:
                return -1
            if prev_bit == bit and cur_bit != bit:
                return idx - left
            prev_bit, prev_seq = cur_bit, cur_seq
            idx += 1
        return -1


class FECDecoder:
    """Collects kcp-go FEC shards by group and rebuilds lost data shards.

    :meth:`decode` takes every received data or parity shard (header included) and returns only the
    KCP packets *recovered* by Reed-Solomon; the pipeline hands data shards to KCP itself (their
    payload is ``shard[8:]``, as kcp-go does), whether or not they also go through here.

    Behaviour (kcp-go's ``fecDecoder``):

    * shards are grouped by ``seqid // (data_shards + parity_shards)``; duplicates are ignored;
    * as soon as a group holds ``data_shards`` shards it is decoded: if data shards are missing they
      are rebuilt (shards zero-padded to the longest one present), and each rebuilt shard's size field
      is checked (``2 <= size <= len``; a bad one counts ``fec_errs``) before ``shard[2:size]`` is returned;
    * groups more than :data:`MAX_SHARD_SETS` groups older than the newest group seen are dropped
      (those never decoded count ``fec_short_shards``); there is no timer, so ``now`` is unused;
    * seqids at or above :func:`paws` are dropped;
    * a shard whose flag does not match its position for the current parameters triggers kcp-go's
      auto-tuning: shards are dropped until the period of data/parity runs in the last 258 seqids
      gives new parameters (the kcp-go receiver with FEC off starts as (1, 1) and tunes this way).

    Deliberate differences (nothing on the wire changes):

    * a group that has been decoded is remembered as done until it leaves the window, so late shards
      of it are ignored instead of being collected again (kcp-go can rebuild and re-deliver data KCP
      already has);
    * the window starts at the first group seen (and again after auto-tuning), where kcp-go starts at
      group 0 and keeps its old newest group across a re-tune. For a stream that starts at seqid 0, as
      every kcp-go session does, the two are the same; ours also works when joining mid-stream.

    Counters (``kcp.stats.Counters``): ``fec_recovered``, ``fec_errs``, ``fec_parity_shards``,
    ``fec_short_shards``, ``short_packets``.
    """

    __slots__ = (
        "_autotune",
        "_codec",
        "_n",
        "_newest",
        "_paws",
        "_sets",
        "_should_tune",
        "autotune",
        "counters",
        "data_shards",
        "parity_shards",
    )

    def __init__(
        self,
        data_shards: int,
        parity_shards: int,
        counters: Counters | None = None,
        *,
        autotune: bool = True,
    ) -> None:
        _check_params(data_shards, parity_shards)
        self.counters: Counters = counters if counters is not None else Counters()
        self.autotune = autotune
        self._autotune = _AutoTune()
        self._should_tune = False
        self._configure(data_shards, parity_shards)

    def _configure(self, data_shards: int, parity_shards: int) -> None:
        self.data_shards = data_shards
        self.parity_shards = parity_shards
        self._n = data_shards + parity_shards
        self._codec: ReedSolomon = get_codec(data_shards, parity_shards)
        self._paws = paws(self._n)
        # group id -> {index in group: shard}; None once the group has been decoded
        self._sets: dict[int, dict[int, bytes] | None] = {}
        # newest group id seen; None until the first shard is accepted
        self._newest: int | None = None

    @property
    def pending_groups(self) -> int:
        """How many groups are held (collecting or remembered as done)."""
        return len(self._sets)

    def decode(self, shard: bytes | bytearray | memoryview, now: int = 0) -> list[bytes]:
        """Take one received FEC shard; return the KCP packets it let us recover (usually none).

        Never raises on malformed input: short packets, unknown flags and impossible seqids are dropped
        and counted. Shards are kept until their group is decoded; anything but ``bytes`` is copied
        first, so the caller may reuse its receive buffer.
        """
        if type(shard) is not bytes:
            shard = bytes(shard)
        counters = self.counters
        if len(shard) < FEC_HEADER_SIZE_PLUS2:
            counters.short_packets += 1
            return []
        seqid, flag = _unpack_hdr(shard)
        is_data = flag == TYPE_DATA
        if not is_data and flag != TYPE_PARITY:
            counters.fec_errs += 1
            return []
        if self.autotune:
            self._autotune.samples.append((is_data, seqid))
        if seqid >= self._paws:
            counters.fec_errs += 1
            return []
        n = self._n
        gid, idx = divmod(seqid, n)
        if (idx < self.data_shards) != is_data:
            if not self._should_tune:
                counters.fec_errs += 1
            self._should_tune = True
        if self._should_tune:
            self._tune()
            return []
        if not is_data:
            counters.fec_parity_shards += 1

        sets = self._sets
        recovered: list[bytes] = []
        if gid in sets:
            group = sets[gid]
            if group is None or idx in group:
                return recovered  # done group or duplicate
        else:
            group = sets[gid] = {}
        group[idx] = shard
        if len(group) >= self.data_shards:
            sets[gid] = None
            self._decode_group(group, recovered)

        # newest group and the window of kept groups
        newest = self._newest
        if newest is None:  # first group seen (kcp-go starts from group 0 instead)
            self._newest = gid
        elif gid != newest and _itimediff(gid * n, newest * n) > 0:
            self._newest = newest = gid
            self._discard(newest)
        elif _itimediff(newest * n, gid * n) > MAX_SHARD_SETS * n:
            self._discard(newest)
        return recovered

    def _decode_group(self, group: dict[int, bytes], out: list[bytes]) -> None:
        ds = self.data_shards
        n_data = 0
        for i in group:
            if i < ds:
                n_data += 1
        if n_data == ds:
            return
        counters = self.counters
        slots: list[bytes | None] = [None] * self._n
        longest = 0
        for i, pkt in group.items():
            slots[i] = pkt
            if len(pkt) > longest:
                longest = len(pkt)
        try:
            # whole packets go in; the codec shifts the 6-byte headers out
            rebuilt = self._codec.reconstruct_data(slots, longest - FEC_HEADER_SIZE, FEC_HEADER_SIZE)
        except ValueError:
            counters.fec_errs += 1
            return
        for i in sorted(rebuilt):
            r = rebuilt[i]
            sz = r[0] | (r[1] << 8)
            if 2 <= sz <= len(r):
                out.append(r[2:sz])
                counters.fec_recovered += 1
            else:
                counters.fec_errs += 1

    def _discard(self, newest: int) -> None:
        n = self._n
        limit = MAX_SHARD_SETS * n
        sets = self._sets
        top = newest * n
        old = [g for g in sets if _itimediff(top, g * n) > limit]
        for g in old:
            if sets.pop(g) is not None:
                self.counters.fec_short_shards += 1

    def _tune(self) -> None:
        if not self.autotune:
            # without auto-tuning a mismatch is a one-packet drop
            self._should_tune = False
            return
        ds, ps = self._autotune.periods()
        if ds > 0 and ps > 0 and ds + ps < 256:
            if ds != self.data_shards or ps != self.parity_shards:
                short = sum(1 for g in self._sets.values() if g is not None)
                self.counters.fec_short_shards += short
                self._configure(ds, ps)
            self._should_tune = False
