"""Resume: the parts both ends share (sans-I/O): the proof a client sends to take back its session,
the shape of a HELLO's ``resume`` claim, and the client's local :class:`SessionExpired` event.

A resumable session's WELCOME carries a fresh random 32-byte token (``"resume": {"token",
"window_ms"}``). After a reconnect the client proves it owns the session without sending the
token: ``proof = HMAC-SHA256(token, b"kcprpc-resume-v1" + sid + channel_binding)``, where
``channel_binding`` is the *new* connection's unique binding (secure mode: the Noise handshake
hash). A proof seen on one connection is worthless on another one, and a token works once (the
WELCOME that answers a resume carries the next one). Compat mode has no channel binding: the
server issues no tokens there, and nothing resumes (docs/rpc.md, "Resume").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Final, NamedTuple

from pydantic import BaseModel

from kcprpc.service import event

__all__ = ["RESUME_LABEL", "TOKEN_SIZE", "ResumeClaim", "SessionExpired", "parse_claim", "resume_proof"]

RESUME_LABEL: Final = b"kcprpc-resume-v1"
TOKEN_SIZE: Final = 32
_MAX_SID: Final = 128  # a session id is short ("<pid hex>-<n>"); longer claims are not looked up


def resume_proof(token: bytes, sid: str, channel_binding: bytes) -> bytes:
    """``HMAC-SHA256(token, b"kcprpc-resume-v1" + sid + channel_binding)`` (sid in UTF-8)."""
    return hmac.new(token, RESUME_LABEL + sid.encode() + channel_binding, hashlib.sha256).digest()


class ResumeClaim(NamedTuple):
    """A HELLO's ``resume``: the session id to take back, the proof of owning it, and the number
    of the last numbered direct event the client handled (0: none, or it takes none;
    :mod:`kcprpc.direct_events`)."""

    sid: str
    proof: bytes
    last: int = 0


def parse_claim(value: Any) -> ResumeClaim | None:
    """The claim of a HELLO's ``resume`` field, or None when it is not ``{"sid": str, "proof":
    bin(32), "last"?: int}`` (such a claim is refused and counted, never an exception; a ``last``
    that is not a number in 0 .. 2³² - 1 reads as 0)."""
    if type(value) is not dict:
        return None
    sid, proof, last = value.get("sid"), value.get("proof"), value.get("last")
    if type(sid) is not str or not 0 < len(sid) <= _MAX_SID or type(proof) is not bytes or len(proof) != 32:
        return None
    return ResumeClaim(sid, proof, last if type(last) is int and 0 <= last <= 0xFFFFFFFF else 0)


@event("kcprpc.SessionExpired")
class SessionExpired(BaseModel):
    """A client-side event (nothing crosses the wire): a reconnect could not resume the session
    ``session_id`` (``reason``: ``"session expired"`` after the server's window, or ``"resume
    refused"``), so the client goes on with a fresh session (``client.session_id``); the rooms
    and topics it lost follow as :class:`kcprpc.ResumeFailed` events. ``client.on(SessionExpired,
    ...)`` to hear of it."""

    session_id: str
    reason: str
