/** {@link UdpLink}: a {@link DatagramLink} on one connected `node:dgram` socket (one per dialled session). */
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

/** A connected UDP socket to one peer. */
export class UdpLink implements DatagramLink {
  /** What the link counted. */
  readonly counters: LinkCounters = { sent: 0, received: 0, errors: 0 };
  /** The last socket error, if any (for diagnostics). */
  lastError: Error | null = null;
  private receiver: ((d: Uint8Array) => void) | null = null;
  private errorListener: ((err: Error & { code?: string }) => void) | null = null;
  private isClosed = false;

  private constructor(
    private readonly socket: dgram.Socket,
    /** The peer's address. */
    readonly remote: { address: string; port: number },
  ) {
    socket.on("message", (msg: Buffer) => {
      this.counters.received++;
      const r = this.receiver;
      if (r !== null) r(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength));
    });
    socket.on("error", (err: Error) => {
      this.counters.errors++;
      this.lastError = err;
      if (this.errorListener !== null) this.errorListener(err);
    });
  }

  /** Resolve `host`, bind a UDP socket of the right family on an ephemeral port, and connect it to `host:port`. */
  static async open(host: string, port: number): Promise<UdpLink> {
    const { address, family } = await lookup(host);
    const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.connect(port, address, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return new UdpLink(socket, { address, port });
  }

  /** The local address the socket is bound to. */
  get local(): { address: string; port: number } {
    const a = this.socket.address();
    return { address: a.address, port: a.port };
  }

  /** See {@link DatagramLink.send}. */
  send(datagram: Uint8Array): void {
    if (this.isClosed) return;
    this.counters.sent++;
    this.socket.send(datagram, (err) => {
      if (err) {
        this.counters.errors++;
        this.lastError = err;
      }
    });
  }

  /** Call `listener` with each socket error (ICMP reports on the connected socket; replaces any earlier one; null: none). */
  onError(listener: ((err: Error & { code?: string }) => void) | null): void {
    this.errorListener = listener;
  }

  /** See {@link DatagramLink.setReceiver}. */
  setReceiver(receiver: (datagram: Uint8Array) => void): void {
    this.receiver = receiver;
  }

  /** See {@link DatagramLink.close}. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.receiver = null;
    this.socket.close();
  }

  /** See {@link DatagramLink.closed}. */
  get closed(): boolean {
    return this.isClosed;
  }
}
