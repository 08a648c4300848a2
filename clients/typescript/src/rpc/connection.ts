/**
 * The connection the RPC client runs on, mirroring kcprpc/transport.py `Connection`: reliable
 * byte streams (mux streams) both ways, unreliable datagrams (KCP OOB), close and events. A
 * {@link MuxConnection} implements it with the smux session over any {@link DatagramTransport}
 * (a KCP session); {@link memoryConnectionPair} implements it in memory for tests.
 */
import { MuxSession, type ByteTransport, type MuxStream } from "../mux/session.js";
import type { MuxConfig } from "../mux/core.js";
import { RPC_MUX_CONFIG } from "../mux/core.js";
import { callGuarded, defaultReporter } from "./guard.js";

/** A reliable ordered byte stream (a mux stream). */
export interface RpcByteStream {
  /** Up to `n` bytes (any amount when omitted); empty at end of stream; throws when the connection died. */
  read(n?: number): Promise<Uint8Array>;
  /** Queue bytes. */
  write(data: Uint8Array): void;
  /** Wait until the write buffer is below its high-water mark. */
  drain(): Promise<void>;
  /** Half-close. */
  close(): void;
  /** Full close: drop queued and unread data. */
  abort(): void;
}

/** Why a connection ended: a message and, when the transport carried one, an RPC status code. */
export interface CloseInfo {
  /** Human-readable reason. */
  reason: string;
  /** An RPC status the transport close carried (secure mode CLOSE code 0x4B00 + status), if any. */
  status?: number;
  /** The peer asked to go away (secure-mode GOAWAY) rather than dropping the link. */
  goaway?: boolean;
  /** The typed error the transport ended with, when it found the peer gone itself (e.g. `PeerUnreachableError`). */
  error?: Error;
}

/** One peer: streams both ways plus datagrams (kcprpc/transport.py `Connection`). */
export interface RpcConnection {
  /** Open a new stream to the peer. */
  openStream(): Promise<RpcByteStream>;
  /** Wait for a stream the peer opened; rejects once closed. */
  acceptStream(): Promise<RpcByteStream>;
  /** Send one unreliable datagram (may be dropped). */
  sendDatagram(data: Uint8Array): void;
  /** Register the receiver of datagrams. */
  onDatagram(cb: (data: Uint8Array) => void): void;
  /** Register the callback run once when the connection ends. */
  onClose(cb: (info: CloseInfo) => void): void;
  /** Largest datagram {@link sendDatagram} carries. */
  readonly maxDatagramSize: number;
  /** True once closed by either side. */
  readonly closed: boolean;
  /** `"secure"`, `"compat"` or null (in memory). */
  readonly wireMode: "secure" | "compat" | null;
  /** Bytes unique to this connection both ends know (secure: the Noise handshake hash), or null. */
  readonly channelBinding: Uint8Array | null;
  /** The peer's address, for messages. */
  readonly remoteAddress: string;
  /** Close the connection and every stream. */
  close(): Promise<void>;
  /** Close at once, dropping unsent and unacknowledged data (a peer that never answered: nothing to linger for), optional. */
  abort?(): Promise<void>;
  /** Transport counters. */
  stats(): Record<string, number>;
  /** Call `cb` when the peer's transport says it drains (secure mode's GOAWAY), optional. */
  onDraining?(cb: (code: number, message: string) => void): void;
  /** Move to a new local socket (secure mode), optional. */
  rebind?(): Promise<void>;
  /** Send a transport keepalive the peer's transport answers by itself (secure mode); false when there is none, optional. */
  ping?(nonce: number): boolean;
  /** Call `cb` with the nonce of each answered {@link ping}, optional. */
  onPingAnswered?(cb: (nonce: number) => void): void;
  /**
   * Datagrams the transport sent so far that show the peer this side is alive (secure mode: its
   * authenticated data and acks, which reset the server's silence check; not its keepalives),
   * optional (absent or 0: the transport's own traffic proves nothing to the peer). The heartbeat
   * counts them as traffic sent: a subscriber whose acks reach the server needs no PING.
   */
  packetsSent?(): number;
  /** Both ends agreed (HELLO and WELCOME `tping`): the mux stops its own keepalive (NOPs, silence check), optional. */
  useTransportKeepalive?(): void;
  /** The server's WELCOME asks for held acks (`ackhold`, ms): hold lone acks once receive-only; false when the transport cannot, optional. */
  holdAcks?(ms: number): boolean;
}

