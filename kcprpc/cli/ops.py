"""``kcprpc serve``'s operational options: ``--log-format``, ``--metrics HOST:PORT`` and
``--broker URL`` (docs/deploy.md). Every one, like every other ``serve`` option, can come from a
``KCPRPC_*`` variable (:mod:`kcprpc.cli.env`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from kcprpc.errors import UsageError
from kcprpc.logconfig import LOG_FORMATS
from kcprpc.server import Server

if TYPE_CHECKING:
    from kcprpc.metrics import MetricsServer

__all__ = ["add_ops_args", "metrics_address", "start_endpoint", "use_broker"]


def metrics_address(text: str) -> tuple[str, int]:
    """``argparse`` type of ``--metrics``: ``HOST:PORT`` (``[::]:PORT`` for IPv6; port 0: any free
    one)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 0.0.0.0:9464")
    return host.strip("[]"), int(port)


def add_ops_args(p: argparse.ArgumentParser) -> None:
    """Add ``--log-format``, ``--metrics`` and ``--broker`` to ``serve``'s parser."""
    p.add_argument(
        "--log-format",
        default="text",
        choices=LOG_FORMATS,
        help="text (time LEVEL logger: message) or json (one object per line; docs/logging.md)",
    )
    p.add_argument(
        "--metrics",
        type=metrics_address,
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics and /healthz over HTTP there (needs kcprpc[metrics]; docs/deploy.md)",
    )
    p.add_argument(
        "--broker",
        default=None,
        metavar="URL",
        help="the push broker: memory://, redis://HOST:PORT/DB, rediss://, nats://HOST:PORT "
        "(default: the app's, else memory)",
    )


def use_broker(server: Server, url: str | None) -> None:
    """``--broker URL``: ``server`` publishes through the broker ``url`` names
    (:func:`kcprpc.broker_url.broker_from_url`) instead of the app's. Before the server starts."""
    if url is None:
        return
    from kcprpc.broker_url import broker_from_url
    from kcprpc.push import PushHub

    if server.address is not None:
        raise UsageError("--broker: the server has started already")
    server.push = PushHub(server, broker_from_url(url))


async def start_endpoint(server: Server, where: tuple[str, int] | None) -> MetricsServer | None:
    """``--metrics HOST:PORT``: the started :class:`~kcprpc.metrics.MetricsServer`, or None."""
    if where is None:
        return None
    from kcprpc.metrics import start_metrics

    host, port = where
    try:
        return await start_metrics(server, host, port)
    except OSError as e:
        raise UsageError(f"--metrics: cannot listen on {host}:{port}: {e.strerror or e}") from None
