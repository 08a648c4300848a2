/**
 * Error types of the KCP layer (mirrors the Python `kcp/errors.py`).
 *
 * Misuse by the caller raises {@link KcpUsageError}. Garbage from the network never raises: it is
 * dropped and counted in a session's stats.
 */

/** Base class of every error the KCP layer raises on purpose. */
export class KcpError extends Error {
  /** An error with `message`. */
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The caller passed an invalid argument, or used an object in a state that forbids it. */
export class KcpUsageError extends KcpError {}

/** The session is closed; the reason is in the message. */
export class ConnectionClosedError extends KcpError {}

/**
 * The host kept answering our datagrams with ICMP "port unreachable" (or host/network
 * unreachable) and nothing came from the peer meanwhile: the server's port is closed (it stopped
 * or restarted elsewhere). Reported after a short confirmation window, not on one ICMP report.
 */
export class PeerUnreachableError extends ConnectionClosedError {}

/** A segment was retransmitted `dead_link` times without an ack: the peer is gone. */
export class DeadLinkError extends ConnectionClosedError {}

/**
 * A compat (kcp-go format) dial reached a server that speaks the secure wire: it answered with a
 * wire hint (docs/security.md, "Wire hints") bound to a datagram we sent. Dial it with the secure wire.
 */
export class WireMismatchError extends ConnectionClosedError {}
