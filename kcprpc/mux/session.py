"""asyncio glue around :class:`~kcprpc.mux.core.MuxCore`: :class:`MuxSession` and :class:`MuxStream`.

The glue owns three things only: a reader task (transport → core, paused while the core's receive
bucket is empty), a writer task (core → transport, one ``drain()`` per chunk, several writes in one
loop tick go out together) and one keepalive wake-up on the loop's shared timer heap
(:class:`kcp.timers.TimerHeap`, which serves every KCP session too). Everything else — framing,
windows, keepalive decisions, counters — is in the sans-I/O core.

The transport is any object with ``async read(n) -> bytes`` (``b""`` at EOF), ``write(data)``,
``async drain()``, ``close()`` and ``async wait_closed()``: a :class:`kcp.session.KCPSession`, or
:func:`kcprpc.mux.testing.memory_pipe` in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from kcp.timers import TimerHeap

from .core import (
    ConnectionTerminated,
    DataReceived,
    MuxConfig,
    MuxCore,
    StreamEnded,
    StreamOpened,
    StreamRecord,
    StreamReleased,
    WindowUpdated,
)
from .errors import MuxClosedError, MuxUsageError, fresh
from .totals import session_opened

_DEFAULT_CONFIG: Final = MuxConfig()


class ByteTransport(Protocol):
    """What :class:`MuxSession` needs from the layer below (a KCP session has this shape)."""

    async def read(self, n: int = -1) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


def wake(fut: asyncio.Future[None] | None) -> None:
    """Resolve a waiter's future, if there is one and it is still pending."""
    if fut is not None and not fut.done():
        fut.set_result(None)


