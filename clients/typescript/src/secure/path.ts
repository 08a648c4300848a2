/**
 * {@link SecurePath}: the secure connection under one KCP session (the Python `kcp/secure_path.py`'s
 * `SecurePath`, client side). Every pipeline datagram (KCP packet, FEC shard, OOB datagram; the
 * pipeline runs without a cipher) is sealed before it goes to the link; every datagram from the
 * link is authenticated and opened first, and only its payload reaches the session. The
 * connection's events are acted on here (a peer's CLOSE or a stateless reset ends the session at
 * once with the reason; GOAWAY is recorded and reported) and handed to event listeners; its
 * timers (old-key expiry, time-based key update) ride on the session's timer.
 */
import type { DatagramLink, Path, PathOwner } from "../kcp/path.js";
import { SecureConnectionClosed } from "./errors.js";
import type { SecureConnection, SecureCounters, SecureEvent } from "./connection.js";
import { FEATURE_ACK_REPEAT, FEATURE_HELD_ACKS, Reason, SECURE_OVERHEAD, reasonText } from "./packet.js";

/** A lost CLOSE costs the peer an idle timeout: it is sent twice. */
export const CLOSE_COPIES = 2;

const LOCAL_CODES: Record<string, number> = {
  "idle timeout": Reason.IDLE_TIMEOUT,
  "dead link": Reason.PROTOCOL_ERROR,
  aborted: Reason.APPLICATION,
};

/** The secure packet path of one dialled session. */
export class SecurePath implements Path {
  /** Always `"secure"`. */
  readonly mode = "secure" as const;
  /** 34 bytes per datagram: header 17, frame type 1, tag 16. */
  readonly overhead = SECURE_OVERHEAD;
  /** Both ends agreed to held acks in the handshake. */
  get heldAcks(): boolean {
    return (this.conn.params.features & FEATURE_HELD_ACKS) !== 0;
  }
  /** Both ends agreed to repeated acks in the handshake. */
  get ackRepeat(): boolean {
    return (this.conn.params.features & FEATURE_ACK_REPEAT) !== 0;
  }
  /** Datagrams not sent to an unvalidated new path (KCP resends them). */
  heldBack = 0;
  /** Datagrams that came from the link and did not authenticate (dropped and counted). */
  rejected = 0;
  /** The peer's GOAWAY [code, message], once received. */
  goawayReceived: [number, string] | null = null;
  private owner: PathOwner | null = null;
  private rekeyDue: number;
  private readonly listeners: ((e: SecureEvent) => void)[] = [];

  /** A path over `link` for the established `conn` (`now`: the session clock). */
  constructor(
    readonly link: DatagramLink,
    readonly conn: SecureConnection,
    now: number,
    /** The handshake's counters (the client's), reported with the connection's. */
    readonly handshakeCounters: SecureCounters | null = null,
  ) {
    this.rekeyDue = now + rekeyAfterMs(conn);
  }

  /** Call `listener` with every event of the connection (path, key update, GOAWAY, close). */
  onEvent(listener: (e: SecureEvent) => void): void {
    this.listeners.push(listener);
  }

  /** See {@link Path.attach}. */
  attach(owner: PathOwner): void {
    this.owner = owner;
    this.link.setReceiver((d) => this.input(d, owner.now()));
    this.flushControl(owner.now());
  }

  /** See {@link Path.send}: seal and send (dropped once the connection is closed). */
  send(datagram: Uint8Array, now: number): void {
    const conn = this.conn;
    if (!conn.isOpen) return;
    let d: Uint8Array;
    try {
      d = conn.seal(datagram, now);
    } catch (err) {
      if (err instanceof SecureConnectionClosed) return;
      throw err;
    }
    if (!conn.pathValidated && !conn.canSend(d.length)) {
      this.heldBack++;
      return;
    }
    this.link.send(d);
    if (conn.pending) this.afterConn(now);
  }

  /** One datagram from the link. Returns true if it authenticated. Never throws on network input. */
  input(datagram: Uint8Array, now: number): boolean {
    const conn = this.conn;
    const before = conn.counters.packetsOpened;
    const payload = conn.open(datagram, conn.peerAddr, now);
    const authentic = conn.counters.packetsOpened !== before;
    if (!authentic && payload === null) this.rejected++;
    const s = this.owner;
    if (s !== null && !s.ended) {
      if (payload !== null) s.feed(payload, now);
      else if (authentic) s.touch(now);
    }
    if (conn.pending) this.afterConn(now);
    return authentic;
  }

