"""kcp.logutil.RateLimitedLog: at most ``burst`` records per interval per key (tracebacks only
through ``exception``, limited alike)."""

from __future__ import annotations

import logging

import pytest

from kcp.logutil import RateLimitedLog, RateLimitFilter, limit_logger


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_per_interval_then_a_summary_of_what_was_left_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.logutil"), burst=3, interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.logutil"):
        sent = [log.warning("refused", "attempt %d refused", i) for i in range(1000)]
        assert sent.count(True) == 3 and sent[:3] == [True] * 3
        assert log.suppressed == 997 and log.emitted == 3
        clock.t += 10.0
        assert log.warning("refused", "attempt %d refused", 1000)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "attempt 0 refused",
        "attempt 1 refused",
        "attempt 2 refused",
        "attempt 1000 refused (997 similar messages suppressed)",
    ]
    assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)


def test_keys_are_limited_separately_and_bounded() -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.logutil2"), burst=1, interval=60.0, clock=clock, max_keys=4)
    assert log.allow("a") == 0 and log.allow("a") is None
    assert log.allow("b") == 0  # another kind still gets through
    for i in range(100):
        log.allow(f"k{i}")
    assert len(log._windows) == 4  # peer-driven keys cannot grow memory


def test_a_disabled_level_costs_nothing_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(logging.getLogger("test.logutil3"), burst=5)
    with caplog.at_level(logging.WARNING, logger="test.logutil3"):
        assert not log.debug("x", "hidden")
    assert not caplog.records and log.suppressed == 0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="burst >= 1"):
        RateLimitedLog(logging.getLogger("x"), burst=0)


def test_report_exception_hands_a_few_to_the_loop_then_says_how_many_were_left_out() -> None:
    class Loop:  # stands in for the event loop's exception handler (unit test)
        def __init__(self) -> None:
            self.reports: list[dict[str, object]] = []

        def call_exception_handler(self, context: dict[str, object]) -> None:
            self.reports.append(context)

    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.logutil"), burst=2, interval=10.0, clock=clock)
    loop = Loop()
    exc = ValueError("bug")
    sent = [log.report_exception(loop, "bug", "handling failed", exc, remote=("h", 1)) for _ in range(5)]  # type: ignore[arg-type]
    assert sent == [True, True, False, False, False]
    clock.t += 10.0
    assert log.report_exception(loop, "bug", "handling failed", exc)  # type: ignore[arg-type]
    assert [r["message"] for r in loop.reports] == [
        "handling failed",
        "handling failed",
        "handling failed (3 more not reported)",
    ]
    assert loop.reports[0]["exception"] is exc and loop.reports[0]["remote"] == ("h", 1)


def test_exception_logs_the_traceback_within_the_same_limit(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("test.logutil3"), burst=2, interval=60.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="test.logutil3"):
        for i in range(5):
            try:
                raise KeyError(f"bug {i}")
            except KeyError:
                log.exception("x.Y/z", "handler %s raised", "x.Y/z")
        clock.t += 60.0
        try:
            raise KeyError("bug 5")
        except KeyError:
            assert log.exception("x.Y/z", "handler %s raised", "x.Y/z")
    assert [r.getMessage() for r in caplog.records] == [
        "handler x.Y/z raised",
        "handler x.Y/z raised",
        "handler x.Y/z raised (3 similar messages suppressed)",
    ]
    assert [str(r.exc_info[1]) for r in caplog.records if r.exc_info] == ["'bug 0'", "'bug 1'", "'bug 5'"]
    assert all(r.levelno == logging.ERROR for r in caplog.records)


def test_a_library_logger_is_limited_per_message_template(caplog: pytest.LogCaptureFixture) -> None:
    """RateLimitFilter on a library's logger (aioquic's ``quic``, websockets'): a peer that makes
    it log a warning per connection gets ``burst`` records per template and interval, then one
    that says how many were left out; other templates have their own share; limit_logger puts
    one filter on a logger, once."""
    clock = Clock()
    name = "test.logutil.library"
    lib = logging.getLogger(name)
    f = RateLimitFilter(RateLimitedLog(lib, burst=2, interval=10.0, clock=clock))
    lib.addFilter(f)
    try:
        with caplog.at_level(logging.INFO, logger=name):
            for i in range(50):
                lib.warning("No common ALPN protocols (%d)", i)
                lib.info("Stream %d reset by peer", i)
            clock.t += 10.0
            lib.warning("No common ALPN protocols (%d)", 50)
        messages = [r.getMessage() for r in caplog.records]
        assert messages == [
            "No common ALPN protocols (0)",
            "Stream 0 reset by peer",
            "No common ALPN protocols (1)",
            "Stream 1 reset by peer",
            "No common ALPN protocols (50) (48 similar messages suppressed)",
        ]
    finally:
        lib.removeFilter(f)
    other = "test.logutil.once"
    assert limit_logger(other) is limit_logger(other)
    assert sum(isinstance(x, RateLimitFilter) for x in logging.getLogger(other).filters) == 1
