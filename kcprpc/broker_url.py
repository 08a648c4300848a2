"""A broker from a URL: ``kcprpc serve --broker URL`` (``KCPRPC_BROKER``) and
:func:`broker_from_url`.

=================================================  =======================================  ==============
URL                                                broker                                   needs
=================================================  =======================================  ==============
``memory://``                                      :class:`~kcprpc.MemoryBroker` (one       nothing
                                                   process)
``redis://[[user]:password@]host[:port][/db]``,    ``kcprpc.redis_broker.RedisBroker(url)``  ``kcprpc[redis]``
``rediss://...`` (TLS), ``unix:///path.sock``
``nats://[user:password@]host[:port]``,            ``kcprpc.nats_broker.NatsBroker(url)``    ``kcprpc[nats]``
``tls://...`` (NATS over TLS), comma-separated
for a cluster
=================================================  =======================================  ==============

The Redis and NATS brokers are imported only when a URL names them, so a server that uses
neither needs neither client library. The URL goes to the broker unchanged (redis-py and nats.py
read it); other settings (``prefix``, ``history`` ...) are keyword arguments of
:func:`broker_from_url`, or the app builds its broker itself (``Server(broker=RedisBroker(...))``).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from kcprpc.broker import Broker, MemoryBroker
from kcprpc.errors import UsageError

__all__ = ["BROKER_SCHEMES", "broker_from_url"]

BROKER_SCHEMES: dict[str, tuple[str, str, str, str]] = {
    "redis": ("kcprpc.redis_broker", "RedisBroker", "redis", "redis"),
    "rediss": ("kcprpc.redis_broker", "RedisBroker", "redis", "redis"),
    "unix": ("kcprpc.redis_broker", "RedisBroker", "redis", "redis"),
    "nats": ("kcprpc.nats_broker", "NatsBroker", "nats", "nats"),
    "tls": ("kcprpc.nats_broker", "NatsBroker", "nats", "nats"),
}
"""URL scheme -> (module, class, the extra that installs its client library, that library's top
module). ``memory`` is :class:`~kcprpc.MemoryBroker`."""


def _scheme(url: str) -> str:
    first = url.split(",", 1)[0].strip()  # NATS: a comma-separated list of servers
    scheme = urlsplit(first).scheme.lower() if "://" in first else ""
    if scheme != "memory" and scheme not in BROKER_SCHEMES:
        known = ", ".join(["memory://", *(f"{s}://" for s in BROKER_SCHEMES)])
        shown = url if "@" not in url else "<a URL with credentials>"
        raise UsageError(f"broker URL {shown!r}: expected one of {known}")
    return scheme


def broker_from_url(url: str, **options: Any) -> Broker:
    """The broker ``url`` names (the table above), made with ``options`` as keyword arguments.

    Raises :class:`~kcprpc.UsageError`: an unknown scheme, a ``memory://`` URL with more than
    the scheme, or a broker whose module or client library is not installed (naming the extra:
    ``pip install 'kcprpc[redis]'``). Connecting happens later, when the server starts."""
    scheme = _scheme(url)
    if scheme == "memory":
        rest = url.strip()[len("memory://") :]
        if rest:
            raise UsageError(f"broker URL {url!r}: memory:// takes nothing after the scheme")
        return MemoryBroker(**options)
    module_name, cls_name, extra, library = BROKER_SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing == library:
            raise UsageError(
                f"a {scheme}:// broker needs the {library} client library: pip install 'kcprpc[{extra}]'"
            ) from None
        if e.name == module_name:
            raise UsageError(
                f"a {scheme}:// broker needs {module_name}.{cls_name}, which this kcprpc does not have"
            ) from None
        raise
    cls = getattr(module, cls_name)
    broker: Broker = cls(url, **options)
    return broker