/** What a {@link MuxConnection} runs over: a reliable byte pipe plus datagrams (a KCP session). */
export interface DatagramTransport extends ByteTransport {
  /** Send one datagram (KCP OOB). */
  sendDatagram(data: Uint8Array): void;
  /** Register the receiver of datagrams. */
  onDatagram(cb: (data: Uint8Array) => void): void;
  /** Largest datagram payload. */
  readonly maxDatagramSize: number;
  /** Wire mode. */
  readonly wireMode: "secure" | "compat" | null;
  /** Channel binding (secure: the handshake hash), or null. */
  readonly channelBinding: Uint8Array | null;
  /** The peer's address. */
  readonly remoteAddress: string;
  /** Transport counters. */
  stats?(): Record<string, number>;
  /** Register the close-info callback (a reason and an RPC status for an authenticated CLOSE), optional. */
  onCloseInfo?(cb: (info: CloseInfo) => void): void;
  /** Register the callback for the peer's transport GOAWAY, optional. */
  onDraining?(cb: (code: number, message: string) => void): void;
  /** Move to a new local socket (secure mode), optional. */
  rebind?(): Promise<void>;
  /** Send a transport keepalive (secure mode), optional: see {@link RpcConnection.ping}. */
  ping?(nonce: number): boolean;
  /** Call `cb` with the nonce of each answered {@link ping}, optional. */
  onPingAnswered?(cb: (nonce: number) => void): void;
  /** Datagrams sent that the peer authenticates, optional: see {@link RpcConnection.packetsSent}. */
  packetsSent?(): number;
  /** Resolves once the transport has ended (after its close linger), optional. */
  waitClosed?(): Promise<void>;
  /** End at once, dropping unacknowledged data, optional. */
  abort?(): void;
  /** Held acks (see {@link RpcConnection.holdAcks}), optional. */
  holdAcks?(ms: number): boolean;
}

class StreamAdapter implements RpcByteStream {
  constructor(private readonly s: MuxStream) {}
  read(n = -1): Promise<Uint8Array> {
    return this.s.read(n);
  }
  write(data: Uint8Array): void {
    this.s.write(data);
  }
  drain(): Promise<void> {
    return this.s.drain();
  }
  close(): void {
    this.s.close();
  }
  abort(): void {
    this.s.abort();
  }
}

/** An {@link RpcConnection} made of a smux session over a {@link DatagramTransport}. */
export class MuxConnection implements RpcConnection {
  /** The mux session. */
  readonly mux: MuxSession;
  private closeCbs: Array<(info: CloseInfo) => void> = [];
  private info: CloseInfo | null = null;
  private closeInfo: CloseInfo | null = null;

