"""Room for a TCP listener's connections in the process's file descriptor limit:
:func:`ensure_fd_limit`.

Each WebSocket connection is a socket, and a process may hold at most ``RLIMIT_NOFILE`` (its soft
limit) of them. Many systems start services with a soft limit of 1,024 (systemd's default) and a
hard limit far above it, so a WebSocket listener with the default ``max_connections`` (10,000)
refused every connection past about 1,000: asyncio's accept failed with ``EMFILE``
(docs/BENCHMARKS.md, "WebSocket connections past the file descriptor limit"). As Go's runtime
does for every program, the listener raises the soft limit toward the hard one when it needs
more, and says so in the log; when even the hard limit is too low it warns, naming the figure.
"""

from __future__ import annotations

import logging

__all__ = ["FD_SLACK", "ensure_fd_limit"]

log = logging.getLogger("kcprpc.web")

FD_SLACK = 256
"""Descriptors kept beyond the connections: the process's own files, sockets and pipes."""


def ensure_fd_limit(connections: int | None, *, what: str = "this listener") -> int | None:
    """Make the soft ``RLIMIT_NOFILE`` hold ``connections`` more sockets (None: as many as the
    hard limit allows) plus :data:`FD_SLACK`; returns the soft limit now in force (None where
    the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # (not a POSIX system)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    need = unlimited if connections is None else connections + FD_SLACK
    if soft == unlimited or (need != unlimited and soft >= need):
        return soft
    target = hard if need == unlimited or (hard != unlimited and hard < need) else need
    if target == unlimited:
        target = max(soft, 1 << 20)  # (no hard limit: a large finite one)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as e:
            log.warning("%s: cannot raise the open file limit from %d to %d: %s", what, soft, target, e)
            return soft
        log.info("%s: open file limit raised from %d to %d (RLIMIT_NOFILE)", what, soft, target)
        soft = target
    if need != unlimited and soft < need:
        log.warning(
            "%s: the open file limit (%d, its hard limit) holds about %d connections, fewer than "
            "max_connections (%d): raise it (ulimit -n, systemd LimitNOFILE=)",
            what,
            soft,
            max(0, soft - FD_SLACK),
            connections,
        )
    return soft
