/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";

// KCP transport (src/kcp/): engine, compat packet layer, sessions
export { CompatPath } from "./kcp/path.js";
export type { DatagramLink, Path, PathOwner } from "./kcp/path.js";
export { KcpError, KcpUsageError, ConnectionClosedError, DeadLinkError, WireMismatchError } from "./kcp/errors.js";
export { Kcp, getConv, newEngineCounters, IKCP_OVERHEAD } from "./kcp/engine.js";
export type { EngineCounters, KcpOutput } from "./kcp/engine.js";
export { newCounters } from "./kcp/counters.js";
export type { Counters } from "./kcp/counters.js";
export { deriveKey, newCrypt, crc32, CRYPT_NAMES } from "./kcp/crypt.js";
export type { CryptName, PacketCrypt, BlockCrypt, AeadCrypt } from "./kcp/crypt.js";
export { FecEncoder, FecDecoder } from "./kcp/fec.js";
export { ReedSolomon } from "./kcp/rs.js";
export { Pipeline, KIND_KCP, KIND_OOB, KIND_KCP_RECOVERED, defaultRandom } from "./kcp/pipeline.js";
export type { Opened, RandomSource } from "./kcp/pipeline.js";
export { UdpLink } from "./kcp/link.js";
export type { LinkCounters } from "./kcp/link.js";
export { KcpSession, compatWire, IdleTimeoutError, KCPGO_INITIAL_RMT_WND } from "./kcp/session.js";
export type { SessionOptions, KcpSessionOptions, CompatWireOptions, DialOptions, SessionState } from "./kcp/session.js";

// secure wire mode, client side (src/secure/): Noise handshake, AEAD packets, secure dial
export * from "./secure/index.js";
export { dial } from "./dial.js";
