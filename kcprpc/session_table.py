"""The server's resumable sessions (docs/rpc.md, "Resume: the same session after a reconnect"):
who holds a valid resume token, which sessions are detached (their connection lost, kept for a
resume) and in what order, and the check of a resuming HELLO's claim.

:class:`ResumeTable` is bookkeeping only: it never runs a hook and never closes anything; the
server (:class:`kcprpc.Server`) decides what happens to a session the table hands back (evicted,
expired, resumed) and runs the application's hooks.
"""

from __future__ import annotations

import hmac
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from kcprpc.resume import TOKEN_SIZE, parse_claim, resume_proof
from kcprpc.server_config import ServerConfig
from kcprpc.server_session import ServerSession

__all__ = ["EXPIRED", "REFUSED", "RESUME_COUNTERS", "ResumeTable"]

EXPIRED: Final = "session expired"
"""Why a resume failed: the session is gone (its window ended, it was evicted, or never was)."""
REFUSED: Final = "resume refused"
"""Why a resume failed: the claim was malformed, its proof wrong (a forged or used token, another
connection's proof), the peer's identity differs, or ``on_resume`` refused it."""

RESUME_COUNTERS: Final = (
    "sessions_detached",  # connections lost whose session was kept for a resume
    "sessions_resumed",  # ... and taken back by their client
    "sessions_expired",  # ... and gone when their window ended (or was set to 0)
    "resumes_refused",  # resume claims refused: malformed, unknown sid, bad proof, identity, on_resume
    "detached_evicted",  # detached sessions gone at once past max_detached_sessions
)


class ResumeTable:
    """Sessions holding a valid resume token (connected or detached), and the detached ones in the
    order they detached (the oldest is evicted first). ``rng`` draws the tokens."""

    def __init__(
        self, config: ServerConfig, stats: dict[str, int], rng: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.config = config
        self.stats = stats
        self.rng = rng
        self.by_id: dict[str, ServerSession] = {}
        self.detached: OrderedDict[str, ServerSession] = OrderedDict()
        for k in RESUME_COUNTERS:
            stats.setdefault(k, 0)

    @property
    def enabled(self) -> bool:
        """True when sessions may be kept for a resume at all."""
        return bool(self.config.resume_window) and self.config.max_detached_sessions > 0

    def ticket(self, session: ServerSession) -> dict[str, Any] | None:
        """A fresh token for ``session``'s WELCOME (the previous one is void), or None when it
        cannot be resumed (resume off, a window of 0, or a connection without a channel binding)."""
        window = session.resume_window
        if (
            not self.enabled
            or not window
            or window <= 0
            or not session.may_resume
            or session.conn.channel_binding is None
        ):
            self.forget(session)
            return None
        token = self.rng(TOKEN_SIZE)
        session.resume_token = token
        self.by_id[session.id] = session
        return {"token": token, "window_ms": int(window * 1000)}

    def claim(self, new: ServerSession, value: Any) -> tuple[ServerSession, bytes] | str:
        """Check a HELLO's ``resume`` claim arriving on ``new``'s connection. Proven: the session it
        names and the token it used, which is void from now on (the session is out of the detached
        list, its timer stopped). Else :data:`EXPIRED` or :data:`REFUSED` (counted); the session a
        forged claim names is not touched."""
        stats = self.stats
        claim = parse_claim(value)
        if claim is None:
            stats["resumes_refused"] += 1
            return REFUSED
        old = self.by_id.get(claim.sid)
        token = old.resume_token if old is not None else None
        if old is None or token is None or old is new:
            stats["resumes_refused"] += 1
            return EXPIRED
        binding = new.conn.channel_binding
        if binding is None or not hmac.compare_digest(resume_proof(token, claim.sid, binding), claim.proof):
            stats["resumes_refused"] += 1
            return REFUSED
        key = old.peer_public_key
        if key is not None and key != new.peer_public_key:
            stats["resumes_refused"] += 1
            return REFUSED
        self.forget(old)  # the token is used: once
        return old, token

    def put_back(self, session: ServerSession, token: bytes) -> None:
        """A proven resume did not complete (its new connection was lost meanwhile): the session is
        detached again with the token the client still holds (its window starts again)."""
        session.resume_token = token
        self.by_id[session.id] = session
        self.detached[session.id] = session

    def detach(self, session: ServerSession) -> list[ServerSession]:
        """``session`` is detached now: the sessions evicted to make room (the oldest first, no
        longer resumable; the caller ends them)."""
        self.detached[session.id] = session
        evicted: list[ServerSession] = []
        while len(self.detached) > self.config.max_detached_sessions:
            _, oldest = self.detached.popitem(last=False)
            self.forget(oldest)
            evicted.append(oldest)
        return evicted

    def waiting(self, session: ServerSession) -> bool:
        """True while ``session`` is detached and still resumable."""
        return self.detached.get(session.id) is session

    def forget(self, session: ServerSession) -> None:
        """``session`` can no longer be resumed (its token void, out of the detached list, its
        timer stopped)."""
        session.resume_token = None
        if self.by_id.get(session.id) is session:
            del self.by_id[session.id]
        if self.detached.get(session.id) is session:
            del self.detached[session.id]
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
