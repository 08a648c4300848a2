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
import { Status, RpcError, UsageError } from "./status.js";
import { HandshakeError, HandshakeKeyMismatch, HandshakeRefused, HandshakeWireMismatch } from "../secure/errors.js";
import { Reason } from "../secure/packet.js";
import { PeerUnreachableError } from "../kcp/errors.js";

/** Socket errors that mean the peer's host refuses our datagrams (ICMP unreachable). */
const UNREACHABLE = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"]);

/** A link whose socket errors can be watched (UdpLink, SecureUdpLink). */
interface WatchableLink {
  readonly counters: { received: number };
  onError(listener: ((err: Error & { code?: string }) => void) | null): void;
}
function watchable(link: unknown): link is WatchableLink {
  return typeof link === "object" && link !== null && typeof (link as { onError?: unknown }).onError === "function" && typeof (link as { counters?: unknown }).counters === "object";
}

/** A transport close code `CLOSE_CODE_BASE + status` carries an RPC status (kcprpc/transport.py). */
export const CLOSE_CODE_BASE = 0x4b00;

/** The status a transport close code carries, or undefined. */
export function closeStatus(code: number | null): Status | undefined {
  if (code === null || !(code > CLOSE_CODE_BASE && code <= CLOSE_CODE_BASE + Status.UNAUTHENTICATED)) return undefined;
  return (code - CLOSE_CODE_BASE) as Status;
}

/**
 * The {@link RpcError} a failed secure handshake becomes (kcprpc.net.handshake_error): UNAVAILABLE
 * for nothing listening, no answer, a busy or draining server; UNAUTHENTICATED for a wrong key or
 * a refused token; FAILED_PRECONDITION for a wrong wire mode or refused parameters. The
 * handshake's own typed error is the `cause`.
 */
export function handshakeRpcError(e: HandshakeError): RpcError {
  let status: Status;
  if (e instanceof HandshakeRefused) {
    status = e.code === Reason.BAD_TOKEN ? Status.UNAUTHENTICATED : e.code === Reason.SERVER_BUSY || e.code === Reason.GOING_AWAY ? Status.UNAVAILABLE : Status.FAILED_PRECONDITION;
  } else if (e instanceof HandshakeKeyMismatch) status = Status.UNAUTHENTICATED;
  else if (e instanceof HandshakeWireMismatch) status = Status.FAILED_PRECONDITION;
  else status = Status.UNAVAILABLE;
  const err = new RpcError(status, e.message);
  err.cause = e;
  return err;
}

/** A {@link KcpSession} as the byte pipe and datagrams under a mux. */
export class KcpTransport implements DatagramTransport {
  private dataCb: ((d: Uint8Array) => void) | null = null;
  private drainingCbs: Array<(code: number, message: string) => void> = [];
  private pingCbs: Array<(nonce: number) => void> = [];
  /** Why the transport ended when it was this side's own finding (the peer's port unreachable), else null. */
  failure: Error | null = null;
  /**
   * @param session the KCP session @param remoteAddress for messages @param channelBinding secure mode's handshake hash
   * @param unreachableMs end the session with {@link PeerUnreachableError} once ICMP unreachable reports span this long with nothing received (0: never)
   */
  constructor(
    readonly session: KcpSession,
    readonly remoteAddress: string,
    readonly channelBinding: Uint8Array | null = null,
    unreachableMs = 1000,
  ) {
    securePathOf(session)?.onEvent((e) => {
      if (e.type === "pingAnswered") for (const cb of this.pingCbs) cb(e.nonce);
      else if (e.type === "goAwayReceived") for (const cb of this.drainingCbs) cb(e.code, e.message);
    });
    if (unreachableMs > 0) this.watchUnreachable(unreachableMs);
  }