  /** Send an authenticated GOAWAY (the peer should open no new streams). */
  goaway(code: number, message: string, now: number): void {
    if (this.conn.isOpen) this.link.send(this.conn.goaway(code, message, now));
  }

  /** A keepalive the peer's transport answers (a `pingAnswered` event to the listeners); false once closed. */
  keepalive(nonce: number, now: number): boolean {
    if (!this.conn.isOpen) return false;
    this.link.send(this.conn.keepalive(now, nonce));
    return true;
  }

  /** An authenticated PING from the current socket (after a rebind: the server moves the path there). */
  ping(now: number): void {
    if (this.conn.isOpen) this.link.send(this.conn.ping(now));
  }

  private afterConn(now: number): void {
    const conn = this.conn;
    for (let ev = conn.nextEvent(); ev !== null; ev = conn.nextEvent()) {
      const s = this.owner;
      if (ev.type === "pathValidated") s?.requestFlush();
      else if (ev.type === "goAwayReceived") this.goawayReceived = [ev.code, ev.message];
      else if (ev.type === "keyUpdated") this.rekeyDue = now + rekeyAfterMs(conn);
      for (const cb of [...this.listeners]) {
        try {
          cb(ev);
        } catch (err) {
          queueMicrotask(() => {
            throw err;
          });
        }
      }
      if (ev.type === "connectionClosed" && ev.byPeer && s !== null && !s.ended) {
        s.peerClosed(now, ev.code, "closed by peer: " + reasonText(ev.code, ev.message));
      }
    }
    this.flushControl(now);
  }

  private flushControl(now: number): void {
    for (const [d] of this.conn.datagramsToSend(now)) this.link.send(d);
  }

  /** See {@link Path.timer}: the connection's timer or the time-based key update. */
  timer(): number {
    if (!this.conn.isOpen) return -1;
    const t = this.conn.getTimer();
    return t === null || this.rekeyDue < t ? this.rekeyDue : t;
  }

  /** See {@link Path.onTimer}. */
  onTimer(now: number): void {
    const conn = this.conn;
    const t = conn.getTimer();
    if (t !== null && now >= t) conn.handleTimer(now);
    if (now >= this.rekeyDue && conn.isOpen) {
      // keys age out even when nothing is sent; a PING carries the new phase so the peer follows
      if (conn.updateKeys(now)) this.link.send(conn.ping(now));
      else this.rekeyDue = now + Math.max(1, keyGraceMs(conn));
    }
    if (conn.pending) this.afterConn(now);
  }

  /** See {@link Path.finish}: an authenticated CLOSE (twice) unless the peer closed first; then the link closes. */
  finish(now: number, code: number | null, reason: string): void {
    const conn = this.conn;
    if (conn.isOpen) {
      const c = code ?? LOCAL_CODES[reason] ?? Reason.NONE;
      const message = reason === "closed" || reason === "" ? "" : reason;
      const pkt = conn.close(c, message, now);
      for (let i = 0; i < CLOSE_COPIES; i++) this.link.send(pkt);
      this.afterConn(now);
    }
    this.owner = null;
    this.link.close();
  }

  /** See {@link Path.addStats}: the connection's counters as `secure_*` (snake case, as the Python session's stats). */
  addStats(out: Record<string, number>): void {
    const total: Record<string, number> = { ...this.conn.counters };
    if (this.handshakeCounters !== null) {
      for (const [k, v] of Object.entries(this.handshakeCounters)) total[k] = (total[k] ?? 0) + v;
    }
    for (const [k, v] of Object.entries(total)) out["secure_" + k.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase())] = v;
    out["secure_held_back"] = this.heldBack;
    out["secure_key_epoch"] = this.conn.epoch;
    out["secure_rejected"] = this.rejected;
  }
}

function rekeyAfterMs(conn: SecureConnection): number {
  return conn.config.rekeyAfterMs;
}

function keyGraceMs(conn: SecureConnection): number {
  return conn.config.keyGraceMs;
}
