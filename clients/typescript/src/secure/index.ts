/** Secure wire mode, client side (docs/security.md): the public pieces. */
export type { Rng } from "./bytes.js";
export { SecureClient, systemRng, refusalText, workerOf, type ClientState, type SecureClientInit } from "./client.js";
export {
  SecureConnection,
  newCounters as newSecureCounters,
  type PeerAddr,
  type SecureEvent,
  type SecureCounters,
  type ConnectionInit,
} from "./connection.js";
export { clientConfig, derivePsk, checkAccepted, type SecureOptions, type ClientConfig, type SessionParams } from "./config.js";
export {
  HandshakeError,
  HandshakeTimeout,
  HandshakeNoAnswer,
  HandshakeUnreachable,
  HandshakeKeyMismatch,
  HandshakePskMismatch,
  HandshakeWireMismatch,
  HandshakeRefused,
  SecureUsageError,
  SecureConnectionClosed,
} from "./errors.js";
export { generateKeypair, publicKeyOf, type SuiteName } from "./noise.js";
export { Reason, reasonName, reasonText, SECURE_OVERHEAD } from "./packet.js";
export { ReplayWindow, REPLAY_OK, REPLAY_DUPLICATE, REPLAY_TOO_OLD } from "./replay.js";
export { SecureUdpLink, hostPort, type SecureLinkCounters } from "./link.js";
export { SecurePath, CLOSE_COPIES } from "./path.js";
export { secureHandshake, type HandshakeInit } from "./handshake.js";
export { dialSecure, rebind, securePathOf, type SecureWireOptions, type SecureDialOptions } from "./dial.js";