  /**
   * Surface the peer's port becoming unreachable after the handshake: the host answers with ICMP
   * port unreachable (a connected socket's ECONNREFUSED). One report is only a hint (ICMP is not
   * authenticated), so the session ends only when such reports keep coming for `ms` with no
   * datagram from the peer in between; then it ends with {@link PeerUnreachableError} (the
   * connection's close reason; a client with a reconnect policy reconnects).
   */
  private watchUnreachable(ms: number): void {
    const link = (securePathOf(this.session) ?? (this.session.path as { link?: unknown })).link;
    if (!watchable(link)) return;
    let since: number | null = null;
    let received = link.counters.received;
    link.onError((err) => {
      if (!UNREACHABLE.has(err.code ?? "") || this.session.state !== "open") return;
      const now = performance.now();
      if (since === null || link.counters.received !== received) {
        since = now;
        received = link.counters.received;
        return;
      }
      if (now - since < ms) return;
      link.onError(null);
      this.failure = new PeerUnreachableError(`${this.remoteAddress} is unreachable (${err.code} for ${Math.round(now - since)} ms, nothing received): the server's port is closed`);
      this.session.abort(this.failure.message);
    });
  }
  /** Secure mode: send a transport keepalive that the server's secure layer answers by itself; false in compat mode or once closed. */
  ping(nonce: number): boolean {
    const path = securePathOf(this.session);
    return path !== null && this.session.state === "open" && path.keepalive(nonce, this.session.now());
  }
  /** Secure mode: call `cb` with the nonce of each answered {@link ping}. */
  onPingAnswered(cb: (nonce: number) => void): void {
    this.pingCbs.push(cb);
  }
  /** Secure mode: the session's datagrams out (data, acks, datagrams; not the path's keepalives), which the server authenticates; 0 in compat mode. */
  packetsSent(): number {
    return securePathOf(this.session) === null ? 0 : this.session.counters.outPkts;
  }
  /** Held acks, as the server's WELCOME asks (`ackhold`): see {@link KcpSession.holdAcks}. */
  holdAcks(ms: number): boolean {
    return this.session.holdAcks(ms);
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
  /** Why the KCP session ended ("" while open). */
  get closeReason(): string {
    return this.session.closeReason;
  }
  onCloseInfo(cb: (info: CloseInfo) => void): void {
    this.session.onClose(() => {
      if (this.failure) return cb({ reason: this.failure.message, error: this.failure });
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
  /** End the KCP session at once (no linger). */
  abort(): void {
    if (this.session.state !== "closed") this.session.abort("connect failed");
  }
  /** Resolves when the KCP session has ended (its close lingers while sent data is unacknowledged, `closeLingerMs`). */
  waitClosed(): Promise<void> {
    return new Promise((r) => this.session.onClose(() => r()));
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
   * The wire: `{ mode: "secure", passphrase | psk | serverPublicKey, ... }` (kcprpc servers'
   * default: Noise handshake, parameters and the smux version negotiated), or compat mode
   * `{ mode: "compat", crypt, key, fec }` (kcp-go's format; both ends must agree). Default
   * `{ mode: "secure" }`; a secure wire with no key at all runs anonymously with the public
   * {@link ANONYMOUS_PSK}, as a Python `kcprpc.connect` without `key=` (encrypted, not authenticated).
   */
  wire?: SecureWireOptions | CompatWireOptions;
  /** KCP session tuning. */
  session?: SessionOptions;
  /** smux settings (default: version 2 with 512 KiB windows, as kcprpc servers). */
  mux?: Partial<MuxConfig>;
  /**
   * Other `[host, port]` nodes of the same app (sharing its broker and keys): a connect that finds
   * the first address UNAVAILABLE tries each of them in turn, and after a failed reconnect attempt
   * the next attempt goes to the next node (as Python's `kcprpc.connect(fallbacks=)`).
   */
  fallbacks?: ReadonlyArray<readonly [string, number]>;
}

/**
 * The public PSK of an anonymous secure wire (32 zero bytes): what a kcprpc server without any key,
 * and a client without one, use (Python's `kcprpc.config.ANONYMOUS_PSK`).
 */
export const ANONYMOUS_PSK: Uint8Array = new Uint8Array(32);

function anonymousIfKeyless(wire: SecureWireOptions): SecureWireOptions {
  const keyless = wire.psk === undefined && wire.passphrase === undefined && wire.serverPublicKey === undefined;
  return keyless ? { ...wire, psk: ANONYMOUS_PSK } : wire;
}

/** The connector {@link connect} uses: each call dials a new KCP session (secure or compat) and starts the mux on it. */
export function kcpConnector(host: string, port: number, options: Pick<ConnectOptions, "wire" | "session" | "mux">): () => Promise<MuxConnection> {
  if (typeof host !== "string" || !host) throw new UsageError("connect() needs a host");
  const given = options?.wire ?? { mode: "secure" };
  if (typeof given !== "object" || given === null || (given.mode !== "secure" && given.mode !== "compat")) {
    throw new UsageError('connect(): options.wire is { mode: "secure", passphrase: "..." } (kcprpc servers\' default) or { mode: "compat", crypt, key }');
  }
  const wire = given.mode === "secure" ? anonymousIfKeyless(given) : given;
  const { session, mux } = options ?? {};
  const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  return async (): Promise<MuxConnection> => {
    let s: KcpSession;
    try {
      s = wire.mode === "secure"
        ? await dial(host, port, { wire, ...(session ? { session } : {}) })
        : await dial(host, port, { wire: wire as CompatWireOptions, ...(session ? { session } : {}) });
    } catch (e) {
      throw e instanceof HandshakeError ? handshakeRpcError(e) : e;
    }
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
export async function connect(host: string, port: number, options: ConnectOptions = {}): Promise<Client> {
  const { wire, session, mux, fallbacks, ...clientOptions } = options ?? {};
  const addresses: Array<readonly [string, number]> = [[host, port]];
  if (fallbacks !== undefined) {
    if (!Array.isArray(fallbacks)) throw new UsageError("connect(): fallbacks is an array of [host, port] pairs");
    for (const a of fallbacks) {
      if (!Array.isArray(a) || a.length !== 2 || typeof a[0] !== "string" || !Number.isInteger(a[1]) || a[1] < 1 || a[1] > 65535) {
        throw new UsageError(`connect(): fallbacks are [host, port] pairs, not ${JSON.stringify(a)}`);
      }
      addresses.push([a[0], a[1]]);
    }
  }
  const rest = { ...(wire ? { wire } : {}), ...(session ? { session } : {}), ...(mux ? { mux } : {}) };
  const connectors = addresses.map(([h, p]) => kcpConnector(h, p, rest));
  let at = 0;
  const connector = (): Promise<MuxConnection> => (connectors[at] as () => Promise<MuxConnection>)();
  const rotation = { addresses: addresses.length, rotate: (): void => { at = (at + 1) % addresses.length; } };
  return Client.connect(connector, clientOptions, addresses.length > 1 ? rotation : undefined);
}
