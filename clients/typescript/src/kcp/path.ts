/**
 * How a {@link KcpSession}'s datagrams travel: the packet-path strategy (compat or secure).
 *
 * A session runs the KCP engine and the packet pipeline (crypt, crc32, FEC, OOB; see
 * docs/wire-format/packet.md) the same way in both wire modes. What differs is held by its
 * {@link Path}, mirroring the Python `kcp/path.py`:
 *
 * - {@link CompatPath} (kcp-go's format): pipeline datagrams go to the peer as they are; every
 *   datagram that arrives is handed to the session, and any arrival counts as liveness; there is
 *   no close on the wire.
 * - a secure path (src/secure/): every pipeline datagram is sealed by the secure connection before
 *   it is sent; an arriving datagram is authenticated and opened first, and only the opened payload
 *   is given to {@link PathOwner.feed}; authenticated control traffic without payload calls
 *   {@link PathOwner.touch}; an authenticated CLOSE calls {@link PathOwner.peerClosed}.
 *
 * A secure session is built with the pipeline's cipher off (`crypt: "null"`), since the path does
 * the sealing; FEC may still be on. The path owns its {@link DatagramLink} (the UDP socket) and
 * closes it in {@link Path.finish}.
 *
 * Time: every `now` is the session's clock in milliseconds ({@link PathOwner.now}).
 */

/** A connected datagram link to one peer (one UDP socket per dialled session). */
export interface DatagramLink {
  /** Send one UDP payload to the peer. Never throws for network errors (they are counted). */
  send(datagram: Uint8Array): void;
  /** Set the one function called for every datagram received from the peer (replaces any earlier one). */
  setReceiver(receiver: (datagram: Uint8Array) => void): void;
  /** Release the socket; later sends are dropped. Idempotent. */
  close(): void;
  /** True after {@link close}. */
  readonly closed: boolean;
}

/** What a packet path may do to its session (the session implements this). */
export interface PathOwner {
  /** The session's clock, in milliseconds. */
  now(): number;
  /** True once the session has fully ended. */
  readonly ended: boolean;
  /** One datagram, already opened by the path (a pipeline datagram: KCP packet, FEC shard or OOB). */
  feed(datagram: Uint8Array, now: number): void;
  /** Authenticated traffic without a payload arrived: the peer is alive (resets the idle timer). */
  touch(now: number): void;
  /** Flush the engine soon (at the end of the current turn of the event loop). */
  requestFlush(): void;
  /** The path's MTU changed (a UDP payload size): the engine's MTU becomes this minus all overheads. */
  setMtu(mtu: number): void;
  /** The peer ended the connection (an authenticated CLOSE): the session ends at once. */
  peerClosed(now: number, code: number, reason: string): void;
}

/** The wire-mode strategy under one session. */
export interface Path {
  /** `"compat"` (kcp-go's format) or `"secure"` (docs/security.md). */
  readonly mode: "compat" | "secure";
  /** Bytes the path adds to each pipeline datagram (0 for compat). */
  readonly overhead: number;
  /** Called once by the session's constructor; the path starts delivering received datagrams to `owner`. */
  attach(owner: PathOwner): void;
  /** Send one pipeline datagram (sealed by the pipeline already; the path seals it further if it must). */
  send(datagram: Uint8Array, now: number): void;
  /** When the session should next call {@link onTimer} (session clock, ms), or -1 for never. Asked after every event. */
  timer(): number;
  /** The time given by {@link timer} has come. */
  onTimer(now: number): void;
  /** The session ended (locally, by the peer, or dead link); `code` is the close code if one was given. Close the link here. */
  finish(now: number, code: number | null, reason: string): void;
  /** Add the path's counters to a session's stats. */
  addStats(out: Record<string, number>): void;
}

/** Counters a {@link CompatPath} keeps. */
export interface CompatPathCounters {
  /** UDP payloads handed to the link. */
  pathOut: number;
}

/** kcp-go's packet path: pipeline datagrams go to the link unchanged, and every received datagram goes to the session. */
export class CompatPath implements Path {
  /** Always `"compat"`. */
  readonly mode = "compat" as const;
  /** Compat mode adds nothing beyond the pipeline. */
  readonly overhead = 0;
  private owner: PathOwner | null = null;
  private sent = 0;

  /** A path over `link` (which the path closes when the session finishes). */
  constructor(readonly link: DatagramLink) {}

  /** See {@link Path.attach}. */
  attach(owner: PathOwner): void {
    this.owner = owner;
    this.link.setReceiver((datagram) => {
      if (!owner.ended) owner.feed(datagram, owner.now());
    });
  }

  /** See {@link Path.send}. */
  send(datagram: Uint8Array, _now: number): void {
    this.sent++;
    this.link.send(datagram);
  }

  /** Compat mode has no timers of its own. */
  timer(): number {
    return -1;
  }

  /** Compat mode has no timers of its own. */
  onTimer(_now: number): void {}

  /** Closes the link. */
  finish(_now: number, _code: number | null, _reason: string): void {
    this.owner = null;
    this.link.close();
  }

  /** See {@link Path.addStats}. */
  addStats(out: Record<string, number>): void {
    out["path_out"] = this.sent;
  }
}
