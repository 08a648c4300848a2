/**
 * {@link dial}: one entry point for both wire modes. `wire: { mode: "secure", ... }` runs the
 * secure handshake ({@link dialSecure}, docs/security.md); anything else is kcp-go's compat wire
 * (the KCP layer's dial, docs/wire-format/packet.md).
 */
import { dial as dialCompat, type DialOptions, type KcpSession } from "./kcp/session.js";
import { dialSecure, type SecureDialOptions } from "./secure/dial.js";

/** Open a KCP session to `host:port` in the wire mode `options.wire` names (default compat). */
export function dial(host: string, port: number, options: DialOptions | SecureDialOptions = {}): Promise<KcpSession> {
  if (options.wire !== undefined && options.wire.mode === "secure") return dialSecure(host, port, options as SecureDialOptions);
  return dialCompat(host, port, options as DialOptions);
}
