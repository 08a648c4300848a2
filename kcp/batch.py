"""Batched UDP I/O over a non-blocking socket.

On Linux, :class:`DatagramIO` receives with ``recvmmsg(2)`` and sends with ``sendmmsg(2)``, so one
system call moves up to ``batch`` datagrams. The compiled build calls them from a small C module
(``kcp._mmsg``, kcp/_mmsg.c: the iovecs point at the datagrams' bytes objects, nothing is copied);
otherwise, and for GSO runs, they are called through :mod:`ctypes` on the C library with
preallocated ``mmsghdr``/``iovec``/``sockaddr`` arrays. Elsewhere, or when forced (argument
``mmsg=False`` or the environment variable ``KCP_NO_MMSG=1``), the same interface is served by
plain ``recvfrom``/``sendto`` calls. Where the kernel supports UDP GSO (``UDP_SEGMENT``), each run
of equal-sized datagrams to one address goes out as one super-packet that the kernel splits:
inside ``sendmmsg`` one message per run, or through :meth:`socket.socket.sendmsg` in the
fallback. It is on by default because it measured 1.4x on bulk loopback transfers (the kernel
walks the stack once per run); ``gso=False`` or ``KCP_NO_GSO=1`` turns it off, and a path that
refuses it turns it off by itself.

Addresses are the tuples :mod:`socket` uses: ``(host, port)`` for IPv4 and
``(host, port, flowinfo, scope_id)`` for IPv6, identical in both code paths, so they can be used
as dictionary keys by a demultiplexer.

System calls, datagrams and bytes are counted into :class:`kcp.stats.Counters`
(``recv_syscalls``, ``send_syscalls``, ``in_pkts``, ``out_pkts``, ``bytes_received``,
``bytes_sent``). Network errors never raise: a datagram that cannot be sent is dropped (UDP is
lossy anyway) and the error is remembered in :attr:`DatagramIO.last_error`.
"""

from __future__ import annotations

import _ctypes  # noqa: F401  (compiled build: mypyc reads ctypes.Structure from _ctypes, where typeshed defines it)
import contextlib
import ctypes
import ctypes.util
import errno
import importlib
import os
import socket
import struct
import sys
import threading
from collections.abc import Sequence
from typing import Any

from kcp.errors import KCPUsageError
from kcp.fieldcheck import check_port
from kcp.stats import Counters

__all__ = [
    "DEFAULT_BATCH",
    "MAX_DATAGRAM",
    "Address",
    "DatagramIO",
    "gso_supported",
    "mmsg_supported",
    "native_mmsg",
    "open_udp_socket",
    "unresolved",
]

Address = Any
"""A socket address tuple as used by :mod:`socket` (``(host, port)`` or the IPv6 4-tuple)."""

DEFAULT_BATCH = 64
MAX_DATAGRAM = 2048  # kcp-go's mtuLimit; larger datagrams are truncated on receive
_SOCKADDR_SIZE = 128  # sizeof(struct sockaddr_storage)
_SOL_UDP = 17
_UDP_SEGMENT = 103
_GSO_MAX_SEGS = 64
_GSO_MAX_BYTES = 65000
_CMSG_LEN = 18  # CMSG_LEN(sizeof(uint16_t)) on 64-bit Linux
_CMSG_SPACE = 24  # CMSG_SPACE(sizeof(uint16_t))
_ADDR_CACHE_LIMIT = 65536
_RETRY_ERRNOS = (errno.EINTR,)
_AGAIN_ERRNOS = (errno.EAGAIN, errno.EWOULDBLOCK)
_GSO_REFUSED_ERRNOS = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)
# ICMP errors the kernel reports once on the socket: reading goes on after them
_PENDING_ERRNOS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


class _IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint))


_libc: Any = None
_recvmmsg: Any = None
_sendmmsg: Any = None
_native: Any = None  # kcp._mmsg, when built (the compiled build)
with contextlib.suppress(ImportError):
    _native = importlib.import_module("kcp._mmsg")


def native_mmsg() -> bool:
    """True when the C module ``kcp._mmsg`` (the compiled build's) sends and receives batches."""
    return _native is not None and mmsg_supported()


