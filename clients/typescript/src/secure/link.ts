/**
 * {@link SecureUdpLink}: the UDP socket under a secure dial. A {@link UdpLink} (src/kcp/link.ts):
 * socket errors reach a listener (ICMP "port unreachable" ends a handshake at once with
 * `HandshakeUnreachable`), plus {@link SecureUdpLink.rebind}, which moves to a fresh socket (a new
 * local port, as a phone changing networks) while the secure connection, found by connection ID,
 * stays the same.
 */
import { UdpLink, type LinkCounters } from "../kcp/link.js";

/** Counters a secure link keeps (socket errors are counted, never thrown). */
export interface SecureLinkCounters extends LinkCounters {
  /** Times the link moved to a new socket. */
  rebinds: number;
}

/** `HOST:PORT` (IPv6 in brackets), as the error messages name a server. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** A connected UDP socket to one server that can move to a new local socket. */
export class SecureUdpLink extends UdpLink {
  /** What the link counted. */
  override readonly counters: SecureLinkCounters = { sent: 0, received: 0, errors: 0, rebinds: 0 };

  /** Resolve `host`, bind a UDP socket on an ephemeral port and connect it to `host:port`. */
  static override async open(host: string, port: number): Promise<SecureUdpLink> {
    const remote = await UdpLink.resolve(host, port);
    return new SecureUdpLink(await UdpLink.connectSocket(remote), remote);
  }

  /** The server as `HOST:PORT`. */
  get peer(): string {
    return hostPort(this.remote.address, this.remote.port);
  }

  /** Move to a new socket (a new local port) connected to the same server; the old one is closed. */
  async rebind(): Promise<void> {
    if (this.closed) return;
    const fresh = await UdpLink.connectSocket(this.remote);
    if (this.closed) {
      fresh.close();
      return;
    }
    const old = this.socket;
    this.socket = fresh;
    this.wire(fresh);
    this.counters.rebinds++;
    old.close();
  }
}
