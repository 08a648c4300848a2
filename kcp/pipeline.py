"""The packet layer: the one place that knows kcp-go's packet order.

Outgoing, a KCP packet (one engine ``output`` datagram) goes through:

1. the FEC encoder, when FEC is on (``data_shards > 0 and parity_shards > 0``): it becomes a data
   shard (6-byte FEC header + 2-byte size + the packet) and, at the end of a group, the parity
   shards follow;
2. for a block cipher (everything but ``null`` and ``aes-128-gcm``): a 16-byte random nonce and the
   crc32 (IEEE, little-endian) of what follows are put in front, and the cipher runs over the whole
   packet, nonce included;
3. for ``aes-128-gcm``: a 12-byte random nonce, then the AES-GCM ciphertext and tag of the body (no
   crc32, no additional data);
4. for ``null`` (``crypt is None``): nothing.

Incoming is the exact reverse: decrypt (or open), check the crc32, then look at the 16-bit flag at
offset 4. ``0xf1`` is an FEC data shard (its KCP packet goes straight to the engine and the shard
also feeds the decoder), ``0xf2`` a parity shard (decoder only), ``0xf3`` an out-of-band packet;
anything else is a plain KCP packet (a KCP ``cmd``/``frg`` pair never reads as 0xf1-0xf3). Every
malformed datagram is dropped and counted in :class:`kcp.stats.Counters`; :meth:`Pipeline.open`
never raises on input from the network.

With FEC on, parity goes out only once the peer is known to run FEC too, which an FEC shard from
it shows. Until the peer's first packet comes, each KCP packet goes out as a data shard alone (the
group's seqids are still consumed, as when the encoder skips a late group's parity). While the
peer has sent plain KCP packets and no FEC shard, every packet goes out plain
(``fec_plain_out`` counts them): a peer with FEC on sends nothing but shards once its session
runs, and a plain packet before that (a kcprpc listener's admission challenge) gives way to its
first shard. A kcp-go session without FEC decodes FEC shards anyway, with a (1, 1) decoder that
takes parity shards for data before it has tuned itself; a bulk stream's first group makes their
bytes valid-looking segments (docs/interop.md). Data shards alone are safe there (what it rebuilds
from one is that same segment), and plain packets are what it expects.

OOB packets (kcp-go's ``SendOOB``) bypass FEC: ``seqid 0xffffffff | 0x00f3 | size | conv | payload``,
then the crypt layer. kcp-go only sends and delivers them on sessions with FEC enabled; this
pipeline seals and opens them with or without FEC (the bytes are the same).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from kcp import fec
from kcp.crypt import AEADCrypt, BlockCrypt
from kcp.errors import KCPUsageError
from kcp.fec import FEC_HEADER_SIZE, FEC_HEADER_SIZE_PLUS2, OOB_SEQID, TYPE_DATA, TYPE_OOB, TYPE_PARITY
from kcp.stats import Counters

if TYPE_CHECKING:
    from kcp.crypt import PacketCrypt

_PEER_UNKNOWN: Final = 0
_PEER_FEC: Final = 1
_PEER_PLAIN: Final = 2

__all__ = [
    "CONV_SIZE",
    "CRC_SIZE",
    "CRYPT_HEADER_SIZE",
    "FEC_HEADER_SIZE",
    "FEC_HEADER_SIZE_PLUS2",
    "KIND_KCP",
    "KIND_KCP_RECOVERED",
    "KIND_OOB",
    "MIN_PACKET_SIZE",
    "NONCE_SIZE",
    "OOB_SEQID",
    "TYPE_DATA",
    "TYPE_OOB",
    "TYPE_PARITY",
    "Pipeline",
    "bare_kcp",
]

KIND_KCP: Final = 0
"""``open`` result kind: a KCP packet for the engine's ``input``."""
KIND_OOB: Final = 1
"""``open`` result kind: the payload of an out-of-band packet (conv removed)."""
KIND_KCP_RECOVERED: Final = 2
"""``open`` result kind: a KCP packet rebuilt by FEC. Feed it with ``input(..., regular=False)``:
it may arrive long after it was sent, so its window and timestamps must not count (kcp-go's rule)."""

NONCE_SIZE: Final = 16
CRC_SIZE: Final = 4
CRYPT_HEADER_SIZE: Final = NONCE_SIZE + CRC_SIZE
CONV_SIZE: Final = 4
MIN_PACKET_SIZE: Final = FEC_HEADER_SIZE_PLUS2 + CONV_SIZE
"""Shortest decrypted packet kcp-go accepts: min(KCP overhead 24, OOB framing 12)."""