def _load_libc() -> bool:
    global _libc, _recvmmsg, _sendmmsg
    if _libc is not None:
        return _recvmmsg is not None
    if not sys.platform.startswith("linux"):
        _libc = False
        return False
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv = lib.recvmmsg
        send = lib.sendmmsg
    except (OSError, AttributeError):
        _libc = False
        return False
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    recv.restype = ctypes.c_int
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    send.restype = ctypes.c_int
    _libc, _recvmmsg, _sendmmsg = lib, recv, send
    return True


def mmsg_supported() -> bool:
    """True when recvmmsg/sendmmsg can be called here (Linux with a C library that has them)."""
    return _load_libc()


_gso_cache: bool | None = None


def gso_supported() -> bool:
    """True when the kernel accepts ``UDP_SEGMENT`` (UDP generic segmentation offload)."""
    global _gso_cache
    if _gso_cache is None:
        ok = False
        if sys.platform.startswith("linux"):
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.setsockopt(_SOL_UDP, _UDP_SEGMENT, 1200)
                    ok = True
            except OSError:
                ok = False
        _gso_cache = ok
    return _gso_cache


def unresolved(host: str, e: socket.gaierror | None = None) -> OSError:
    """The error for ``host`` when it does not resolve (the resolver's own names no host)."""
    if e is None:
        return OSError(f"cannot resolve {host!r}")
    return OSError(e.errno, f"cannot resolve {host!r}: {e.strerror}")


def open_udp_socket(
    host: str,
    port: int,
    *,
    family: int = 0,
    reuse_port: bool = False,
    rcvbuf: int | None = 4 << 20,
    sndbuf: int | None = 4 << 20,
) -> socket.socket:
    """Create a bound, non-blocking UDP socket.

    ``family`` 0 picks the family of the first address ``host`` resolves to. ``reuse_port`` sets
    ``SO_REUSEPORT`` so that several processes can share the port (the kernel spreads remote
    addresses over them). Buffer sizes are requests; the kernel may cap them.
    """
    check_port(port, KCPUsageError)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise unresolved(host, e) from None
    if not infos:
        raise unresolved(host)
    fam, typ, proto, _, addr = infos[0]
    sock = socket.socket(fam, typ, proto)
    try:
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for opt, size in ((socket.SO_RCVBUF, rcvbuf), (socket.SO_SNDBUF, sndbuf)):
            if size:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, size)
        sock.bind(addr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _decode_sockaddr(raw: bytes) -> Address:
    fam = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if fam == socket.AF_INET:
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if fam == socket.AF_INET6:
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if scope:
            try:
                host = f"{host}%{socket.if_indextoname(scope)}"
            except OSError:
                host = f"{host}%{scope}"
        return (host, port, flowinfo, scope)
    return None


def _encode_sockaddr(family: int, addr: Address) -> bytes:
    host, port = addr[0], addr[1]
    if family == socket.AF_INET:
        return struct.pack("=H", socket.AF_INET) + struct.pack(
            "!H4s8x", port, socket.inet_pton(socket.AF_INET, host)
        )
    if family == socket.AF_INET6:
        flowinfo = addr[2] if len(addr) > 2 else 0
        scope = addr[3] if len(addr) > 3 else 0
        if "%" in host:
            host, _, zone = host.partition("%")
            if not scope:
                scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        return (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI16s", port, flowinfo, socket.inet_pton(socket.AF_INET6, host))
            + struct.pack("=I", scope)
        )
    raise OSError(f"unsupported address family {family}")


class _MMsgBuffers:
    """Preallocated mmsghdr/iovec/sockaddr arrays for one batch size and slot size."""

    __slots__ = (
        "_ctl16",
        "_ctl_base",
        "_ctl_off",
        "_ctlbuf",
        "_ctllen_off",
        "_iov_off",
        "_iovlen_off",
        "_len_off",
        "_name_off",
        "_namelen_off",
        "_rbase",
        "_rbuf",
        "_rbufmv",
        "_riov",
        "_rmsg",
        "_rmsg32",
        "_rmsg_ptr",
        "_rnames",
        "_rnamesmv",
        "_sbase",
        "_sbuf",
        "_siov",
        "_siov64",
        "_siov_base",
        "_smsg",
        "_smsg32",
        "_smsg64",
        "_smsg_ptr",
        "_stride32",
        "_stride64",
    )

    def __init__(self, n: int, slot: int) -> None:
        # receive side
        self._rbuf = (ctypes.c_char * (n * slot))()
        self._rnames = (ctypes.c_char * (n * _SOCKADDR_SIZE))()
        self._riov = (_IOVec * n)()
        self._rmsg = (_MMsgHdr * n)()
        rbase = ctypes.addressof(self._rbuf)
        nbase = ctypes.addressof(self._rnames)
        for i in range(n):
            self._riov[i].iov_base = rbase + i * slot
            self._riov[i].iov_len = slot
            hdr = self._rmsg[i].msg_hdr
            hdr.msg_name = nbase + i * _SOCKADDR_SIZE
            hdr.msg_namelen = _SOCKADDR_SIZE
            hdr.msg_iov = ctypes.addressof(self._riov[i])
            hdr.msg_iovlen = 1
        stride = ctypes.sizeof(_MMsgHdr)
        self._stride32 = stride // 4
        self._stride64 = stride // 8
        self._len_off = _MMsgHdr.msg_len.offset // 4
        self._namelen_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_namelen.offset) // 4
        self._name_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_name.offset) // 8
        self._rmsg32 = memoryview(self._rmsg).cast("B").cast("I")
        self._rbufmv = memoryview(self._rbuf).cast("B")
        self._rnamesmv = memoryview(self._rnames).cast("B")
        self._rbase = rbase
        # send side
        self._sbuf = (ctypes.c_char * (n * slot))()
        self._siov = (_IOVec * n)()
        self._smsg = (_MMsgHdr * n)()
        sbase = ctypes.addressof(self._sbuf)
        for i in range(n):
            self._siov[i].iov_base = sbase + i * slot
            hdr = self._smsg[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._siov[i])
            hdr.msg_iovlen = 1
        self._sbase = sbase
        self._smsg32 = memoryview(self._smsg).cast("B").cast("I")
        self._smsg64 = memoryview(self._smsg).cast("B").cast("Q")
        self._siov64 = memoryview(self._siov).cast("B").cast("Q")
        self._rmsg_ptr = ctypes.addressof(self._rmsg)
        self._smsg_ptr = ctypes.addressof(self._smsg)
        # GSO: one cmsg (UDP_SEGMENT, u16) per message, 24 bytes each (CMSG_SPACE(2))
        self._ctlbuf = (ctypes.c_char * (n * _CMSG_SPACE))()
        self._ctl_base = ctypes.addressof(self._ctlbuf)
        hdr = struct.Struct("=Qii")
        for i in range(n):
            hdr.pack_into(self._ctlbuf, i * _CMSG_SPACE, _CMSG_LEN, _SOL_UDP, _UDP_SEGMENT)
        self._ctl16 = memoryview(self._ctlbuf).cast("B").cast("H")
        self._siov_base = ctypes.addressof(self._siov)
        self._iov_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_iov.offset) // 8
        self._iovlen_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_iovlen.offset) // 8
        self._ctl_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_control.offset) // 8
        self._ctllen_off = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_controllen.offset) // 8


