/**
 * The client on the real transport: a {@link KcpSession} (src/kcp/) as the
 * {@link DatagramTransport} under the smux session, and {@link connect}, the package's entry point.
 */
import { dial, type CompatWireOptions, type KcpSession, type SessionOptions } from "../kcp/session.js";
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
  /** @param session the KCP session @param remoteAddress for messages @param channelBinding secure mode's handshake hash */
  constructor(
    readonly session: KcpSession,
    readonly remoteAddress: string,
    readonly channelBinding: Uint8Array | null = null,
  ) {}
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
  /** The wire: compat mode (kcp-go's format; both ends must agree on cipher, key and FEC). */
  wire?: CompatWireOptions;
  /** KCP session tuning. */
  session?: SessionOptions;
  /** smux settings (default: version 2 with 512 KiB windows, as kcprpc servers). */
  mux?: Partial<MuxConfig>;
}

/**
 * Connect to a kcprpc server: `const client = await connect("127.0.0.1", port, { wire: { crypt:
 * "aes", key: "secret" } }); await client.call("quickstart.Greeter", "hello", { name: "ann" })`.
 * Rejects with an {@link RpcError} (UNAVAILABLE when nothing answers within `connectTimeoutMs`,
 * or the server's refusal status); a reconnect (with `reconnect`) dials again the same way.
 */
export async function connect(host: string, port: number, options: ConnectOptions = {}): Promise<Client> {
  if (typeof host !== "string" || !host) throw new UsageError("connect() needs a host");
  const { wire, session, mux, ...clientOptions } = options;
  const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  const connector = async (): Promise<MuxConnection> => {
    const s = await dial(host, port, { ...(wire ? { wire } : {}), ...(session ? { session } : {}) });
    return new MuxConnection(new KcpTransport(s, where), { ...RPC_MUX_CONFIG, ...(mux ?? {}) });
  };
  return Client.connect(connector, clientOptions);
}