def bare_kcp(datagram: bytes) -> bool:
    """True if a datagram of a plain packet layer (no crypt, no FEC) is a bare KCP packet: no
    FEC/OOB flag (0xf1-0xf3) at offset 4, which a KCP ``cmd``/``frg`` pair never reads as."""
    return not (len(datagram) > 5 and 0xF1 <= datagram[4] <= 0xF3 and datagram[5] == 0)


_U32: Final = struct.Struct("<I")
_U16: Final = struct.Struct("<H")
_OOB_HEADER: Final = struct.Struct("<IHHI")  # seqid, flag, size, conv
_pack_crc = _U32.pack
_unpack_u16_from = _U16.unpack_from
_crc32 = zlib.crc32


class _UrandomPool:
    """``os.urandom`` drawn 4 KiB at a time: one syscall per ~250 nonces instead of one each."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._buf):
            self._buf = os.urandom(max(4096, n))
            pos, end = 0, n
        self._pos = end
        return self._buf[pos:end]


class Pipeline:
    """kcp-go's packet layer for one session: FEC, then nonce + crc32 + cipher (or the AEAD).

    ``crypt`` is what :func:`kcp.crypt.new_crypt` returns (``None`` for ``null``). FEC is on when
    both shard counts are positive, as in kcp-go; ``peer_fec`` says the peer runs the same FEC
    (parity from the first group on; otherwise its first packet tells, see the module docstring).
    ``rng(n)`` supplies the nonces (default: the OS CSPRNG, drawn in 4 KiB batches). Drops are
    counted in ``counters``.
    """

    __slots__ = (
        "_aead",
        "_block",
        "_dec",
        "_enc",
        "_peer_fec",
        "_rng",
        "counters",
        "crypt",
        "data_shards",
        "fec_enabled",
        "header_size",
        "overhead",
        "parity_shards",
    )

    def __init__(
        self,
        crypt: PacketCrypt | None,
        data_shards: int,
        parity_shards: int,
        counters: Counters,
        rng: Callable[[int], bytes] = os.urandom,
        *,
        peer_fec: bool = False,
    ) -> None:
        self.crypt = crypt
        self.counters = counters
        self._rng: Callable[[int], bytes] = _UrandomPool() if rng is os.urandom else rng
        self._aead: AEADCrypt | None = None
        self._block: BlockCrypt | None = None
        if crypt is None:
            header = 0
            tail = 0
        elif isinstance(crypt, AEADCrypt):
            self._aead = crypt
            header = crypt.nonce_size
            tail = crypt.overhead
        elif isinstance(crypt, BlockCrypt):
            self._block = crypt
            header = CRYPT_HEADER_SIZE
            tail = 0
        else:
            raise KCPUsageError(
                f"crypt must be a BlockCrypt, an AEADCrypt or None, not {type(crypt).__name__}"
            )
        self.fec_enabled = fec.fec_enabled(data_shards, parity_shards)  # raises on nonsense
        self.data_shards = data_shards if self.fec_enabled else 0
        self.parity_shards = parity_shards if self.fec_enabled else 0
        self._enc: fec.FECEncoder | None = None
        self._dec: fec.FECDecoder | None = None
        # what the peer's first KCP packet showed (module docstring), unless the caller knows
        # (``peer_fec``: secure mode, whose handshake agreed on the FEC both ends run)
        self._peer_fec = _PEER_FEC if peer_fec else _PEER_UNKNOWN
        if self.fec_enabled:
            self._enc = fec.FECEncoder(data_shards, parity_shards)
            self._dec = fec.FECDecoder(data_shards, parity_shards, counters)
            header += FEC_HEADER_SIZE_PLUS2
        self.header_size = header
        """Bytes put in front of a KCP packet (crypt header + FEC header)."""
        self.overhead = header + tail
        """Total bytes added to a KCP packet: the engine's MTU is the UDP MTU minus this."""

    # ----------------------------------------------------------------------------------------
    # outgoing
    # ----------------------------------------------------------------------------------------

    def seal(self, kcp_packet: bytes, now: int) -> list[bytes]:
        """Turn one KCP packet into UDP payloads: its data shard (or itself) and any parity shards."""
        enc = self._enc
        if enc is not None:
            peer = self._peer_fec
            if peer == _PEER_FEC:
                return [self._protect(body) for body in enc.encode(kcp_packet, now)]
            if peer == _PEER_UNKNOWN:  # its data shard only: no parity before the peer shows FEC
                return [self._protect(enc.encode(kcp_packet, now, with_parity=False)[0])]
            self.counters.fec_plain_out += 1  # the peer sends plain: so do we
        return [self._protect(kcp_packet)]

    def seal_oob(self, payload: bytes, conv: int) -> bytes:
        """Build one out-of-band UDP payload carrying ``payload`` for conversation ``conv``.

        Layout before the crypt layer: ``0xffffffff | 0x00f3 | size | conv | payload``, all
        little-endian, ``size`` counting itself, the conv and the payload. OOB packets bypass FEC.
        """
        if not 0 <= conv <= 0xFFFFFFFF:
            raise KCPUsageError(f"conv must be a u32, got {conv}")
        if len(payload) > 0xFFFF - 2 - CONV_SIZE:
            raise KCPUsageError(f"OOB payload too large: {len(payload)} bytes")
        body = _OOB_HEADER.pack(OOB_SEQID, TYPE_OOB, 2 + CONV_SIZE + len(payload), conv) + bytes(payload)
        self.counters.oob_out += 1
        return self._protect(body)

    def _protect(self, body: bytes) -> bytes:
        block = self._block
        if block is not None:
            return block.encrypt(self._rng(NONCE_SIZE) + _pack_crc(_crc32(body)) + body)
        aead = self._aead
        if aead is not None:
            nonce = self._rng(aead.nonce_size)
            return nonce + aead.seal(nonce, body)
        return bytes(body)

    def oob_max_size(self, kcp_mtu: int) -> int:
        """Largest OOB payload that fits an engine MTU (kcp-go: ``mtu - 4`` for the conv)."""
        return max(0, kcp_mtu - CONV_SIZE)

    # ----------------------------------------------------------------------------------------
    # incoming
    # ----------------------------------------------------------------------------------------

    def open(self, datagram: bytes, now: int) -> list[tuple[int, bytes]]:
        """Undo :meth:`seal` / :meth:`seal_oob` for one received UDP payload.

        Returns ``(KIND_KCP, packet)`` for a KCP packet as received (a data shard's packet comes
        first), ``(KIND_KCP_RECOVERED, packet)`` for each packet FEC rebuilt, and
        ``(KIND_OOB, payload)`` for an OOB packet. Garbage returns ``[]`` and moves ``in_errs`` plus the counter naming the reason.
        """
        if type(datagram) is not bytes:
            datagram = bytes(datagram)
        c = self.counters
        block = self._block
        if block is not None:
            if len(datagram) < CRYPT_HEADER_SIZE:
                c.short_packets += 1
                c.in_errs += 1
                return []
            plain = block.decrypt(datagram)
            data = plain[CRYPT_HEADER_SIZE:]
            if _crc32(data) != _U32.unpack_from(plain, NONCE_SIZE)[0]:
                c.in_csum_errors += 1
                c.in_errs += 1
                return []
        elif self._aead is not None:
            aead = self._aead
            ns = aead.nonce_size
            if len(datagram) < ns + aead.overhead:
                c.short_packets += 1
                c.in_errs += 1
                return []
            opened = aead.open(datagram[:ns], datagram[ns:])
            if opened is None:
                c.decrypt_errors += 1
                c.in_errs += 1
                return []
            data = opened
        else:
            data = datagram

        n = len(data)
        if n < MIN_PACKET_SIZE:
            c.short_packets += 1
            c.in_errs += 1
            return []
        flag = _unpack_u16_from(data, 4)[0]
        if flag in (TYPE_DATA, TYPE_PARITY):
            self._peer_fec = _PEER_FEC  # (also after plain packets: an FEC shard settles it)
            return self._open_fec(data, flag, now)
        if flag == TYPE_OOB:
            if _unpack_u16_from(data, FEC_HEADER_SIZE)[0] != n - FEC_HEADER_SIZE:
                c.fec_errs += 1
                c.in_errs += 1
                return []
            c.oob_in += 1
            return [(KIND_OOB, data[FEC_HEADER_SIZE_PLUS2 + CONV_SIZE :])]
        if self._peer_fec == _PEER_UNKNOWN:
            self._peer_fec = _PEER_PLAIN  # until an FEC shard comes
        return [(KIND_KCP, data)]

    def _open_fec(self, data: bytes, flag: int, now: int) -> list[tuple[int, bytes]]:
        c = self.counters
        out: list[tuple[int, bytes]] = []
        if flag == TYPE_DATA:
            if _unpack_u16_from(data, FEC_HEADER_SIZE)[0] != len(data) - FEC_HEADER_SIZE:
                c.fec_errs += 1
                c.in_errs += 1
                return out
            out.append((KIND_KCP, data[FEC_HEADER_SIZE_PLUS2:]))
        dec = self._dec
        if dec is None:
            # FEC is off here but the peer sends shards: kcp-go then starts a (1, 1) decoder that
            # tunes itself to the peer's parameters, so lost packets can still be recovered.
            dec = self._dec = fec.FECDecoder(1, 1, self.counters)
        try:
            recovered = dec.decode(data, now)  # counts fec_parity_shards / fec_recovered / fec_errs
        except Exception:  # a codec bug must not take the read loop down
            c.fec_errs += 1
            return out
        for packet in recovered:
            out.append((KIND_KCP_RECOVERED, packet))
        return out
