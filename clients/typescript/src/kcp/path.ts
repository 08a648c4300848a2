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

import { KcpUsageError, WireMismatchError } from "./errors.js";

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
  /** The peer's address, if known (for messages and stats). */
  readonly remote?: { address: string; port: number };
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
  /** True once the engine accepted a packet from the peer (the peer answered). */
  readonly answered?: boolean;
  /** End the session at once with `error` (e.g. a wire hint said the server speaks another wire). */
  fail?(now: number, error: Error, reason: string): void;
}

/** The wire-mode strategy under one session. */
export interface Path {
  /** `"compat"` (kcp-go's format) or `"secure"` (docs/security.md). */
  readonly mode: "compat" | "secure";
  /** Bytes the path adds to each pipeline datagram (0 for compat). */
  readonly overhead: number;
  /** Both ends agreed to held acks (secure mode's handshake; never in compat mode). */
  readonly heldAcks: boolean;
  /** Both ends agreed to repeated acks (secure mode's handshake; never in compat mode). */
  readonly ackRepeat: boolean;
  /** The peer's current address, if known (secure mode: it may move). */
  readonly remote?: { address: string; port: number };
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

/** A wire hint: `0xC4 | version 1 | code | detail | echo (16)` (docs/security.md, "Wire hints"). */
const T_HINT = 0xc4;
const HINT_LEN = 20;
const ECHO_LEN = 16;
/** Hint code: the server speaks the secure wire (codes 1–5 all mean that to a compat dial). */
const HINT_COMPAT_WIRE = 6;
const SENT_LOG = 32;
/** A secure transport packet's first byte (0xC8 | key phase). */
const T_TRANSPORT = [0xc8, 0xc9];

/**
 * A compat dial's conv from 4 random bytes (little-endian, as on the wire), with its first byte
 * moved off a secure transport packet's type (0xC8, 0xC9; flipped to 0xD8, 0xD9). Without
 * encryption a kcp-go datagram starts with its conv, and a secure server answers a datagram that
 * looks like a transport packet for a lost connection with a stateless reset, not a wire hint: such
 * a dial would end as "no answer" (2 in 256) instead of at once with the hint's reason. The Python
 * `kcp.wirehint.compat_conv` does the same.
 */
export function compatConv(random4: Uint8Array): number {
  if (random4.length < 4) throw new KcpUsageError(`compatConv needs 4 random bytes, got ${random4.length}`);
  let b0 = random4[0]!;
  if (T_TRANSPORT.includes(b0)) b0 ^= 0x10;
  return (b0 | (random4[1]! << 8) | (random4[2]! << 16) | (random4[3]! << 24)) >>> 0;
}

/**
 * kcp-go's packet path: pipeline datagrams go to the link unchanged, and every received datagram
 * goes to the session.
 *
 * Until the peer first answers (the engine accepted one of its packets), the path also watches for
 * a wire hint from a secure kcprpc server: a 20-byte `0xC4` datagram whose echo is the start of one
 * of the last 32 datagrams we sent. A bound hint (any code but 6, "compat wire") ends the session
 * at once with {@link WireMismatchError}; an unbound one is counted (`wire_hints_ignored`) and
 * dropped. This is what the Python `kcp.client` does for compat dials.
 */
export class CompatPath implements Path {
  /** Always `"compat"`. */
  readonly mode = "compat" as const;
  /** Compat mode adds nothing beyond the pipeline. */
  readonly overhead = 0;
  /** kcp-go's peers never agreed to held acks. */
  readonly heldAcks = false;
  /** Nor to repeated acks: ikcp and kcp-go refuse a REACK and the rest of its datagram. */
  readonly ackRepeat = false;
  private owner: PathOwner | null = null;
  private sent = 0;
  private sentLog: Uint8Array[] | null = [];
  private hintsIgnored = 0;

  /** A path over `link` (which the path closes when the session finishes). */
  constructor(readonly link: DatagramLink) {}

  /** The link's peer address. */
  get remote(): { address: string; port: number } | undefined {
    return this.link.remote;
  }

  /** See {@link Path.attach}. */
  attach(owner: PathOwner): void {
    this.owner = owner;
    this.link.setReceiver((datagram) => {
      if (owner.ended) return;
      const now = owner.now();
      if (this.sentLog !== null) {
        if (owner.answered) this.sentLog = null; // the peer speaks our wire: stop watching
        else if (datagram.length === HINT_LEN && datagram[0] === T_HINT && this.hint(owner, datagram, now)) return;
      }
      owner.feed(datagram, now);
    });
  }

  private hint(owner: PathOwner, d: Uint8Array, now: number): boolean {
    const code = d[2]!;
    const echo = d.subarray(4);
    const bound = this.sentLog!.some((s) => s.length === ECHO_LEN && s.every((b, i) => b === echo[i]));
    if (d[1] !== 1 || code < 1 || code > 6) return false; // not a hint: the session counts it as garbage
    if (code === HINT_COMPAT_WIRE || !bound || owner.fail === undefined) {
      this.hintsIgnored++;
      return true;
    }
    const r = this.link.remote;
    const where = r === undefined ? "the server" : `the server at ${r.address.includes(":") ? `[${r.address}]` : r.address}:${r.port}`;
    owner.fail(
      now,
      new WireMismatchError(`wrong wire mode: ${where} speaks the secure wire, not kcp-go's: dial it with the secure wire`),
      "wire mismatch",
    );
    return true;
  }

  /** See {@link Path.send}. */
  send(datagram: Uint8Array, _now: number): void {
    this.sent++;
    const log = this.sentLog;
    if (log !== null) {
      log.push(datagram.slice(0, ECHO_LEN));
      if (log.length > SENT_LOG) log.shift();
    }
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
    this.sentLog = null;
    this.link.close();
  }

  /** See {@link Path.addStats}. */
  addStats(out: Record<string, number>): void {
    out["pathOut"] = this.sent;
    out["wireHintsIgnored"] = this.hintsIgnored;
  }
}
