/**
 * Errors of secure wire mode (mirrors the Python `kcp/secure/errors.py`).
 *
 * Misuse of the API throws {@link SecureUsageError}. A handshake that cannot complete ends in a
 * {@link HandshakeError} kept on the client (`SecureClient.error`) and thrown by `dialSecure`.
 * Garbage from the network never throws: it is dropped and counted.
 */
import { ConnectionClosedError, KcpError, KcpUsageError } from "../kcp/errors.js";

/** The caller used the secure API wrongly (bad options, sealing on a closed connection...). */
export class SecureUsageError extends KcpUsageError {}

/** The handshake failed. `code` is a {@link Reason} value; the message says what to check. */
export class HandshakeError extends KcpError {
  /** The reason code (0 when none applies). */
  readonly code: number;
  /** An error with `message` and reason `code`. */
  constructor(message: string, code = 0) {
    super(message);
    this.code = code;
  }
}

/** No authenticated reply arrived in time: datagrams came back but none authenticated. */
export class HandshakeTimeout extends HandshakeError {}

/** Not one datagram came back from the server before the timeout (server down, wrong address, firewall). */
export class HandshakeNoAnswer extends HandshakeTimeout {}

/** Nothing listens at the server's address: ICMP "port unreachable" (reported at once). */
export class HandshakeUnreachable extends HandshakeError {}

/** Wrong key: a wire hint bound to our initiation says the server could not verify it (passphrase/PSK or pinned key). */
export class HandshakeKeyMismatch extends HandshakeError {}

/** The server holds the pinned key, but its reply did not authenticate with our PSK. */
export class HandshakePskMismatch extends HandshakeKeyMismatch {}

/** Wrong wire: the server speaks kcp-go's wire (compat) or another secure wire version. */
export class HandshakeWireMismatch extends HandshakeError {}

/** The server answered with an authenticated refusal (bad token, version or parameter mismatch, draining). */
export class HandshakeRefused extends HandshakeError {}

/** The secure connection was closed (locally, by an authenticated CLOSE, or by a stateless reset). */
export class SecureConnectionClosed extends ConnectionClosedError {
  /** The reason code of the close. */
  readonly code: number;
  /** An error with `message` and reason `code`. */
  constructor(message: string, code = 0) {
    super(message);
    this.code = code;
  }
}

/** Internal: a packet or payload does not parse. Never escapes the public entry points. */
export class DecodeError extends Error {}