class MuxStream:
    """One logical byte stream inside a :class:`MuxSession`.

    Reading: :meth:`read` returns what is buffered (at least one byte, or ``b""`` at EOF after the
    peer's FIN); :meth:`readexactly` collects exactly ``n`` bytes. Writing: :meth:`write` queues
    (never blocks), :meth:`drain` waits while too much is queued (``stream_send_buffer``) or, in
    version 2, while the peer's window is closed. :meth:`close` sends FIN after the queued data
    (half-close: reading goes on until the peer's FIN).

    If the session dies, buffered data can still be read; after it, reads raise the session's
    :class:`MuxClosedError` (or return EOF if the peer had sent FIN).
    """

    __slots__ = ("_on_readable", "_read_waiter", "_session", "_st", "stream_id")

    def __init__(self, session: MuxSession, st: StreamRecord) -> None:
        self._session = session
        self._st = st
        self.stream_id: int = st.stream_id
        self._read_waiter: asyncio.Future[None] | None = None
        self._on_readable: Callable[[], None] | None = None

    def __repr__(self) -> str:
        st = self._st
        return f"<MuxStream id={self.stream_id} {st.state.label} buffered={st.recv_bytes} unsent={st.send_bytes}>"

    @property
    def session(self) -> MuxSession:
        """The session this stream belongs to."""
        return self._session

    def at_eof(self) -> bool:
        """True once the peer's FIN came and every byte before it was read."""
        return self._st.at_eof

    def is_closing(self) -> bool:
        """True once :meth:`close` was called (or the session died)."""
        return not self._st.writable  # closed, aborted, or the session died

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._st.recv_bytes

    def write_buffer_size(self) -> int:
        """Bytes written and not sent yet (waiting for the peer's window or for the transport)."""
        return self._st.send_bytes

    async def _park(self, waiters: dict[MuxStream, asyncio.Future[None]]) -> None:
        """Wait in ``waiters`` (the session's drain or close waiters) until the session wakes us."""
        fut = self._session._loop.create_future()
        waiters[self] = fut
        try:
            await fut
        finally:
            if waiters.get(self) is fut:
                del waiters[self]

    async def _wait_readable(self) -> None:
        fut = self._session._loop.create_future()
        self._read_waiter = fut
        try:
            await fut
        finally:
            self._read_waiter = None

    async def read(self, n: int = -1) -> bytes:
        """Return up to ``n`` bytes (all buffered bytes if ``n < 0``), waiting for at least one.

        Returns ``b""`` at EOF (the peer sent FIN and everything was read). Unlike
        ``asyncio.StreamReader.read(-1)`` this does not wait for EOF. Raises
        :class:`MuxClosedError` if the session died and nothing is left to read.
        """
        if n == 0:
            return b""
        sess = self._session
        core = sess._core
        st = self._st
        while True:
            data = core.read(st, n)  # raises the session error once drained
            if data:
                sess._after_read()
                return data
            if st.at_eof:
                return b""
            if self._read_waiter is not None:
                raise MuxUsageError("another coroutine is already reading this stream")
            await self._wait_readable()

    def set_reader(self, on_readable: Callable[[], None] | None) -> None:
        """Call ``on_readable()`` in the loop turn that data, the peer's FIN or the session's end
        reaches this stream, instead of waking a coroutine in :meth:`read` (``None``: stop); the
        reader then takes what is there with :meth:`read_nowait`. It is called after the session
        has handled the input that caused it, never while a stream's data is half handed out, and
        may come again while an earlier call is still running (a reader that writes or closes
        streams): it should notice that and return."""
        self._on_readable = on_readable

    def read_nowait(self, n: int = -1) -> bytes | None:
        """What :meth:`read` would return without waiting: up to ``n`` buffered bytes, ``b""`` at
        EOF, None when nothing is buffered yet; raises as :meth:`read` does."""
        sess = self._session
        st = self._st
        data = sess._core.read(st, n)  # raises the session error once drained
        if data:
            sess._after_read()
            return data
        return b"" if st.at_eof else None

    def unread(self, data: bytes) -> None:
        """Put bytes just returned by :meth:`read` back at the front of the stream: they are read
        again next, hold the session's receive buffer again, and (version 2) the peer is not granted
        window for them until they are read again. For a reader that read more than it may hold."""
        self._session._core.unread(self._st, data)

    async def readexactly(self, n: int) -> bytes:
        """Return exactly ``n`` bytes; raise ``asyncio.IncompleteReadError`` on EOF before that."""
        if n < 0:
            raise MuxUsageError("readexactly needs n >= 0")
        if n == 0:
            return b""
        parts: list[bytes] = []
        need = n
        while need:
            chunk = await self.read(need)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            need -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending (split into frames of at most ``max_frame_size``).

        Raises :class:`~kcprpc.mux.errors.MuxStreamClosedError` after :meth:`close`, and the
        session's :class:`MuxClosedError` if the session is dead.
        """
        sess = self._session
        if type(data) is bytes and sess._write_now(self._st, data):
            return
        sess._core.send(self._st, data)
        sess._kick_writer()

    def writelines(self, chunks: list[bytes]) -> None:
        """Write several buffers in order."""
        for chunk in chunks:
            self.write(chunk)

    def _writable(self) -> bool:
        return self._st.send_bytes <= self._session._send_limit

    async def drain(self) -> None:
        """Wait until the queued data is down to ``stream_send_buffer`` bytes.

        In version 2 this also waits while the peer's window for this stream is closed, which is
        how a slow reader on the other side pushes back on this writer. Raises the session's
        error if the session dies while waiting.
        """
        sess = self._session
        core = sess._core
        while True:
            if core.error is not None:
                raise fresh(core.error)
            if self._writable():
                return
            await self._park(sess._drain_waiters)

    def close(self) -> None:
        """Half-close: FIN goes out after the data written so far. Reading stays possible."""
        st = self._st
        if not st.writable:
            return
        self._session._core.close_stream(st)
        self._session._kick_writer()

    def abort(self) -> None:
        """Full close (smux's ``Stream.Close()``): drop queued and unread data, send FIN, forget the
        stream at once (data the peer still sends is dropped). Reads then raise
        :class:`~kcprpc.mux.errors.MuxStreamClosedError`. For cancellation."""
        sess = self._session
        sess._core.abort_stream(self._st)
        wake(self._read_waiter)
        wake(sess._drain_waiters.get(self))
        sess._pump()
        if self._on_readable is not None:
            self._on_readable()  # its next read_nowait raises

    async def wait_closed(self) -> None:
        """Wait until our FIN has been handed to the transport (or the session died)."""
        st = self._st
        sess = self._session
        while st.fin_unsent:
            if st.writable:
                raise MuxUsageError("wait_closed() before close()")
            await self._park(sess._close_waiters)

    async def __aenter__(self) -> MuxStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class MuxSession:
    """A smux session over a byte transport: many :class:`MuxStream` objects on one connection.

    Create it inside a running event loop. ``client`` picks the stream id parity (odd for the
    client, even for the server, as smux). ``counters`` exposes the core's counters.
    ``read_size`` is the least read from the transport at once: each read asks for
    ``max(read_size, receive tokens left)``, so received bytes held beyond the receive bucket stay
    bounded by ``read_size`` while a wide-open bucket takes everything the transport has buffered
    in one read (asking a KCP session for less than it buffers costs it a copy of the remainder
    on every read); ``write_chunk`` is about the most handed to the transport
    per ``write()`` before awaiting its ``drain()``.
    """

    def __init__(
        self,
        transport: ByteTransport,
        *,
        client: bool,
        config: MuxConfig = _DEFAULT_CONFIG,
        read_size: int = 65536,
        write_chunk: int = 262144,
    ) -> None:
        if not isinstance(config, MuxConfig):
            raise MuxUsageError("config must be a MuxConfig")
        if read_size <= 0 or write_chunk <= 0:
            raise MuxUsageError("read_size and write_chunk must be positive")
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self.config = config
        self.client = client
        self._core = MuxCore(config, client=client, now=self._now())
        self._send_limit = config.stream_send_buffer
        self._read_size = read_size
        self._write_chunk = write_chunk
        self._streams: dict[int, MuxStream] = {}
        self._accept_queue: deque[MuxStream] = deque()
        self._accept_waiters: deque[asyncio.Future[MuxStream]] = deque()
        # streams parked in drain() / wait_closed(), each with the future that wakes it
        self._drain_waiters: dict[MuxStream, asyncio.Future[None]] = {}
        self._close_waiters: dict[MuxStream, asyncio.Future[None]] = {}
        self._send_event = asyncio.Event()
        # Direct writes: while the writer task is parked with nothing to send, a stream's write
        # goes straight to a transport that can say it is below its high water (a KCP session's
        # ``write_ready()``), without waking the task (one task step per session saved on a
        # push to a thousand sessions). Anything else still goes through the writer task.
        self._write_ready: Callable[[], bool] | None = getattr(transport, "write_ready", None)
        held = getattr(transport, "receive_held", None)
        self._transport_held: Callable[[], int] | None = held if callable(held) else None
        backlog = getattr(transport, "send_backlog", None)
        acked = getattr(transport, "send_acked", None)
        self._transport_backlog: Callable[[], int] | None = backlog if callable(backlog) else None
        self._transport_acked: Callable[[], int] | None = acked if callable(acked) else None
        self._writer_idle = False
        self._resume_event = asyncio.Event()
        self._dead = False
        self._closing = False
        self._closed_fut: asyncio.Future[None] = self._loop.create_future()
        # the keepalive wake-up, on the loop's one timer heap (kcp.timers.TimerTarget)
        self._timers = TimerHeap.for_loop(self._loop)
        self._timer_entry = -1  # TimerTarget: kcp.timers.NO_ENTRY
        self._timer_at: int | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        # The direct path: a transport that can hand its input over in the turn that read it (a
        # KCP session's ``set_receiver``) feeds the core from there, and the reader task only
        # takes what the core refused while its receive bucket was empty (one task wake-up less
        # per input); stream readers registered with MuxStream.set_reader get theirs the same way.
        receiver = getattr(transport, "set_receiver", None)
        self._set_receiver: Callable[[Callable[[bytes], bool] | None], None] | None = (
            receiver if callable(receiver) else None
        )
        if self._set_receiver is not None:
            self._set_receiver(self._received)
        self._reader = self._loop.create_task(self._read_loop(), name="mux-reader")
        self._writer = self._loop.create_task(self._write_loop(), name="mux-writer")
        self._arm_timer()
        # counted process-wide (kcprpc.mux.totals); _fold_counters() folds them in when it ends,
        # or when the session is collected: it stands for the session there (the compiled build's
        # MuxSession has no __weakref__ slot; the future lives and dies with the session)
        self._fold_counters = session_opened(self._closed_fut, self._core.counters)

    # -- public API -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the session is dead (closed locally, by EOF, keepalive or protocol error)."""
        return self._core.closed

    @property
    def error(self) -> MuxClosedError | None:
        """Why the session died, or None."""
        return self._core.error

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the session counters (frames, bytes, refusals, protocol errors ...)."""
        c = self._core.counters.snapshot()
        c["streams_open"] = self._core.num_streams
        return c

    def stop_keepalive(self) -> None:
        """Send no more NOPs and never close on silence (:meth:`MuxCore.stop_keepalive`): only when the
        peer agreed, and something else proves liveness both ways."""
        self._core.stop_keepalive()

    def send_backlog(self) -> int:
        """Bytes this side holds for the peer: written to streams and not framed yet (behind closed
        version 2 windows, or waiting for the transport), plus the transport's own
        ``send_backlog()`` when it has one (a KCP session: bytes not acknowledged yet)."""
        tb = self._transport_backlog
        if tb is None:
            return self._core.send_buffered
        return self._core.send_buffered + tb()

    def receive_held(self) -> int:
        """Bytes received from the peer and not read yet: stream buffers, frames not parsed yet,
        plus the transport's own ``receive_held()`` when it has one (a KCP session's queues)."""
        core = self._core
        own = self.config.max_receive_buffer - core.bucket + core.buffered_input
        th = self._transport_held
        return own if th is None else own + th()

    def watch_receive(self, callback: Callable[[], None] | None) -> None:
        """Have the transport call ``callback`` as what it holds out of order grows (a KCP session:
        :meth:`kcp.KCPSession.watch_receive`); a transport without such a buffer never calls it."""
        watch = getattr(self._transport, "watch_receive", None)
        if callable(watch):
            watch(callback)

    @property
    def bytes_sent(self) -> int:
        """Stream payload bytes framed and handed to the transport so far (grows while the peer's
        windows let data out and the transport takes it)."""
        return self._core.counters.bytes_out

    def send_progress(self) -> int:
        """A count that changes when the peer consumes some of what waits for it (only changes
        matter). While the transport holds unacknowledged data, the transport's acknowledgements
        (``send_acked()``: a KCP session's ``snd_una``): framing more behind a stalled transport
        (a pong) is no progress. Otherwise the stream bytes framed: the peer's windows let data out.
        """
        tb, ta = self._transport_backlog, self._transport_acked
        if tb is not None and ta is not None and tb() > 0:
            return (ta() << 1) | 1
        return self._core.counters.bytes_out << 1

    @property
    def num_streams(self) -> int:
        """Streams not yet closed both ways."""
        return self._core.num_streams

    @property
    def transport(self) -> ByteTransport:
        """The underlying byte transport."""
        return self._transport

    async def open_stream(self) -> MuxStream:
        """Open a new stream (sends SYN). Raises :class:`MuxClosedError` if the session is dead."""
        st = self._core.open_stream()
        stream = MuxStream(self, st)
        self._streams[st.stream_id] = stream
        self._kick_writer()
        return stream

    async def accept_stream(self) -> MuxStream:
        """Wait for the next stream opened by the peer. Raises :class:`MuxClosedError` once dead.

        Several coroutines may wait at once; streams are handed out in arrival order.
        """
        if self._accept_queue:
            return self._accept_queue.popleft()
        err = self._core.error
        if err is not None:
            raise fresh(err)
        fut: asyncio.Future[MuxStream] = self._loop.create_future()
        self._accept_waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._accept_queue.appendleft(fut.result())  # handed to us as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._accept_waiters.remove(fut)
            raise

    async def close(self) -> None:
        """Close the session: FIN every stream, flush what the windows allow, close the transport."""
        if self._closing:
            await self.wait_closed()
            return
        self._closing = True
        core = self._core
        if not core.closed:
            core.close()
            with contextlib.suppress(Exception):
                for _ in range(64):  # bounded: data parked behind a closed v2 window is dropped
                    data = core.data_to_send(self._write_chunk)
                    if not data:
                        break
                    self._transport.write(data)
            core.terminate(MuxClosedError("session closed locally"))
            self._pump()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._transport.drain(), 1.0)
        await self._shutdown()

    async def wait_closed(self) -> None:
        """Wait until the session is dead and its tasks have finished."""
        await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> MuxSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals --------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self._loop.time() * 1000)

    def _kick_writer(self) -> None:
        if self._writer_idle and self._write_ready is not None and not self._core.closed:
            self._write_direct(self._write_ready)
        else:
            self._send_event.set()

    def _write_now(self, st: StreamRecord, data: bytes) -> bool:
        """Hand ``data`` to the transport as one frame, bypassing the queue, when the writer is
        idle, the transport takes more and the core can frame it at once (:meth:`MuxCore.frame_now`).
        False: it did not go; queue it."""
        ready = self._write_ready
        if not self._writer_idle or ready is None or not ready():
            return False
        core = self._core
        frame = core.frame_now(st, data)
        if frame is None:
            return False
        try:
            self._transport.write(frame)
        except Exception as exc:
            core.connection_lost(exc)
            self._pump()
        return True

    def _write_direct(self, ready: Callable[[], bool]) -> None:
        core = self._core
        try:
            while ready():
                data = core.data_to_send(self._write_chunk)
                if not data:
                    break
                self._transport.write(data)
                if not core.has_data_to_send():  # the usual case: one write, no second look
                    break
        except Exception as exc:
            core.connection_lost(exc)
            self._pump()
            return
        self._wake_writers()
        if core.has_data_to_send():
            self._send_event.set()  # the transport is full: the writer task waits on drain()

    def _arm_timer(self) -> None:
        at = self._core.next_timer()
        if at == self._timer_at:
            return
        self._timer_at = at
        timers = self._timers
        if at is None:
            timers.cancel(self)
        else:  # the core's clock is the loop's in ms; the heap counts from its own start
            timers.schedule(self, timers.now_ms() + (at - self._now()))

    def _on_timer(self, now: int = 0) -> None:
        """The heap's wake-up (maybe a little early: the core then does nothing, and is re-armed)."""
        self._timer_at = None
        self._core.handle_timer(self._now())
        self._pump()

    def _after_read(self) -> None:
        """After a stream read: tokens came back (maybe resume input) and UPD may be queued."""
        self._pump()

    def _received(self, data: bytes) -> bool:
        """The transport's direct input (``set_receiver``): False while the core takes none, or
        more than the reader task would read at once (what the core holds beyond its receive
        bucket stays within ``read_size``, as with the task)."""
        core = self._core
        if not core.wants_read or len(data) > max(self._read_size, core.bucket):
            return False
        try:
            core.receive_data(data, self._now())
            self._pump()
        except Exception as exc:  # a reader's bug must not reach the transport's input path
            core.connection_lost(exc)
            self._pump()
        return True

    def _pump(self) -> None:
        """Dispatch core events, wake waiters and tasks, call direct readers, re-arm the timer."""
        core = self._core
        ready: list[MuxStream] | None = None
        for ev in core.events():
            if isinstance(ev, (DataReceived, StreamEnded)):  # something to read: data or EOF
                s = self._streams.get(ev.stream_id)
                if s is not None:
                    if s._on_readable is not None:
                        if ready is None:
                            ready = [s]
                        elif s not in ready:
                            ready.append(s)
                    else:
                        wake(s._read_waiter)
            elif isinstance(ev, StreamOpened):
                st = core.get_stream(ev.stream_id)
                if st is not None:
                    stream = MuxStream(self, st)
                    self._streams[ev.stream_id] = stream
                    self._hand_out(stream)
            elif isinstance(ev, WindowUpdated):
                if self._drain_waiters:
                    s = self._streams.get(ev.stream_id)
                    if s is not None:
                        wake(self._drain_waiters.get(s))
            elif isinstance(ev, StreamReleased):
                self._streams.pop(ev.stream_id, None)
            elif isinstance(ev, ConnectionTerminated):
                self._on_dead()
        if not core.closed:
            if core.has_data_to_send():
                self._send_event.set()
            if core.wants_read:
                self._resume_event.set()
            self._arm_timer()
        if ready is not None:  # last: a reader may write, close or read, which pumps again
            for s in ready:
                cb = s._on_readable
                if cb is not None:
                    cb()

    def _hand_out(self, stream: MuxStream) -> None:
        waiters = self._accept_waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(stream)
                return
        self._accept_queue.append(stream)

    def _on_dead(self) -> None:
        if self._dead:
            return
        self._dead = True
        self._fold_counters()  # its counters join the process-wide totals (once)
        self._timers.cancel(self)
        self._timer_at = None
        if self._set_receiver is not None:
            self._set_receiver(None)
        direct = [s._on_readable for s in self._streams.values() if s._on_readable is not None]
        for s in self._streams.values():
            wake(s._read_waiter)
        for waiter in (*self._drain_waiters.values(), *self._close_waiters.values()):
            wake(waiter)
        self._streams.clear()
        err = self._core.error
        while self._accept_waiters:
            fut = self._accept_waiters.popleft()
            if not fut.done() and err is not None:
                fut.set_exception(fresh(err))
        self._send_event.set()
        self._resume_event.set()
        if not self._closing:
            # died underneath us (EOF, keepalive, protocol error): release the transport
            self._shutdown_task = self._loop.create_task(self._shutdown())
        for cb in direct:  # their read_nowait now raises the session's error (or says EOF)
            cb()

    async def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._transport.close()
        current = asyncio.current_task()
        for task in (self._reader, self._writer):
            if task is not current and not task.done():
                task.cancel()
        for task in (self._reader, self._writer):
            if task is not current:
                with contextlib.suppress(BaseException):
                    await task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._transport.wait_closed(), 1.0)
        self._fold_counters()  # in case it never went through _on_dead
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)

    def _wake_writers(self) -> None:
        for s, fut in self._drain_waiters.items():
            if s._writable():
                wake(fut)
        for s, fut in self._close_waiters.items():
            if not s._st.fin_unsent:
                wake(fut)

    async def _read_loop(self) -> None:
        core = self._core
        transport = self._transport
        size = self._read_size
        try:
            while not core.closed:
                if not core.wants_read:
                    self._resume_event.clear()
                    if core.wants_read or core.closed:
                        continue
                    await self._resume_event.wait()
                    continue
                data = await transport.read(max(size, core.bucket))
                if not data:
                    # why the transport ended, when it says (a KCP session closed by its peer does)
                    why = getattr(transport, "close_reason", "")
                    core.connection_lost(None, why if isinstance(why, str) and why != "closed" else "")
                    break
                core.receive_data(data, self._now())
                self._pump()
        except Exception as exc:  # CancelledError is not an Exception: cancellation passes through
            core.connection_lost(exc)
        finally:
            self._pump()

    async def _write_loop(self) -> None:
        core = self._core
        transport = self._transport
        chunk = self._write_chunk
        event = self._send_event
        try:
            while not core.closed:
                self._writer_idle = True
                try:
                    await event.wait()
                finally:
                    self._writer_idle = False
                event.clear()
                while True:
                    data = core.data_to_send(chunk)
                    if not data:
                        break
                    transport.write(data)
                    self._wake_writers()
                    await transport.drain()
                self._wake_writers()
        except Exception as exc:  # CancelledError is not an Exception: cancellation passes through
            core.connection_lost(exc)
        finally:
            self._pump()


__all__ = ["ByteTransport", "MuxSession", "MuxStream", "wake"]
