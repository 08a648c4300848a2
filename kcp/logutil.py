"""Rate-limited logging for events that a remote peer can trigger at will.

A bad datagram or a refused handshake is counted, and logged at most ``burst`` times per
``interval`` seconds per kind (``key``); the rest are only counted, and the next record that gets
through says how many were left out. Records never carry a traceback (``exc_info``): a peer that
sends junk must not be able to fill the log with stack traces.

Used by :mod:`kcp` and :mod:`kcprpc` alike::

    from kcp.logutil import RateLimitedLog

    _log = RateLimitedLog(logging.getLogger("kcp.secure"), burst=10, interval=60.0)
    _log.warning("refused", "secure handshake from %s refused: %s", addr, reason)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["RateLimitFilter", "RateLimitedLog", "limit_logger"]


class _Window:
    __slots__ = ("count", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.suppressed = 0


class RateLimitedLog:
    """A logger front that lets at most ``burst`` records per ``interval`` seconds through, per key.

    ``clock`` (seconds, monotonic) is injectable for tests. At most ``max_keys`` keys are tracked
    (the least recently used is forgotten), so keys made from peer input cannot grow memory; use
    fixed kinds ("refused", "accept failed") as keys, not addresses.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 64,
    ) -> None:
        if burst < 1 or interval <= 0 or max_keys < 1:
            raise ValueError("RateLimitedLog needs burst >= 1, interval > 0 and max_keys >= 1")
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self.emitted = 0
        """Records that went to the logger."""
        self.suppressed = 0
        """Records left out by the rate limit (all keys, since creation)."""

    def allow(self, key: str) -> int | None:
        """Take one slot for ``key``: None when over the limit (counted as suppressed), else how many
        records of this key were suppressed since the last one that got through."""
        now = self._clock()
        windows = self._windows
        w = windows.get(key)
        if w is None:
            w = windows[key] = _Window(now)
            while len(windows) > self._max_keys:
                windows.popitem(last=False)
        else:
            windows.move_to_end(key)
        if now - w.start >= self.interval:
            w.start = now
            w.count = 0
        if w.count >= self.burst:
            w.suppressed += 1
            self.suppressed += 1
            return None
        w.count += 1
        left_out, w.suppressed = w.suppressed, 0
        return left_out

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``msg % args`` at ``level`` (``exc_info``: with the exception being handled) unless
        ``key`` is over its limit; True if it was logged."""
        if not self.logger.isEnabledFor(level):
            return False
        left_out = self.allow(key)
        if left_out is None:
            return False
        if left_out:
            msg += " (%d similar messages suppressed)"
            args = (*args, left_out)
        self.logger.log(level, msg, *args, exc_info=exc_info or None)
        self.emitted += 1
        return True

    def exception(self, key: str, msg: str, *args: object) -> bool:
        """:meth:`log` at ERROR with the traceback of the exception being handled: for a bug that a
        peer's input can trigger at will (an app handler's), where one traceback per call would
        let it flood the log."""
        return self.log(logging.ERROR, key, msg, *args, exc_info=True)

    def report_exception(
        self, loop: asyncio.AbstractEventLoop, key: str, message: str, exc: BaseException, **context: object
    ) -> bool:
        """Hand ``exc`` (a bug: with its traceback) to ``loop``'s exception handler unless ``key`` is
        over its limit, the message saying how many were left out since; True if it was reported."""
        left_out = self.allow(key)
        if left_out is None:
            return False
        more = f" ({left_out} more not reported)" if left_out else ""
        loop.call_exception_handler({"message": message + more, "exception": exc, **context})
        return True

    def debug(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.DEBUG, key, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)


class RateLimitFilter(logging.Filter):
    """A :class:`RateLimitedLog`'s limit as a filter, for a library's logger that a peer can make
    speak at will (aioquic's ``quic``, the websockets library's): at most ``burst`` records per
    ``interval`` seconds per logger and message template; the next one that gets through says how
    many were left out. ``limit`` keeps the counts (its own logger is not used)."""

    def __init__(self, limit: RateLimitedLog) -> None:
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        left_out = self.limit.allow(f"{record.name}:{template[:100]}")
        if left_out is None:
            return False
        if left_out:
            record.msg = f"{record.msg} (%d similar messages suppressed)"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), left_out)
        return True


def limit_logger(name: str, *, burst: int = 10, interval: float = 60.0) -> RateLimitFilter:
    """Put a :class:`RateLimitFilter` on the logger ``name`` (once: the one already there is
    returned). Only the records logged on that logger itself go through it."""
    logger = logging.getLogger(name)
    for f in logger.filters:
        if isinstance(f, RateLimitFilter):
            return f
    f = RateLimitFilter(RateLimitedLog(logger, burst=burst, interval=interval))
    logger.addFilter(f)
    return f
