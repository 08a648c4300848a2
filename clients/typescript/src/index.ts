/** kcprpc for Node: the public API. */
export const VERSION = "0.1.0";
// smux (src/mux/) and RPC (src/rpc/)
export { MuxCore, MuxClosedError, MuxStreamClosedError, MuxKeepaliveTimeoutError, StreamState, DEFAULT_MUX_CONFIG, RPC_MUX_CONFIG, muxConfig, MUX_COUNTER_NAMES } from "./mux/core.js";
export type { MuxConfig, MuxCounter, MuxEvent, SessionState as MuxSessionState } from "./mux/core.js";
export { MuxSession, MuxStream } from "./mux/session.js";
export type { ByteTransport, MuxSessionOptions } from "./mux/session.js";
export { encodeFrame as encodeMuxFrame, SmuxFrameDecoder, MuxProtocolError, MuxUsageError, CMD_SYN, CMD_FIN, CMD_PSH, CMD_NOP, CMD_UPD } from "./mux/frame.js";
export type { SmuxFrame } from "./mux/frame.js";
export { Status, RpcError, UsageError, statusFromWire } from "./rpc/status.js";
export type { RpcChannel, CallOptions, NotifyOptions, EventInfo, Metadata, ServerStreamCall, BidiCall } from "./rpc/channel.js";
export { FrameType, encodeFrame, decodeDatagram, FrameDecoder, packBody, unpackBody, estimateDecoded, FLAG_END, EVENT_REPLAYED, UNDECODABLE, OVERSIZED, REFUSED } from "./rpc/frames.js";
export type { Frame } from "./rpc/frames.js";
export { MuxConnection, MemoryTransport, memoryTransportPair } from "./rpc/connection.js";
export type { RpcConnection, RpcByteStream, DatagramTransport, CloseInfo } from "./rpc/connection.js";
export { Heartbeat, reconnectDelay } from "./rpc/heartbeat.js";
export type { HeartbeatConfig, ReconnectPolicy } from "./rpc/heartbeat.js";
export { Client, resumeProof, chainInterceptors } from "./rpc/client.js";
export type { ClientOptions, ClientCounters, RawEvent, Position, ClientCallDetails, ClientInterceptor, Rotation } from "./rpc/client.js";
export { FrameBudget, partialFrameLimit, PARTIAL_FRAME_SLACK } from "./rpc/receive.js";

// KCP transport (src/kcp/): engine, compat packet layer, sessions
export { CompatPath } from "./kcp/path.js";
export type { DatagramLink, Path, PathOwner } from "./kcp/path.js";
export { KcpError, KcpUsageError, ConnectionClosedError, DeadLinkError, WireMismatchError, PeerUnreachableError } from "./kcp/errors.js";
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
export type { LinkCounters, LinkRemote } from "./kcp/link.js";
export { KcpSession, compatWire, IdleTimeoutError, KCPGO_INITIAL_RMT_WND } from "./kcp/session.js";
export { BbrLite } from "./kcp/congestion.js";
export type { BbrOptions, CcState } from "./kcp/congestion.js";
export type { SessionOptions, KcpSessionOptions, CompatWireOptions, DialOptions, SessionState } from "./kcp/session.js";
export { connect, kcpConnector, KcpTransport, closeStatus, handshakeRpcError, CLOSE_CODE_BASE } from "./rpc/net.js";
export type { ConnectOptions } from "./rpc/net.js";

// secure wire mode, client side (src/secure/): Noise handshake, AEAD packets, secure dial
export * from "./secure/index.js";
export { dial } from "./dial.js";

// delta state sync, client side (src/state/): schemas, StateView, clientState
export * from "./state/index.js";

// web transports (src/web/): WebTransport and WebSocket, as in the browser bundle (src/browser.ts);
// in Node 20 the global WebSocket needs --experimental-websocket (or pass options.webSocket.WebSocket)
export { connectWeb, discover, webConnector } from "./web/connect.js";
export type { WebConnectOptions, WebConnectorOptions, WebEndpoints, FetchLike } from "./web/connect.js";
export { WebTransportBackoff } from "./web/fallback.js";
export type { WebTransportBackoffPolicy } from "./web/fallback.js";
export { WebSocketTransport } from "./web/websocket.js";
export type { WebSocketTransportOptions } from "./web/websocket.js";
export { WebTransportTransport, certificateHashes } from "./web/webtransport.js";
export type { WebTransportTransportOptions } from "./web/webtransport.js";
export { WEB_CLOSE_CODE_BASE, webCloseStatus, refusalError } from "./web/pipe.js";
export type { WebCounters } from "./web/pipe.js";
export type { WebSocketLike, WebSocketConstructor, WebTransportLike, WebTransportConstructor, CertificateHash } from "./web/dom.js";
