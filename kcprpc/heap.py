"""Giving freed memory back to the OS after a burst: :func:`trim_soon` (debounced ``malloc_trim``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TRIM_AFTER = 1024 * 1024
"""A frame reservation this large, given back, asks for :func:`trim_soon`."""

CONNECTION_HEAP = 48 * 1024
"""About what an ended connection hands back to the heap on the server (its KCP session, mux and
session state: 256 idle secure connections held 15 MB in ``bench/abuse.py --only
connection-hoard``), counted towards :data:`TRIM_AFTER`: a wave of about 20 disconnects asks for a
trim."""


class _Trimmer:
    """glibc keeps the memory of freed buffers (the holes of a fragmented heap, large chunks below its
    moving mmap threshold) and so the process's RSS stays at its peak after a burst of large frames.
    ``malloc_trim(0)`` gives the free pages back; this runs it a second after it was asked for, then
    every 2 s until 10 s after the last ask (a no-op where the C library has no ``malloc_trim``). A
    trim of a ~100 MB heap takes ~1-3 ms."""

    def __init__(self) -> None:
        self._fn: Callable[[int], int] | None = None
        self._loaded = False
        self._handle: asyncio.TimerHandle | None = None
        self._late: asyncio.TimerHandle | None = None
        self._asked = 0.0
        self.runs = 0
        self.seconds = 0.0  # time spent in malloc_trim

    def _load(self) -> Callable[[int], int] | None:
        if not self._loaded:
            self._loaded = True
            try:
                import ctypes
                import ctypes.util

                name = ctypes.util.find_library("c")
                fn = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
                if fn is not None:
                    fn.argtypes = [ctypes.c_size_t]
                    fn.restype = ctypes.c_int
                    self._fn = fn
            except (OSError, AttributeError):
                self._fn = None
        return self._fn

    def soon(self) -> None:
        if self._load() is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no running loop (a test driving the budget by hand)
            return
        self._asked = loop.time()
        if self._handle is None:
            self._handle = loop.call_later(1.0, self._run)

    def after_close(self) -> None:
        """A connection that held large buffers ended: trim once things settled (its transport's
        buffers go a little later than its streams'); a later close pushes this back."""
        if self._load() is None:
            return
        if self._late is not None:
            self._late.cancel()
        try:
            self._late = asyncio.get_running_loop().call_later(3.0, self._run_late)
        except RuntimeError:
            self._late = None

    def _run_late(self) -> None:
        self._late = None
        self._run(False)

    def _run(self, debounced: bool = True) -> None:
        if debounced:
            self._handle = None
        fn = self._fn
        if fn is not None:
            t0 = time.perf_counter()
            fn(0)
            self.runs += 1
            self.seconds += time.perf_counter() - t0
        if debounced:
            # what was asked for may still be on its way out (a burst of data being dropped):
            # keep trimming every 2 s until 10 s after the last ask
            loop = asyncio.get_running_loop()
            if loop.time() - self._asked < 10.0:
                self._handle = loop.call_later(2.0, self._run)


trimmer = _Trimmer()


def trim_soon() -> None:
    """Ask the C allocator to return free memory to the OS about a second from now (debounced)."""
    trimmer.soon()
