/**
 * {@link dialSecure}: a KCP session over the secure wire (the Python `kcp.dial(host, port,
 * kcp.SecureWire(...))`). Opens a UDP socket, runs the handshake ({@link secureHandshake}), and
 * builds a `KcpSession` on a {@link SecurePath} with what the handshake negotiated: the conv (from
 * the handshake hash), the MTU, the windows and the FEC shards. The session's `mtu`, `sndWnd` and
 * `rcvWnd` are this client's proposal; the server's policy may lower them.
 */
import { KcpUsageError } from "../kcp/errors.js";
import { DEFAULT_WND, KcpSession, type SessionOptions } from "../kcp/session.js";
import type { Rng } from "./bytes.js";
import type { SecureOptions } from "./config.js";
import { defaultClock, secureHandshake } from "./handshake.js";
import { SecureUdpLink } from "./link.js";
import { SecurePath } from "./path.js";

/** The secure wire, as `dial`'s `wire` option: `{ mode: "secure", passphrase: "..." }` or `{ mode: "secure", serverPublicKey }`. */
export interface SecureWireOptions extends Omit<SecureOptions, "mtu" | "sndWnd" | "rcvWnd"> {
  /** `"secure"`. */
  mode: "secure";
}

/** Options of {@link dialSecure}. */
export interface SecureDialOptions {
  /** The secure wire: identity, FEC and the handshake's knobs. */
  wire: SecureWireOptions;
  /** Session tuning; `mtu`, `sndWnd`, `rcvWnd` (defaults 1400, 512, 512) are proposed in the handshake. */
  session?: SessionOptions;
  /** Randomness for the handshake (default: the OS CSPRNG). */
  rng?: Rng;
  /** Abandon the handshake when this aborts. */
  signal?: AbortSignal;
}

/** Dial `host:port` over the secure wire. Rejects with the handshake's typed error (naming `HOST:PORT` and what to check). */
export async function dialSecure(host: string, port: number, options: SecureDialOptions): Promise<KcpSession> {
  const { wire, session = {} } = options;
  if (wire.mode !== "secure") throw new KcpUsageError(`dialSecure: wire mode ${String(wire.mode)} is not secure`);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new KcpUsageError(`bad port ${port}`);
  const { mode: _mode, ...identity } = wire;
  const mtu = session.mtu ?? 1400;
  const proposal: SecureOptions = {
    ...identity,
    mtu,
    minMtu: Math.min(wire.minMtu ?? 576, mtu),
    sndWnd: session.sndWnd ?? DEFAULT_WND,
    rcvWnd: session.rcvWnd ?? DEFAULT_WND,
  };
  const clock = session.clock ?? defaultClock;
  const link = await SecureUdpLink.open(host, port);
  try {
    const { conn, client } = await secureHandshake(link, proposal, {
      clock,
      ...(options.rng ? { rng: options.rng } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const p = conn.params;
    const path = new SecurePath(link, conn, clock(), client.counters);
    return new KcpSession(path, conn.conv, {
      ...session,
      clock,
      crypt: null,
      mtu: p.mtu,
      sndWnd: p.sndWnd,
      rcvWnd: p.rcvWnd,
      fec: [p.dataShards, p.parityShards],
    });
  } catch (err) {
    link.close();
    throw err;
  }
}

/** The {@link SecurePath} under a secure session, or null for a compat one. */
export function securePathOf(session: KcpSession): SecurePath | null {
  return session.path instanceof SecurePath ? session.path : null;
}

/**
 * Move a secure session to a new UDP socket (a new local port), as a phone changing networks: the
 * server finds the connection by its ID, sees the newest packet from a new address, probes it and
 * follows. Throws {@link KcpUsageError} for a compat session.
 */
export async function rebind(session: KcpSession): Promise<void> {
  const path = securePathOf(session);
  if (path === null || !(path.link instanceof SecureUdpLink)) throw new KcpUsageError("rebind: only a secure session can move to a new socket");
  await path.link.rebind();
  path.ping(session.now());
}
