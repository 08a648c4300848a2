/**
 * {@link UdpLink}: a {@link DatagramLink} on one connected `node:dgram` socket (one per dialled
 * session). The secure dial's link (src/secure/link.ts) builds on it and adds `rebind`.
 */
import dgram from "node:dgram";
import { lookup } from "node:dns/promises";
import type { DatagramLink } from "./path.js";

/** Counters a link keeps (errors from the socket are counted, never thrown). */
export interface LinkCounters {
  /** Datagrams sent. */
  sent: number;
  /** Datagrams received. */
  received: number;
  /** Socket errors (send failures, ICMP unreachable reports). */
  errors: number;
}

/** A peer's resolved address. */
export interface LinkRemote {
  /** The IP address `host` resolved to. */
  address: string;
  /** The UDP port. */
  port: number;
  /** The address family. */
  family: 4 | 6;
}

/** A connected UDP socket to one peer. */
export class UdpLink implements DatagramLink {
  /** What the link counted. */
  readonly counters: LinkCounters = { sent: 0, received: 0, errors: 0 };
  /** The last socket error, if any (for diagnostics). */
  lastError: Error | null = null;
  /** The current socket (a subclass may move to a new one). */
  protected socket: dgram.Socket;
  private receiver: ((d: Uint8Array) => void) | null = null;
  private errorListener: ((err: Error & { code?: string }) => void) | null = null;
  private isClosed = false;

  /** Wrap `socket`, already connected to `remote`. */
  protected constructor(
    socket: dgram.Socket,
    /** The peer's address. */
    readonly remote: LinkRemote,
  ) {
    this.socket = socket;
    this.wire(socket);
  }

  /** Resolve `host`, bind a UDP socket of the right family on an ephemeral port, and connect it to `host:port`. */
  static async open(host: string, port: number): Promise<UdpLink> {
    const remote = await UdpLink.resolve(host, port);
    return new UdpLink(await UdpLink.connectSocket(remote), remote);
  }

  /** `host:port` resolved to an address and family. */
  protected static async resolve(host: string, port: number): Promise<LinkRemote> {
    const { address, family } = await lookup(host);
    return { address, port, family: family === 6 ? 6 : 4 };
  }

  /** A new UDP socket on an ephemeral port, connected to `remote`. */
  protected static async connectSocket(remote: LinkRemote): Promise<dgram.Socket> {
    const socket = dgram.createSocket(remote.family === 6 ? "udp6" : "udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.connect(remote.port, remote.address, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return socket;
  }

  /** Route `socket`'s datagrams and errors to this link (those of a socket it has left are dropped). */
  protected wire(socket: dgram.Socket): void {
    socket.on("message", (msg: Buffer) => {
      if (socket !== this.socket) return; // a datagram still queued on a socket we left
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

  /** The local address the socket is bound to. */
  get local(): { address: string; port: number } {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** See {@link DatagramLink.send} (dropped once closed; errors are counted, never thrown). */
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

  /** Call `listener` with each socket error (ICMP reports on the connected socket; replaces any earlier one; null: none). */
  onError(listener: ((err: Error & { code?: string }) => void) | null): void {
    this.errorListener = listener;
  }

  /** See {@link DatagramLink.setReceiver}. */
  setReceiver(receiver: (datagram: Uint8Array) => void): void {
    this.receiver = receiver;
  }

  /** See {@link DatagramLink.close}. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.receiver = null;
    this.errorListener = null;
    this.socket.close();
  }

  /** See {@link DatagramLink.closed}. */
  get closed(): boolean {
    return this.isClosed;
  }
}