_tls = threading.local()


def _shared_buffers(n: int, slot: int, gso: bool = False) -> _MMsgBuffers:
    # GSO sends rewrite msg_iov/msg_control per message: they get their own set of arrays
    cache: dict[tuple[int, int, bool], _MMsgBuffers] | None = getattr(_tls, "buffers", None)
    if cache is None:
        cache = _tls.buffers = {}
    b = cache.get((n, slot, gso))
    if b is None:
        b = cache[(n, slot, gso)] = _MMsgBuffers(n, slot)
    return b


class DatagramIO:
    """Batched send and receive on one non-blocking UDP socket.

    ``recv()`` returns what is readable now, at most ``batch * max_batches`` datagrams;
    ``send(items)`` writes a list of ``(payload, address)`` and returns how many left the process
    (the rest hit a full socket buffer: keep them and retry when the socket is writable).
    """

    def __init__(
        self,
        sock: socket.socket,
        counters: Counters | Sequence[Counters] | None = None,
        *,
        batch: int = DEFAULT_BATCH,
        mmsg: bool | None = None,
        gso: bool | None = None,
        max_datagram: int = MAX_DATAGRAM,
    ) -> None:
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be in 1..1024")
        if max_datagram < 64:
            raise ValueError("max_datagram must be at least 64")
        self.sock = sock
        self.family = sock.family
        self._namelen = 16 if sock.family == socket.AF_INET else 28  # sizeof(sockaddr_in/_in6)
        self.fd = sock.fileno()
        self.batch = batch
        self.max_datagram = max_datagram
        if counters is None:
            self.counters: tuple[Counters, ...] = ()
        elif isinstance(counters, Counters):
            self.counters = (counters,)
        else:
            self.counters = tuple(counters)
        if mmsg is None:
            mmsg = os.environ.get("KCP_NO_MMSG", "") in ("", "0")
        self.mmsg = bool(mmsg) and mmsg_supported()
        if gso is None:
            gso = os.environ.get("KCP_NO_GSO", "") in ("", "0")
        self.gso = bool(gso) and gso_supported()
        self.last_error: OSError | None = None
        self._name_cache: dict[bytes, Address] = {}
        self._name_keys: dict[Address, bytes] = {}  # the name cache's keys by address (for forget)
        self._addr_cache: dict[Address, tuple[bytes, int]] = {}  # (packed sockaddr, its buffer's address)
        if self.mmsg:
            self._setup_mmsg()

    # -- setup -----------------------------------------------------------------------------------
    def _setup_mmsg(self) -> None:
        # The arrays are shared by every DatagramIO of this thread with the same shape: recv()
        # copies datagrams out and send() finishes its system calls before returning, so no
        # state survives a call. A client process with thousands of sessions (one socket each)
        # then pays for one set of buffers, not one per socket.
        self._b = _shared_buffers(self.batch, self.max_datagram)
        self._bg = _shared_buffers(self.batch, self.max_datagram, True) if self.gso else self._b

    # -- helpers ---------------------------------------------------------------------------------
    def _count_recv(self, calls: int, pkts: int, nbytes: int) -> None:
        for c in self.counters:
            c.recv_syscalls += calls
            c.in_pkts += pkts
            c.bytes_received += nbytes

    def _count_send(self, calls: int, pkts: int, nbytes: int) -> None:
        for c in self.counters:
            c.send_syscalls += calls
            c.out_pkts += pkts
            c.bytes_sent += nbytes

    def _sockaddr(self, addr: Address) -> tuple[bytes, int]:
        """Packed sockaddr for ``addr`` and the address of its bytes (which the cache keeps alive,
        and a batch being packed keeps alive after a clear)."""
        hit = self._addr_cache.get(addr)
        if hit is None:
            packed = _encode_sockaddr(self.family, addr)
            ptr = ctypes.cast(ctypes.c_char_p(packed), ctypes.c_void_p).value  # the bytes' own buffer
            assert ptr is not None
            hit = (packed, ptr)
            if len(self._addr_cache) >= _ADDR_CACHE_LIMIT:
                self._addr_cache.clear()
            self._addr_cache[addr] = hit
        return hit

    def _address(self, key: bytes) -> Address:
        """The address of a received packed sockaddr (cached)."""
        cache = self._name_cache
        addr = _decode_sockaddr(key)
        if len(cache) >= _ADDR_CACHE_LIMIT:
            cache.clear()
            self._name_keys.clear()
        cache[key] = addr
        self._name_keys[addr] = key
        return addr

    def forget(self, addr: Address) -> None:
        """Drop the cached sockaddr encodings of ``addr`` (a peer the owner no longer serves).

        The caches only save work for addresses that keep sending or being sent to. Entries for
        addresses that left (or never were peers: spoofed sources) would otherwise stay until the
        cache fills, holding memory the allocator cannot return while they live.
        """
        self._addr_cache.pop(addr, None)
        key = self._name_keys.pop(addr, None)
        if key is not None:
            self._name_cache.pop(key, None)

    def cache_sizes(self) -> tuple[int, int]:
        """Entries in the receive (sockaddr -> address) and send (address -> sockaddr) caches."""
        return len(self._name_cache), len(self._addr_cache)

    # -- receive ---------------------------------------------------------------------------------
    def recv(self, max_batches: int = 16) -> list[tuple[bytes, Address]]:
        """Read the datagrams that are ready, up to ``batch * max_batches``; [] if none."""
        if self.mmsg:
            return self._recv_mmsg(max_batches)
        return self._recv_plain(max_batches)

    def _recv_plain(self, max_batches: int) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        recvfrom = self.sock.recvfrom
        size = self.max_datagram
        limit = self.batch * max_batches
        calls = nbytes = 0
        while len(out) < limit:
            calls += 1
            try:
                data, addr = recvfrom(size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.last_error = exc
                if exc.errno in _PENDING_ERRNOS:
                    continue
                break  # anything else (a closed socket ...) would fail again at once
            nbytes += len(data)
            out.append((data, addr))
        self._count_recv(calls, len(out), nbytes)
        return out

    def _read_again(self, err: int) -> bool:
        """After a recvmmsg that failed with ``err``: True to call it again, False to stop reading
        (nothing more is there, or the socket fails). An error is remembered in :attr:`last_error`;
        reading goes on after an ICMP error the kernel reports once."""
        if err in _AGAIN_ERRNOS:
            return False
        if err in _RETRY_ERRNOS:
            return True
        self.last_error = OSError(err, os.strerror(err))
        return err in _PENDING_ERRNOS

    def _recv_native(self, max_batches: int) -> list[tuple[bytes, Address]]:
        out: list[tuple[bytes, Address]] = []
        recv = _native.recv
        fd = self.fd
        n = self.batch
        slot = self.max_datagram
        cache = self._name_cache
        decode = self._address
        calls = nbytes = 0
        for _ in range(max_batches):
            calls += 1
            got, size, err = recv(fd, n, slot, cache, decode, out)
            if got < 0:
                if self._read_again(err):
                    continue
                break
            nbytes += size
            if got < n:
                break
        self._count_recv(calls, len(out), nbytes)
        return out

    def _recv_mmsg(self, max_batches: int) -> list[tuple[bytes, Address]]:
        if _native is not None:
            return self._recv_native(max_batches)
        out: list[tuple[bytes, Address]] = []
        b = self._b
        n = self.batch
        fd = self.fd
        ptr = b._rmsg_ptr
        m32 = b._rmsg32
        bufmv = b._rbufmv
        names = b._rnamesmv
        cache = self._name_cache
        s32 = b._stride32
        len_off = b._len_off
        nl_off = b._namelen_off
        slot = self.max_datagram
        recvmmsg = _recvmmsg
        calls = nbytes = 0
        for _ in range(max_batches):
            calls += 1
            got = recvmmsg(fd, ptr, n, 0, None)
            if got < 0:
                if self._read_again(ctypes.get_errno()):
                    continue
                break
            for i in range(got):
                base = i * s32
                size = m32[base + len_off]
                namelen = m32[base + nl_off]
                m32[base + nl_off] = _SOCKADDR_SIZE
                key = names[i * _SOCKADDR_SIZE : i * _SOCKADDR_SIZE + namelen].tobytes()
                addr = cache.get(key)
                if addr is None:
                    addr = self._address(key)
                off = i * slot
                nbytes += size
                out.append((bufmv[off : off + size].tobytes(), addr))
            if got < n:
                break
        self._count_recv(calls, len(out), nbytes)
        return out

    # -- send ------------------------------------------------------------------------------------
    def send(self, items: Sequence[tuple[bytes, Address]]) -> int:
        """Send ``items`` in order; return how many were handled (sent or dropped on error).

        A return value below ``len(items)`` means the socket buffer is full: retry the rest later.
        """
        if not items:
            return 0
        if len(items) == 1:  # a client's lone ack: one sendto costs less than filling a batch
            return self._send_plain(items, 0, 1)
        if self.gso:
            if self.mmsg:
                return self._send_mmsg_gso(items, 0, len(items))
            return self._send_gso(items)
        if self.mmsg:
            return self._send_mmsg(items, 0, len(items))
        return self._send_plain(items, 0, len(items))

    def _send_plain(self, items: Sequence[tuple[bytes, Address]], start: int, stop: int) -> int:
        sendto = self.sock.sendto
        calls = nbytes = sent = 0
        i = start
        while i < stop:
            data, addr = items[i]
            calls += 1
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.last_error = exc
                i += 1
                continue
            nbytes += len(data)
            sent += 1
            i += 1
        self._count_send(calls, sent, nbytes)
        return i - start

    def _send_mmsg(self, items: Sequence[tuple[bytes, Address]], start: int, stop: int) -> int:
        """sendmmsg, one message per datagram."""
        return self._send_batches(items, start, stop, False)

    def _send_mmsg_gso(self, items: Sequence[tuple[bytes, Address]], start: int, stop: int) -> int:
        """sendmmsg where each run of equal-sized datagrams to one address is one GSO message."""
        return self._send_batches(items, start, stop, True)

    def _send_batches(self, items: Sequence[tuple[bytes, Address]], start: int, stop: int, gso: bool) -> int:
        """Send ``items[start:stop]``, one sendmmsg per batch: with ``gso``, a batch that starts
        with a run of datagrams to one address is packed into GSO messages (:meth:`_fill_gso`),
        and one that starts with datagrams to different addresses (a fan-out) one message per
        datagram as far as the next run; without, one message per datagram. The C module packs
        and sends the one-per-datagram batches when it is there."""
        fd = self.fd
        sendmmsg = _sendmmsg
        native = _native.send if _native is not None and type(items) is list else None
        plain_ptr = self._b._smsg_ptr
        gso_ptr = self._bg._smsg_ptr
        batch = self.batch
        slot = self.max_datagram
        cache = self._addr_cache
        encode = self._sockaddr
        calls = nbytes = sent = 0
        i = start
        while i < stop:
            counts: list[int] | None = None
            run = gso and (i + 1 == stop or items[i + 1][1] == items[i][1])
            if native is not None and not run:
                m, got, done, err = native(fd, items, i, stop, batch, slot, gso, cache, encode)
            else:
                if run:
                    m, counts, sizes = self._fill_gso(items, i, stop)
                else:
                    m, _, sizes = self._fill_plain(items, i, stop, gso)
                got = sendmmsg(fd, gso_ptr if run else plain_ptr, m, 0) if m else 0
                err = ctypes.get_errno() if got < 0 else 0
                done = (sum(sizes) if got == m else sum(sizes[:got])) if got > 0 else 0
            if m == 0:
                # the datagram at i is larger than a slot: it goes alone through sendto
                self._count_send(calls, sent, nbytes)
                calls = nbytes = sent = 0
                if self._send_plain(items, i, i + 1) == 0:
                    return i - start
                i += 1
                continue
            calls += 1
            if got < 0:
                if err in _AGAIN_ERRNOS:
                    break
                if err in _RETRY_ERRNOS:
                    continue
                # the first message of the batch failed (bad address, EMSGSIZE, a pending ICMP
                # error ...): drop it and go on with the rest
                self.last_error = OSError(err, os.strerror(err))
                first = counts[0] if counts is not None else 1
                if first > 1 and err in _GSO_REFUSED_ERRNOS:
                    # the path refuses segmentation offload: carry on without it
                    self.gso = False
                    self._count_send(calls, sent, nbytes)
                    return i - start + self._send_mmsg(items, i, stop)
                if first > 1 and err == errno.EMSGSIZE:
                    # a run coalesced for GSO (its last datagram may be shorter) holds one larger
                    # than the interface takes with DF: send the run one by one, so those that
                    # fit (an MTU probe of the base size, a DATA_PART piece) still go
                    self._count_send(calls, sent, nbytes)
                    calls = nbytes = sent = 0
                    done = self._send_plain(items, i, i + first)
                    if done < first:
                        return i - start + done
                i += first
                continue
            # a partial count means the kernel stopped (buffer full or error): retry from there
            if counts is None:
                sent += got
                i += got
            else:
                for x in range(got):
                    sent += counts[x]
                    i += counts[x]
            nbytes += done
        self._count_send(calls, sent, nbytes)
        return i - start

    def _fill_plain(
        self, items: Sequence[tuple[bytes, Address]], i: int, stop: int, runs: bool = False
    ) -> tuple[int, list[int] | None, list[int]]:
        """Pack up to ``batch`` datagrams from ``i`` into the plain arrays, one message each
        (their iovecs are fixed).

        Returns the number of messages, ``None`` (one datagram per message) and their sizes; it
        stops before a datagram larger than a slot and, with ``runs``, before one followed by
        another to the same address (a GSO run, for :meth:`_fill_gso`).
        """
        b = self._b
        slot = self.max_datagram
        sbase = b._sbase
        m32 = b._smsg32
        m64 = b._smsg64
        iov64 = b._siov64
        s32 = b._stride32
        s64 = b._stride64
        nl_off = b._namelen_off
        name_off = b._name_off
        namelen = self._namelen
        memmove = ctypes.memmove
        cached = self._addr_cache.get
        sockaddr = self._sockaddr
        sizes: list[int] = []
        stop = min(stop, i + self.batch)
        k = 0
        while i < stop:
            data, addr = items[i]
            size = len(data)
            if size > slot or (runs and i + 1 < stop and items[i + 1][1] == addr):
                break
            memmove(sbase + k * slot, data, size)
            iov64[k * 2 + 1] = size
            hit = cached(addr)
            m64[k * s64 + name_off] = (hit if hit is not None else sockaddr(addr))[1]
            m32[k * s32 + nl_off] = namelen
            sizes.append(size)
            k += 1
            i += 1
        return k, None, sizes

    def _fill_gso(
        self, items: Sequence[tuple[bytes, Address]], i: int, stop: int
    ) -> tuple[int, list[int], list[int]]:
        """Pack up to ``batch`` datagrams from ``i`` into messages, one per GSO run (a datagram
        followed by one to another address is a run of one).

        Returns the number of messages and, per message, its datagram count and its bytes; it
        stops before a datagram larger than a slot.
        """
        b = self._bg
        n = self.batch
        slot = self.max_datagram
        sbase = b._sbase
        m32 = b._smsg32
        m64 = b._smsg64
        iov64 = b._siov64
        ctl16 = b._ctl16
        s32 = b._stride32
        s64 = b._stride64
        nl_off = b._namelen_off
        name_off = b._name_off
        iov_off = b._iov_off
        iovlen_off = b._iovlen_off
        ctl_off = b._ctl_off
        ctllen_off = b._ctllen_off
        iov_base = b._siov_base
        ctl_base = b._ctl_base
        namelen = self._namelen
        memmove = ctypes.memmove
        sockaddr = self._sockaddr
        counts: list[int] = []
        sizes: list[int] = []
        k = 0  # slots (datagrams) used
        m = 0  # messages
        while i < stop and k < n:
            data, addr = items[i]
            seg = len(data)
            if seg > slot:
                break
            if i + 1 < stop and items[i + 1][1] == addr:
                end, total = _gso_run(items, i, min(stop, i + n - k))
            else:  # the next datagram goes elsewhere (a fan-out): a run of one
                end, total = i + 1, seg
            base = m * s64
            m64[base + name_off] = sockaddr(addr)[1]
            m32[m * s32 + nl_off] = namelen
            m64[base + iov_off] = iov_base + k * 16
            m64[base + iovlen_off] = end - i
            if end - i > 1:
                m64[base + ctl_off] = ctl_base + m * _CMSG_SPACE
                m64[base + ctllen_off] = _CMSG_SPACE
                ctl16[(m * _CMSG_SPACE + 16) // 2] = seg
            else:
                m64[base + ctl_off] = 0
                m64[base + ctllen_off] = 0
            for x in range(i, end):
                data = items[x][0]
                size = len(data)
                memmove(sbase + k * slot, data, size)
                iov64[k * 2 + 1] = size
                k += 1
            counts.append(end - i)
            sizes.append(total)
            m += 1
            i = end
        return m, counts, sizes

    def _send_gso(self, items: Sequence[tuple[bytes, Address]]) -> int:
        """The sendmsg fallback: one system call per GSO run."""
        sendmsg = self.sock.sendmsg
        calls = nbytes = sent = 0
        i = 0
        total = len(items)
        while i < total:
            data, addr = items[i]
            j, size = _gso_run(items, i, total)
            calls += 1
            try:
                if j - i == 1:
                    sendmsg([data], [], 0, addr)
                else:
                    bufs = [items[x][0] for x in range(i, j)]
                    sendmsg(bufs, [(_SOL_UDP, _UDP_SEGMENT, struct.pack("=H", len(data)))], 0, addr)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.last_error = exc
                i = j
                continue
            nbytes += size
            sent += j - i
            i = j
        self._count_send(calls, sent, nbytes)
        return i


def _gso_run(items: Sequence[tuple[bytes, Address]], i: int, stop: int) -> tuple[int, int]:
    """End (exclusive) and bytes of the run from ``i`` that may go as one GSO super-packet.

    A run is up to ``_GSO_MAX_SEGS`` datagrams (``_GSO_MAX_BYTES`` in all) to one address, each
    no longer than the first; a shorter one may only end it (the kernel cuts at the first's size).
    """
    data, addr = items[i]
    seg = total = len(data)
    j = i + 1
    while j < stop and j - i < _GSO_MAX_SEGS:
        nxt, nxt_addr = items[j]
        size = len(nxt)
        if size > seg or total + size > _GSO_MAX_BYTES or nxt_addr != addr:
            break
        total += size
        j += 1
        if size < seg:
            break
    return j, total
