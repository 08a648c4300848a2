/**
 * The client on the real transport: a {@link KcpSession} (src/kcp/) as the
 * {@link DatagramTransport} under the smux session, and {@link connect}, the package's entry point.
 */
import { dial } from "../dial.js";
import type { CompatWireOptions, KcpSession, SessionOptions } from "../kcp/session.js";
import { rebind as rebindSecure, securePathOf, type SecureWireOptions } from "../secure/dial.js";
import { RPC_MUX_CONFIG, type MuxConfig } from "../mux/core.js";
import { Client, type ClientOptions } from "./client.js";
import { MuxConnection, type CloseInfo, type DatagramTransport } from "./connection.js";
import { Status, UsageError } from "./status.js";

/** A transport close code `CLOSE_CODE_BASE + status` carries an RPC status (kcprpc/transport.py). */
export const CLOSE_CODE_BASE = 0x4b00;

/** The status a transport close code carries, or undefined. */
export function closeStatus(code: number | null): Status | undefined {
  if (code === null || !(code > CLOSE_CODE_BASE && code <= CLOSE_CODE_BASE + Status.UNAUTHENTICATED)) return undefined;
  return (code - CLOSE_CODE_BASE) as Status;
}

/** A {@link KcpSession} as the byte pipe and datagrams under a mux. */
export class KcpTransport implements DatagramTransport {
  private dataCb: ((d: Uint8Array) => void) | null = null;
  private drainingCbs: Array<(code: number, message: string) => void> = [];
  /** @param session the KCP session @param remoteAddress for messages @param channelBinding secure mode's handshake hash */
  constructor(
    readonly session: KcpSession,
    readonly remoteAddress: string,
    readonly channelBinding: Uint8Array | null = null,
  ) {
    securePathOf(session)?.onEvent((e) => {
      if (e.type === "goAwayReceived") for (const cb of this.drainingCbs) cb(e.code, e.message);
    });
  }
  /** Secure mode: move to a new local UDP socket (the connection and its calls carry on). */
  rebind(): Promise<void> {
    return rebindSecure(this.session);
  }
  /** Secure mode: call `cb` when the server's transport GOAWAY arrives (drain like the RPC GOAWAY). */
  onDraining(cb: (code: number, message: string) => void): void {
    this.drainingCbs.push(cb);
  }
  write(data: Uint8Array): boolean {
    return this.session.write(data);
  }
  drained(): Promise<void> {
    return this.session.drained();
  }
  onData(cb: (data: Uint8Array) => void): void {
    this.dataCb = cb;
    this.session.onData(cb);
  }
  onClose(cb: (err?: Error) => void): void {
    this.session.onClose((err) => cb(err ?? undefined));
  }
  onCloseInfo(cb: (info: CloseInfo) => void): void {
    this.session.onClose(() => {
      const status = closeStatus(this.session.closeCode);
      cb(status === undefined ? { reason: `closed by the server: ${this.session.closeReason}` } : { reason: this.session.closeReason || Status[status], status });
    });
  }
  /** Backpressure: received data stays in the KCP engine (its window closes on the peer). */
  pause(): void {
    this.session.onData(null);
  }
  resume(): void {
    if (this.dataCb) this.session.onData(this.dataCb);
  }
  close(): void {
    if (this.session.state === "open") this.session.close();
  }
  sendDatagram(data: Uint8Array): void {
    if (this.session.state !== "open") return;
    this.session.sendDatagram(data);
  }
  onDatagram(cb: (data: Uint8Array) => void): void {
    this.session.onDatagram(cb);
  }
  get maxDatagramSize(): number {
    return this.session.maxDatagramSize();
  }
  get wireMode(): "secure" | "compat" {
    return this.session.mode;
  }
  stats(): Record<string, number> {
    return this.session.stats;
  }
}

/** Options of {@link connect}: the client's, plus the wire, the KCP session's tuning and the mux. */
export interface ConnectOptions extends ClientOptions {
  /**
   * The wire (required): `{ mode: "secure", passphrase | psk | serverPublicKey, ... }` (kcprpc
   * servers' default: Noise handshake, parameters and the smux version negotiated), or compat mode
   * `{ mode: "compat", crypt, key, fec }` (kcp-go's format; both ends must agree).
   */
  wire: SecureWireOptions | CompatWireOptions;
  /** KCP session tuning. */
  session?: SessionOptions;
  /** smux settings (default: version 2 with 512 KiB windows, as kcprpc servers). */
  mux?: Partial<MuxConfig>;
}

/** The connector {@link connect} uses: each call dials a new KCP session (secure or compat) and starts the mux on it. */
export function kcpConnector(host: string, port: number, options: Pick<ConnectOptions, "wire" | "session" | "mux">): () => Promise<MuxConnection> {
  if (typeof host !== "string" || !host) throw new UsageError("connect() needs a host");
  if (!options || typeof options.wire !== "object" || options.wire === null) {
    throw new UsageError('connect() needs options.wire: { mode: "secure", passphrase: "..." } (kcprpc servers\' default) or { mode: "compat", crypt, key }');
  }
  const { wire, session, mux } = options;
  const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return async (): Promise<MuxConnection> => {
    const s = wire.mode === "secure"
      ? await dial(host, port, { wire, ...(session ? { session } : {}) })
      : await dial(host, port, { wire: wire as CompatWireOptions, ...(session ? { session } : {}) });
    const secure = securePathOf(s);
    const t = new KcpTransport(s, where, secure ? secure.conn.handshakeHash : null);
    // secure mode: the smux version is the one the handshake settled on
    const version = secure ? secure.conn.params.muxVersion : (mux?.version ?? RPC_MUX_CONFIG.version);
    return new MuxConnection(t, { ...RPC_MUX_CONFIG, ...(mux ?? {}), version });
  };
}

/**
 * Connect to a kcprpc server: `const client = await connect("127.0.0.1", port, { wire: { mode:
 * "secure", passphrase: "secret" } }); await client.call("quickstart.Greeter", "hello", { name: "ann" })`.
 * Rejects with an {@link RpcError} (UNAVAILABLE when nothing answers within `connectTimeoutMs`,
 * or the server's refusal status) or the secure handshake's typed error; a reconnect (with
 * `reconnect`) dials again the same way.
 */
export async function connect(host: string, port: number, options: ConnectOptions): Promise<Client> {
  const { wire, session, mux, ...clientOptions } = options ?? ({} as ConnectOptions);
  const connector = kcpConnector(host, port, { wire, ...(session ? { session } : {}), ...(mux ? { mux } : {}) });
  return Client.connect(connector, clientOptions);
}
