/**
 * {@link SecureUdpLink}: the UDP socket under a secure dial. A `DatagramLink` (src/kcp/path.ts) on
 * one connected `node:dgram` socket, plus what the secure dial needs besides: socket errors reach
 * a listener (ICMP "port unreachable" ends a handshake at once with `HandshakeUnreachable`), and
 * {@link SecureUdpLink.rebind} moves to a fresh socket (a new local port, as a phone changing
 * networks) while the secure connection, found by connection ID, stays the same.
 */
import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import type { DatagramLink } from "../kcp/path.js";

/** Counters a link keeps (socket errors are counted, never thrown). */
export interface SecureLinkCounters {
  /** Datagrams sent. */
  sent: number;
  /** Datagrams received. */
  received: number;
  /** Socket errors (send failures, ICMP reports). */
  errors: number;
  /** Times the link moved to a new socket. */
  rebinds: number;
}

/** `HOST:PORT` (IPv6 in brackets), as the error messages name a server. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A connected UDP socket to one server that can move to a new local socket. */
export class SecureUdpLink implements DatagramLink {
  /** What the link counted. */
  readonly counters: SecureLinkCounters = { sent: 0, received: 0, errors: 0, rebinds: 0 };
  /** The last socket error, if any. */
  lastError: Error | null = null;
  private socket: dgram.Socket;
  private receiver: ((d: Uint8Array) => void) | null = null;
  private errorListener: ((err: Error & { code?: string }) => void) | null = null;
  private isClosed = false;

  private constructor(
    socket: dgram.Socket,
    /** The server's resolved address. */
    readonly remote: { address: string; port: number; family: 4 | 6 },
  ) {
    this.socket = socket;
    this.wire(socket);
  }

  /** The server as `HOST:PORT`. */
  get peer(): string {
    return hostPort(this.remote.address, this.remote.port);
  }

  private static async connect(address: string, port: number, family: 4 | 6): Promise<dgram.Socket> {
    const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.connect(port, address, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return socket;
  }

  /** Resolve `host`, bind a UDP socket on an ephemeral port and connect it to `host:port`. */
  static async open(host: string, port: number): Promise<SecureUdpLink> {
    const { address, family } = await lookup(host);
    const fam = family === 6 ? 6 : 4;
    return new SecureUdpLink(await SecureUdpLink.connect(address, port, fam), { address, port, family: fam });
  }

  private wire(socket: dgram.Socket): void {
    socket.on("message", (msg: Buffer) => {
      if (socket !== this.socket) return; // a datagram still queued on the socket we left
      this.counters.received++;
      const r = this.receiver;
      if (r !== null) r(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
    });
    socket.on("error", (err: Error) => {
      this.counters.errors++;
      this.lastError = err;
      if (socket === this.socket && this.errorListener !== null) this.errorListener(err);
    });
  }

  /** The local address of the current socket. */
  get local(): { address: string; port: number } {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** Send one datagram to the server (dropped once closed; errors are counted). */
  send(datagram: Uint8Array): void {
    if (this.isClosed) return;
    this.counters.sent++;
    try {
      this.socket.send(datagram, (err) => {
        if (err) {
          this.counters.errors++;
          this.lastError = err;
        }
      });
    } catch (err) {
      this.counters.errors++;
      this.lastError = err as Error;
    }
  }

  /** See `DatagramLink.setReceiver`. */
  setReceiver(receiver: (datagram: Uint8Array) => void): void {
    this.receiver = receiver;
  }

  /** Call `listener` with each error of the current socket (replaces any earlier one; null: none). */
  onError(listener: ((err: Error & { code?: string }) => void) | null): void {
    this.errorListener = listener;
  }

  /** Move to a new socket (a new local port) connected to the same server; the old one is closed. */
  async rebind(): Promise<void> {
    if (this.isClosed) return;
    const fresh = await SecureUdpLink.connect(this.remote.address, this.remote.port, this.remote.family);
    if (this.isClosed) {
      fresh.close();
      return;
    }
    const old = this.socket;
    this.socket = fresh;
    this.wire(fresh);
    this.counters.rebinds++;
    old.close();
  }

  /** Release the socket; later sends are dropped. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.receiver = null;
    this.errorListener = null;
    this.socket.close();
  }

  /** True after {@link close}. */
  get closed(): boolean {
    return this.isClosed;
  }
}
