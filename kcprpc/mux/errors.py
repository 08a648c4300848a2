"""Error types of the stream multiplexer (``kcprpc.mux``).

One base, :class:`MuxError`. The subclasses keep three kinds of failure apart:

* :class:`MuxUsageError` (also a ``ValueError``): the caller misused the API, e.g. an invalid
  :class:`~kcprpc.mux.core.MuxConfig` or writing to a stream after closing it for writing.
* :class:`MuxProtocolError`: the peer sent something smux does not allow (unknown version or
  command, a lying length, a window update that acknowledges unsent bytes). The frame decoder raises
  it; the session core catches it at the receive boundary, counts it and closes the session, so it
  never escapes a session's receive path.
* :class:`MuxClosedError` (also a ``ConnectionError``): the session or the stream is gone. The
  message says why (transport EOF, keepalive timeout, local close, protocol error ...).
"""

from __future__ import annotations


class MuxError(Exception):
    """Base class of every error raised on purpose by ``kcprpc.mux``."""


class MuxUsageError(MuxError, ValueError):
    """Invalid argument, invalid configuration or an operation the object's state forbids."""


class MuxTypeError(MuxUsageError, TypeError):
    """A configuration value has the wrong type. It is also a ``TypeError``: the compiled build
    checks annotated types itself and raises a plain ``TypeError`` for the same misuse."""


class MuxProtocolError(MuxError):
    """The peer sent a frame that is not valid smux for this session's version.

    ``kind`` names the violation for counters: ``"bad_version"``, ``"bad_cmd"``, ``"bad_length"``,
    ``"bad_upd"`` ...
    """

    def __init__(self, message: str, kind: str = "protocol_error") -> None:
        super().__init__(message)
        self.kind = kind


class MuxClosedError(MuxError, ConnectionError):
    """The session (or the stream) is closed; the message gives the reason."""


class MuxStreamClosedError(MuxClosedError):
    """The stream was closed for writing by this side (``close()`` already sent FIN)."""


class MuxKeepaliveTimeoutError(MuxClosedError):
    """Nothing arrived from the peer during a whole keepalive timeout: the session was closed."""


def fresh(err: MuxClosedError) -> MuxClosedError:
    """A new exception like ``err`` (same class, message and cause) to raise in its place.

    A session keeps its one :class:`MuxClosedError`; raising that object would hang a traceback on
    it, and the traceback keeps the frames of the reader that saw it alive (its buffers included),
    frames that point back at the session: a cycle only the garbage collector breaks, maybe much
    later. Raising a copy leaves the stored error without a traceback."""
    new = type(err)(*err.args)
    new.__dict__.update(err.__dict__)
    new.__cause__ = err.__cause__
    return new