  /** @param transport the byte pipe and datagrams @param config mux settings (default RPC_MUX_CONFIG) @param now clock */
  constructor(readonly transport: DatagramTransport, config: Partial<MuxConfig> = RPC_MUX_CONFIG, now?: () => number) {
    transport.onCloseInfo?.((i) => {
      this.closeInfo = i;
    });
    this.mux = new MuxSession(transport, { client: true, config, ...(now ? { now } : {}) });
    void this.mux.waitClosed().then(() => {
      const i = this.closeInfo ?? { reason: this.mux.core.error?.message ?? "connection closed" };
      this.info = i;
      const cbs = this.closeCbs;
      this.closeCbs = [];
      // one that throws must not keep the others (the client's: the link is lost) from running
      for (const cb of cbs) callGuarded(defaultReporter, "a connection's close callback", () => cb(i));
    });
  }
  onDraining(cb: (code: number, message: string) => void): void {
    this.transport.onDraining?.(cb);
  }
  async rebind(): Promise<void> {
    if (!this.transport.rebind) throw new Error("this connection cannot move to a new socket");
    await this.transport.rebind();
  }
  ping(nonce: number): boolean {
    return this.transport.ping?.(nonce) ?? false;
  }
  onPingAnswered(cb: (nonce: number) => void): void {
    this.transport.onPingAnswered?.(cb);
  }
  packetsSent(): number {
    return this.transport.packetsSent?.() ?? 0;
  }
  useTransportKeepalive(): void {
    this.mux.stopKeepalive();
  }
  async openStream(): Promise<RpcByteStream> {
    return new StreamAdapter(this.mux.openStream());
  }
  async acceptStream(): Promise<RpcByteStream> {
    return new StreamAdapter(await this.mux.acceptStream());
  }
  sendDatagram(data: Uint8Array): void {
    if (!this.mux.closed) this.transport.sendDatagram(data);
  }
  onDatagram(cb: (data: Uint8Array) => void): void {
    this.transport.onDatagram(cb);
  }
  onClose(cb: (info: CloseInfo) => void): void {
    if (this.info) cb(this.info);
    else this.closeCbs.push(cb);
  }
  get maxDatagramSize(): number {
    return this.transport.maxDatagramSize;
  }
  get closed(): boolean {
    return this.mux.closed;
  }
  get wireMode(): "secure" | "compat" | null {
    return this.transport.wireMode;
  }
  get channelBinding(): Uint8Array | null {
    return this.transport.channelBinding;
  }
  get remoteAddress(): string {
    return this.transport.remoteAddress;
  }
  /** End at once: the transport drops what is unacknowledged, then the mux closes. */
  async abort(): Promise<void> {
    this.transport.abort?.();
    this.mux.close();
  }
  /** Close the mux (queued stream data is handed to the transport first), then wait for the transport's bounded close linger. */
  async close(): Promise<void> {
    this.mux.close();
    await this.transport.waitClosed?.();
  }
  holdAcks(ms: number): boolean {
    return this.transport.holdAcks?.(ms) ?? false;
  }
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.mux.counters)) out[`mux_${k}`] = v;
    return { ...out, ...(this.transport.stats?.() ?? {}) };
  }
}

/** One end of an in-memory byte + datagram pipe. */
export class MemoryTransport implements DatagramTransport {
  /** The other end. */
  peer: MemoryTransport | null = null;
  private dataCb: ((d: Uint8Array) => void) | null = null;
  private closeCb: ((err?: Error) => void) | null = null;
  private dgramCb: ((d: Uint8Array) => void) | null = null;
  private pending: Uint8Array[] = [];
  private paused = false;
  private ended = false;
  /** Datagrams dropped (no receiver, or `dropDatagrams`). */
  droppedDatagrams = 0;
  /** Drop every datagram sent (to test unreliable paths). */
  dropDatagrams = false;
  readonly maxDatagramSize = 1200;
  readonly wireMode = null;
  readonly remoteAddress = "memory";
  /** @param channelBinding shared by both ends */
  constructor(readonly channelBinding: Uint8Array | null = null) {}
  write(data: Uint8Array): void {
    if (this.ended) throw new Error("transport closed");
    const p = this.peer;
    if (!p) return;
    const copy = data.slice();
    queueMicrotask(() => p.deliver(copy));
  }
  private deliver(d: Uint8Array): void {
    if (this.ended) return;
    if (this.paused || !this.dataCb) this.pending.push(d);
    else this.dataCb(d);
  }
  onData(cb: (data: Uint8Array) => void): void {
    this.dataCb = cb;
  }
  onClose(cb: (err?: Error) => void): void {
    this.closeCb = cb;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    while (!this.paused && this.pending.length && this.dataCb) this.dataCb(this.pending.shift() as Uint8Array);
  }
  sendDatagram(data: Uint8Array): void {
    const p = this.peer;
    if (!p || this.dropDatagrams || this.ended) {
      this.droppedDatagrams++;
      return;
    }
    const copy = data.slice();
    queueMicrotask(() => {
      if (p.dgramCb && !p.ended) p.dgramCb(copy);
    });
  }
  onDatagram(cb: (data: Uint8Array) => void): void {
    this.dgramCb = cb;
  }
  close(): void {
    if (this.ended) return;
    this.ended = true;
    const p = this.peer;
    if (p && !p.ended) queueMicrotask(() => p.remoteClosed());
  }
  private remoteClosed(): void {
    if (this.ended) return;
    // deliver what is pending first, then EOF
    this.paused = false;
    this.resume();
    this.ended = true;
    this.closeCb?.();
  }
}

/** Two linked in-memory transports. */
export function memoryTransportPair(channelBinding: Uint8Array | null = null): [MemoryTransport, MemoryTransport] {
  const a = new MemoryTransport(channelBinding);
  const b = new MemoryTransport(channelBinding);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
