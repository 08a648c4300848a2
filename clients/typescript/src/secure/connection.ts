/**
 * An established secure connection (client side; the Python `kcp/secure/connection.py`): seal and
 * open transport packets, the replay window, key updates in both directions, PING / PING_ACK, path
 * challenges, CLOSE, GOAWAY, DATA_PART reassembly and stateless resets.
 *
 * Sans-I/O: every method takes `now` (ms); control datagrams wait in {@link SecureConnection.datagramsToSend},
 * events in {@link SecureConnection.nextEvent}. Nothing from the network throws: bad datagrams
 * are dropped and counted in {@link SecureConnection.counters}.
 */
import { concat, equal, readU32be, readU64be, u64be, type Rng } from "./bytes.js";
import type { ClientConfig, SessionParams } from "./config.js";
import { SecureConnectionClosed, SecureUsageError } from "./errors.js";
import { EpochKeys } from "./keys.js";
import type { CipherSuite } from "./noise.js";
import {
  CID_LEN,
  F_CLOSE,
  F_DATA,
  F_DATA_PART,
  F_GOAWAY,
  F_PATH_CHALLENGE,
  F_PATH_RESPONSE,
  F_PING,
  F_PING_ACK,
  FEATURE_DATA_PARTS,
  MAX_PARTS,
  MIN_TRANSPORT,
  PART_HEADER,
  PART_OVERHEAD,
  PROBE_ID_LEN,
  RESET_TOKEN_LEN,
  Reason,
  T_TRANSPORT,
  TAG_LEN,
  TRANSPORT_HEADER,
  decodeReasonFrame,
  encodeReasonFrame,
  isTransportType,
} from "./packet.js";
import { REPLAY_OK, REPLAY_TOO_OLD, ReplayWindow } from "./replay.js";

/** A peer address as the transport knows it (e.g. `"127.0.0.1:4000"`); compared by value. */
export type PeerAddr = string;

/** What a connection reports (the Python `kcp/secure/events.py`). */
export type SecureEvent =
  | { readonly type: "pathChanged"; readonly old: PeerAddr; readonly new: PeerAddr }
  | { readonly type: "pathValidated"; readonly addr: PeerAddr }
  | { readonly type: "pathFailed"; readonly addr: PeerAddr; readonly revertedTo: PeerAddr }
  | { readonly type: "keyUpdated"; readonly epoch: number; readonly byPeer: boolean }
  | { readonly type: "connectionClosed"; readonly code: number; readonly message: string; readonly byPeer: boolean }
  | { readonly type: "goAwayReceived"; readonly code: number; readonly message: string }
  /** The peer answered our {@link SecureConnection.keepalive} `nonce`. */
  | { readonly type: "pingAnswered"; readonly nonce: number };

/** Counters of a secure client and its connection (names as the Python `SecureCounters`, camel-cased). */
export interface SecureCounters {
  /** Handshakes started. */ handshakesInitiated: number;
  /** Initiations sent (first copies, retransmissions, with a cookie). */ initiationsSent: number;
  /** Handshakes completed. */ handshakesCompleted: number;
  /** Handshakes failed. */ handshakesFailed: number;
  /** RETRY cookies received. */ retriesReceived: number;
  /** Wire hints taken. */ hintsReceived: number;
  /** Wire hints dropped (not bound to our initiation, or malformed). */ hintsIgnored: number;
  /** Handshake answers that did not decrypt. */ handshakeDecryptErrors: number;
  /** Transport packets sealed. */ packetsSealed: number;
  /** Transport packets authenticated. */ packetsOpened: number;
  /** Datagrams too short. */ shortPackets: number;
  /** Datagrams of an unexpected type. */ badType: number;
  /** Datagrams for another connection ID. */ unknownCid: number;
  /** Datagrams that did not authenticate. */ decryptErrors: number;
  /** Duplicates dropped by the replay window. */ replayDuplicates: number;
  /** Packets older than the replay window. */ replayTooOld: number;
  /** Malformed frames. */ frameErrors: number;
  /** Datagrams after the connection closed. */ afterClose: number;
  /** Key updates we started. */ keyUpdates: number;
  /** Key updates the peer started. */ keyUpdatesByPeer: number;
  /** Packets opened with the previous epoch's key. */ prevKeyUsed: number;
  /** Peer address changes. */ pathChanges: number;
  /** New paths validated. */ pathValidated: number;
  /** New paths given up. */ pathFailed: number;
  /** PATH_CHALLENGEs sent. */ pathChallengesSent: number;
  /** CLOSEs sent. */ closesSent: number;
  /** CLOSEs received. */ closesReceived: number;
  /** GOAWAYs sent. */ goawaysSent: number;
  /** GOAWAYs received. */ goawaysReceived: number;
  /** Stateless resets received. */ statelessResetsReceived: number;
  /** MTU probes answered with a PING_ACK. */ mtuProbesAnswered: number;
  /** PING_ACKs received. */ mtuProbeAcks: number;
  /** DATA_PART pieces received. */ partsReceived: number;
  /** Bad DATA_PART pieces dropped. */ partErrors: number;
  /** Incomplete payloads given up. */ partsDropped: number;
  /** Payloads reassembled. */ partsReassembled: number;
  /** Payloads split into pieces. */ payloadsSplit: number;
  /** DATA_PART pieces sent. */ partsSent: number;
}

/** A fresh set of zero counters. */
export function newCounters(): SecureCounters {
  return {
    handshakesInitiated: 0, initiationsSent: 0, handshakesCompleted: 0, handshakesFailed: 0, retriesReceived: 0,
    hintsReceived: 0, hintsIgnored: 0, handshakeDecryptErrors: 0, packetsSealed: 0, packetsOpened: 0,
    shortPackets: 0, badType: 0, unknownCid: 0, decryptErrors: 0, replayDuplicates: 0, replayTooOld: 0,
    frameErrors: 0, afterClose: 0, keyUpdates: 0, keyUpdatesByPeer: 0, prevKeyUsed: 0, pathChanges: 0,
    pathValidated: 0, pathFailed: 0, pathChallengesSent: 0, closesSent: 0, closesReceived: 0, goawaysSent: 0,
    goawaysReceived: 0, statelessResetsReceived: 0, mtuProbesAnswered: 0, mtuProbeAcks: 0, partsReceived: 0,
    partErrors: 0, partsDropped: 0, partsReassembled: 0, payloadsSplit: 0, partsSent: 0,
  };
}

/** Payloads in DATA_PART reassembly at once; a new one evicts the oldest. */
export const MAX_PENDING_PARTS = 8;
/** An incomplete payload older than this is dropped when the next piece arrives (ms). */
export const PART_TIMEOUT_MS = 2000;
/** Answered probe ids kept until taken. */
export const MAX_PROBE_ACKS = 64;
const PMTUD_LIMIT = 2048;

interface Partial {
  count: number;
  got: number;
  nbytes: number;
  pieces: (Uint8Array | null)[];
  started: number;
}

/** Everything a {@link SecureConnection} is built from (the handshake's outcome). */
export interface ConnectionInit {
  /** The client's configuration. */
  config: ClientConfig;
  /** The negotiated cipher suite. */
  suite: CipherSuite;
  /** Our send secret (Noise Split's first for the initiator). */
  sendSecret: Uint8Array;
  /** Our receive secret. */
  recvSecret: Uint8Array;
  /** The connection ID the server puts on packets to us. */
  localCid: Uint8Array;
  /** The connection ID we put on packets to the server (its byte 0 may be a worker index). */
  remoteCid: Uint8Array;
  /** The server's address. */
  peerAddr: PeerAddr;
  /** The negotiated parameters. */
  params: SessionParams;
  /** Random bytes (path challenges). */
  rng: Rng;
  /** Now (ms). */
  now: number;
  /** The connection's counters (default: its own, as the Python connection's; the handshake's stay on the client). */
  counters?: SecureCounters;
  /** The server's static key (IKpsk2), or null. */
  peerStatic: Uint8Array | null;
  /** The final handshake hash (channel binding; the KCP conv comes from it). */
  handshakeHash: Uint8Array;
  /** The stateless reset token the server gave for its connection ID. */
  resetToken: Uint8Array | null;
}

/** One established secure connection (client side). */
export class SecureConnection {
  /** The connection's own counters (transport; the handshake's are the client's). */
  readonly counters: SecureCounters;
  /** The negotiated parameters. */
  readonly params: SessionParams;
  /** The connection ID the server uses to reach us. */
  readonly localCid: Uint8Array;
  /** The server's connection ID. */
  readonly remoteCid: Uint8Array;
  /** The server's static public key (IKpsk2), or null. */
  readonly peerStatic: Uint8Array | null;
  /** The final Noise handshake hash. */
  readonly handshakeHash: Uint8Array;
  /** The server's stateless reset token, or null. */
  readonly resetToken: Uint8Array | null;
  /** Where to send: follows the peer when it migrates. */
  peerAddr: PeerAddr;
  /** False while a new peer address is not validated yet. */
  pathValidated = true;
  /** "open" until either end closes (or a stateless reset). */
  state: "open" | "closed" = "open";
  /** The close's reason code, once closed. */
  closeCode: number | null = null;
  /** The close's message, once closed. */
  closeMessage = "";
  /** The CLOSE datagram we sent (for resending), or null. */
  closePacket: Uint8Array | null = null;
  /** True once we sent a GOAWAY. */
  goawaySent = false;
  /** The peer's GOAWAY [code, message], or null. */
  goawayReceived: [number, string] | null = null;
  /** Answered MTU probe ids, not taken yet (at most 64). */
  probeAcks: number[] = [];
  /** When the last authenticated packet arrived (ms). */
  lastAuthenticated: number;
  /** The handshake's round trip (ms), 0 when unknown. */
  handshakeRttMs = 0;

  private readonly cfg: ClientConfig;
  private readonly rng: Rng;
  private readonly prefix0: Uint8Array;
  private readonly prefix1: Uint8Array;
  private send: EpochKeys;
  private recv: EpochKeys;
  private recvNext: EpochKeys | null = null;
  private recvPrev: EpochKeys | null = null;
  private prevExpiry = 0;
  private epochStarted: number;
  private sentInEpoch = 0;
  private confirmed = true;
  private firstPn: number | null = 0;
  private nextPn = 0;
  private nextPart = 0;
  private readonly partials = new Map<number, Partial>();
  private readonly window: ReplayWindow;
  private validatedAddr: PeerAddr;
  private challenge: Uint8Array | null = null;
  private challengeAddr: PeerAddr = "";
  private challengeAttempts = 0;
  private challengeDue = 0;
  private pathIn = 0;
  private pathOut = 0;
  private readonly events: SecureEvent[] = [];
  private outbox: [Uint8Array, PeerAddr][] = [];

  /** A connection from the handshake's outcome (built by `SecureClient`). */
  constructor(init: ConnectionInit) {
    this.cfg = init.config;
    this.rng = init.rng;
    this.counters = init.counters ?? newCounters();
    this.params = init.params;
    this.localCid = init.localCid;
    this.remoteCid = init.remoteCid;
    this.peerStatic = init.peerStatic;
    this.handshakeHash = init.handshakeHash;
    this.resetToken = init.resetToken;
    this.peerAddr = init.peerAddr;
    this.validatedAddr = init.peerAddr;
    this.prefix0 = concat(Uint8Array.of(T_TRANSPORT), init.remoteCid);
    this.prefix1 = concat(Uint8Array.of(T_TRANSPORT | 1), init.remoteCid);
    this.send = new EpochKeys(init.suite, init.sendSecret, 0);
    this.recv = new EpochKeys(init.suite, init.recvSecret, 0);
    this.epochStarted = init.now;
    this.lastAuthenticated = init.now;
    this.window = new ReplayWindow(init.config.replayWindow);
  }

  /** The configuration the connection runs with (rekey timers, path probing...). */
  get config(): ClientConfig {
    return this.cfg;
  }

  /** The current key epoch (0 after the handshake, +1 per key update). */
  get epoch(): number {
    return this.send.epoch;
  }

  /** True until either end closed the connection. */
  get isOpen(): boolean {
    return this.state === "open";
  }

  /** The packet number the next sealed packet gets. */
  get nextPacketNumber(): number {
    return this.nextPn;
  }

  /** The KCP conv both ends derive from the handshake: the hash's first 4 bytes, little-endian. */
  get conv(): number {
    const h = this.handshakeHash;
    return ((h[0] as number) | ((h[1] as number) << 8) | ((h[2] as number) << 16) | ((h[3] as number) << 24)) >>> 0;
  }

  /** True if the connection has events or datagrams waiting. */
  get pending(): boolean {
    return this.events.length > 0 || this.outbox.length > 0;
  }

  /** Queue a datagram for {@link datagramsToSend}. */
  queueDatagram(datagram: Uint8Array, addr: PeerAddr): void {
    this.outbox.push([datagram, addr]);
  }

  /** Control datagrams to send (key confirmation, path answers, PING_ACKs) and where to. */
  datagramsToSend(_now: number): [Uint8Array, PeerAddr][] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** The oldest pending event, or null. */
  nextEvent(): SecureEvent | null {
    return this.events.shift() ?? null;
  }

  private checkOpen(): void {
    if (this.state !== "open") {
      throw new SecureConnectionClosed(`secure connection is closed (${this.closeMessage || "closed"})`, this.closeCode ?? 0);
    }
  }

  /** One transport datagram carrying `payload` (a KCP packet, FEC shard or OOB datagram). Throws {@link SecureConnectionClosed} once closed. */
  seal(payload: Uint8Array, now: number): Uint8Array {
    this.checkOpen();
    const frame = new Uint8Array(payload.length + 1);
    frame[0] = F_DATA;
    frame.set(payload, 1);
    return this.sealFrame(frame, now);
  }

  /** `payload` in 2..16 DATA_PART datagrams of at most `maxDatagram` bytes each (only if negotiated). */
  sealParts(payload: Uint8Array, maxDatagram: number, now: number): Uint8Array[] {
    this.checkOpen();
    if (!(this.params.features & FEATURE_DATA_PARTS)) throw new SecureUsageError("the peer did not agree to DATA_PART frames");
    const room = maxDatagram - PART_OVERHEAD;
    const n = payload.length;
    const count = room > 0 ? Math.ceil(n / room) : 0;
    if (count < 2 || count > MAX_PARTS) {
      throw new SecureUsageError(`a ${n}-byte payload in datagrams of ${maxDatagram} bytes makes ${count} pieces; DATA_PART needs 2..${MAX_PARTS}`);
    }
    const size = Math.ceil(n / count);
    const mid = this.nextPart;
    this.nextPart = (mid + 1) >>> 0;
    this.counters.payloadsSplit++;
    this.counters.partsSent += count;
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const head = Uint8Array.of(F_DATA_PART, (mid >>> 24) & 0xff, (mid >>> 16) & 0xff, (mid >>> 8) & 0xff, mid & 0xff, i, count);
      out.push(this.sealFrame(concat(head, payload.subarray(i * size, (i + 1) * size)), now));
    }
    return out;
  }

  /** An authenticated PING, zero-padded to a datagram of `padTo` bytes; with `probeId` an MTU probe (answered by a PING_ACK). */
  ping(now: number, padTo = 0, probeId: number | null = null): Uint8Array {
    this.checkOpen();
    const body = probeId === null ? Uint8Array.of(F_PING) : concat(Uint8Array.of(F_PING), u64be(probeId));
    const extra = padTo - TRANSPORT_HEADER - TAG_LEN - body.length;
    return this.sealFrame(extra > 0 ? concat(body, new Uint8Array(extra)) : body, now);
  }

  /**
   * A keepalive: an authenticated PING whose 8-byte probe id has its top bit set (KEEPALIVE_PROBE)
   * and `nonce` (0 to 2^32 - 1) in its low 32 bits. The peer's transport answers it with a PING_ACK,
   * reported here as a `pingAnswered` event (docs/security.md, "Keepalives").
   */
  keepalive(now: number, nonce: number): Uint8Array {
    this.checkOpen();
    if (!Number.isInteger(nonce) || nonce < 0 || nonce > 0xffffffff) throw new RangeError(`keepalive nonce must be in 0..2^32-1, got ${nonce}`);
    const body = Uint8Array.of(F_PING, 0x80, 0, 0, 0, (nonce >>> 24) & 0xff, (nonce >>> 16) & 0xff, (nonce >>> 8) & 0xff, nonce & 0xff);
    return this.sealFrame(body, now);
  }

  /** Close now: an authenticated CLOSE datagram (kept in {@link closePacket}). */
  close(code: number = Reason.NONE, message = "", now = 0): Uint8Array {
    if (this.state === "closed") {
      if (this.closePacket !== null) return this.closePacket;
      throw new SecureConnectionClosed("already closed by the peer", this.closeCode ?? 0);
    }
    const pkt = this.sealFrame(encodeReasonFrame(F_CLOSE, code, message), now);
    this.state = "closed";
    this.closePacket = pkt;
    this.closeCode = code;
    this.closeMessage = message;
    this.events.push({ type: "connectionClosed", code, message, byPeer: false });
    this.counters.closesSent++;
    return pkt;
  }

  /** An authenticated GOAWAY datagram (the peer should open no new streams; the connection stays open). */
  goaway(code: number = Reason.GOING_AWAY, message = "", now = 0): Uint8Array {
    this.checkOpen();
    this.goawaySent = true;
    this.counters.goawaysSent++;
    return this.sealFrame(encodeReasonFrame(F_GOAWAY, code, message), now);
  }

  /** Start a key update now; false if the previous one is not finished yet. */
  updateKeys(now: number): boolean {
    this.expirePrev(now);
    if (!this.confirmed || this.recvPrev !== null) return false;
    this.localUpdate(now);
    return true;
  }

  /** False while an unvalidated new path has used its anti-amplification budget. */
  canSend(nbytes: number): boolean {
    return this.pathValidated || this.pathOut + nbytes <= this.cfg.amplificationFactor * this.pathIn;
  }

  /** When {@link handleTimer} wants to run (ms), or null. */
  getTimer(): number | null {
    if (this.challenge !== null) return this.challengeDue;
    if (this.recvPrev !== null) return this.prevExpiry;
    return null;
  }

  /** Retransmit or give up a path probe; drop the previous epoch's key after its grace time. */
  handleTimer(now: number): void {
    this.expirePrev(now);
    if (this.challenge !== null && now >= this.challengeDue && this.state === "open") {
      if (this.challengeAttempts >= this.cfg.pathProbeAttempts) {
        const failed = this.challengeAddr;
        this.challenge = null;
        this.peerAddr = this.validatedAddr;
        this.pathValidated = true;
        this.counters.pathFailed++;
        this.events.push({ type: "pathFailed", addr: failed, revertedTo: this.validatedAddr });
      } else {
        this.sendChallenge(now);
      }
    }
  }

  /** A protected datagram carrying `plaintext` (a frame type byte and its body) as it is. */
  sealFrame(plaintext: Uint8Array, now: number): Uint8Array {
    if (this.sentInEpoch >= this.cfg.rekeyAfterPackets || now - this.epochStarted >= this.cfg.rekeyAfterMs) {
      this.updateKeys(now);
    }
    const pn = this.nextPn++;
    const k = this.send;
    const header = concat(k.epoch & 1 ? this.prefix1 : this.prefix0, u64be(pn));
    const pkt = concat(header, k.aead.seal(k.nonce(pn), plaintext, header));
    this.sentInEpoch++;
    this.counters.packetsSealed++;
    if (!this.pathValidated) this.pathOut += pkt.length;
    return pkt;
  }

  /** Authenticate and decrypt one datagram from `addr`: the DATA payload, or null (a control frame, or dropped and counted). Never throws. */
  open(datagram: Uint8Array, addr: PeerAddr, now: number): Uint8Array | null {
    const c = this.counters;
    if (datagram.length < MIN_TRANSPORT) {
      c.shortPackets++;
      return null;
    }
    const t = datagram[0];
    if (!isTransportType(t)) {
      c.badType++;
      return null;
    }
    if (!equal(datagram.subarray(1, 1 + CID_LEN), this.localCid)) {
      if (!this.statelessReset(datagram)) c.unknownCid++;
      return null;
    }
    if (this.state !== "open") {
      c.afterClose++;
      return null;
    }
    const pn = readU64be(datagram, 1 + CID_LEN);
    const verdict = this.window.check(pn);
    if (verdict !== REPLAY_OK) {
      if (verdict === REPLAY_TOO_OLD) c.replayTooOld++;
      else c.replayDuplicates++;
      return null;
    }
    const header = datagram.subarray(0, TRANSPORT_HEADER);
    const body = datagram.subarray(TRANSPORT_HEADER);
    let keys: EpochKeys | null = null;
    let plaintext: Uint8Array | null = null;
    for (const cand of this.candidates((t as number) & 1, pn, now)) {
      plaintext = cand.aead.open(cand.nonce(pn), body, header);
      if (plaintext !== null) {
        keys = cand;
        break;
      }
    }
    if (keys === null || plaintext === null) {
      if (!this.statelessReset(datagram)) c.decryptErrors++;
      return null;
    }
    const newest = pn > this.window.top;
    this.window.update(pn);
    c.packetsOpened++;
    if (now > this.lastAuthenticated) this.lastAuthenticated = now;
    if (keys === this.recv) {
      this.confirmed = true;
      if (this.firstPn === null || pn < this.firstPn) this.firstPn = pn;
    } else if (keys === this.recvPrev) {
      c.prevKeyUsed++;
    } else {
      this.peerUpdate(keys, pn, now);
    }
    if (addr !== this.peerAddr && newest) this.newPath(addr, now);
    if (!this.pathValidated && addr === this.peerAddr) this.pathIn += datagram.length;
    if (plaintext.length === 0) {
      c.frameErrors++;
      return null;
    }
    const ft = plaintext[0];
    if (ft === F_DATA) return plaintext.subarray(1);
    if (ft === F_DATA_PART) return this.part(plaintext, now);
    this.control(ft as number, plaintext, addr, now);
    return null;
  }

  /** Payloads in reassembly and the bytes they hold. */
  get partsPending(): [number, number] {
    let n = 0;
    for (const p of this.partials.values()) n += p.nbytes;
    return [this.partials.size, n];
  }

  private part(frame: Uint8Array, now: number): Uint8Array | null {
    const c = this.counters;
    c.partsReceived++;
    if (!(this.params.features & FEATURE_DATA_PARTS) || frame.length <= 1 + PART_HEADER) {
      c.partErrors++;
      return null;
    }
    const mid = (((frame[1] as number) << 24) | ((frame[2] as number) << 16) | ((frame[3] as number) << 8) | (frame[4] as number)) >>> 0;
    const index = frame[5] as number;
    const count = frame[6] as number;
    const piece = frame.slice(1 + PART_HEADER);
    if (count < 2 || count > MAX_PARTS || index >= count) {
      c.partErrors++;
      return null;
    }
    let p = this.partials.get(mid);
    if (p === undefined) {
      for (const [key, q] of [...this.partials]) {
        if (now - q.started > PART_TIMEOUT_MS) {
          this.partials.delete(key);
          c.partsDropped++;
        }
      }
      while (this.partials.size >= MAX_PENDING_PARTS) {
        const oldest = this.partials.keys().next().value as number;
        this.partials.delete(oldest);
        c.partsDropped++;
      }
      p = { count, got: 0, nbytes: 0, pieces: new Array<Uint8Array | null>(count).fill(null), started: now };
      this.partials.set(mid, p);
    } else if (p.count !== count || p.pieces[index] !== null) {
      c.partErrors++;
      return null;
    }
    p.nbytes += piece.length;
    if (p.nbytes > Math.max(this.params.mtu, PMTUD_LIMIT)) {
      this.partials.delete(mid);
      c.partErrors++;
      return null;
    }
    p.pieces[index] = piece;
    p.got++;
    if (p.got < count) return null;
    this.partials.delete(mid);
    c.partsReassembled++;
    return concat(...(p.pieces as Uint8Array[]));
  }

  private statelessReset(datagram: Uint8Array): boolean {
    const token = this.resetToken;
    if (token === null || this.state !== "open" || datagram.length < RESET_TOKEN_LEN) return false;
    if (!equal(datagram.subarray(datagram.length - RESET_TOKEN_LEN), token)) return false;
    const message = "stateless reset: the server no longer knows this connection (restarted or closed)";
    this.state = "closed";
    this.closeCode = Reason.STATELESS_RESET;
    this.closeMessage = message;
    this.counters.statelessResetsReceived++;
    this.events.push({ type: "connectionClosed", code: Reason.STATELESS_RESET, message, byPeer: true });
    return true;
  }

  private control(ft: number, plaintext: Uint8Array, addr: PeerAddr, now: number): void {
    const c = this.counters;
    if (ft === F_PING) {
      if (plaintext.length >= 1 + PROBE_ID_LEN) {
        c.mtuProbesAnswered++;
        this.outbox.push([this.sealFrame(concat(Uint8Array.of(F_PING_ACK), plaintext.subarray(1, 9)), now), addr]);
      }
      return;
    }
    if (ft === F_PING_ACK && plaintext.length === 1 + PROBE_ID_LEN) {
      c.mtuProbeAcks++;
      if (((plaintext[1] as number) & 0x80) !== 0) {
        // a keepalive's answer (the id's top bit, KEEPALIVE_PROBE): the nonce is in its low 32 bits
        if (this.events.length < MAX_PROBE_ACKS) this.events.push({ type: "pingAnswered", nonce: readU32be(plaintext, 5) });
      } else if (this.probeAcks.length < MAX_PROBE_ACKS) this.probeAcks.push(readU64be(plaintext, 1));
      return;
    }
    if (ft === F_PATH_CHALLENGE && plaintext.length === 9) {
      this.outbox.push([this.sealFrame(concat(Uint8Array.of(F_PATH_RESPONSE), plaintext.subarray(1)), now), addr]);
      return;
    }
    if (ft === F_PATH_RESPONSE && plaintext.length === 9) {
      if (this.challenge !== null && equal(plaintext.subarray(1), this.challenge)) {
        const validated = this.challengeAddr;
        this.challenge = null;
        this.validatedAddr = validated;
        if (this.peerAddr === validated) this.pathValidated = true;
        c.pathValidated++;
        this.events.push({ type: "pathValidated", addr: validated });
      }
      return;
    }
    if (ft === F_CLOSE || ft === F_GOAWAY) {
      if (plaintext.length < 3) {
        c.frameErrors++;
        return;
      }
      const [code, message] = decodeReasonFrame(plaintext.subarray(1));
      if (ft === F_CLOSE) {
        this.state = "closed";
        this.closeCode = code;
        this.closeMessage = message;
        c.closesReceived++;
        this.events.push({ type: "connectionClosed", code, message, byPeer: true });
      } else {
        this.goawayReceived = [code, message];
        c.goawaysReceived++;
        this.events.push({ type: "goAwayReceived", code, message });
      }
      return;
    }
    c.frameErrors++;
  }

  private candidates(phase: number, pn: number, now: number): EpochKeys[] {
    const cur = this.recv;
    if (phase === (cur.epoch & 1)) return [cur];
    this.expirePrev(now);
    if (this.recvNext === null) this.recvNext = cur.next();
    if (this.firstPn !== null && pn >= this.firstPn) return [this.recvNext];
    if (this.recvPrev !== null) return [this.recvPrev, this.recvNext];
    return [this.recvNext];
  }

  private expirePrev(now: number): void {
    if (this.recvPrev === null) return;
    if (now >= this.prevExpiry || (this.firstPn !== null && this.window.top - this.firstPn >= this.window.size)) {
      this.recvPrev = null;
    }
  }

  private localUpdate(now: number): void {
    this.recvPrev = this.recv;
    this.prevExpiry = now + this.cfg.keyGraceMs;
    this.recv = this.recvNext ?? this.recv.next();
    this.recvNext = null;
    this.send = this.send.next();
    this.firstPn = null;
    this.confirmed = false;
    this.sentInEpoch = 0;
    this.epochStarted = now;
    this.counters.keyUpdates++;
    this.events.push({ type: "keyUpdated", epoch: this.send.epoch, byPeer: false });
  }

  private peerUpdate(keys: EpochKeys, pn: number, now: number): void {
    this.recvPrev = this.recv;
    this.prevExpiry = now + this.cfg.keyGraceMs;
    this.recv = keys;
    this.recvNext = null;
    while (this.send.epoch < keys.epoch) this.send = this.send.next();
    this.firstPn = pn;
    this.confirmed = true;
    this.sentInEpoch = 0;
    this.epochStarted = now;
    this.counters.keyUpdatesByPeer++;
    this.events.push({ type: "keyUpdated", epoch: keys.epoch, byPeer: true });
  }

  private newPath(addr: PeerAddr, now: number): void {
    const old = this.peerAddr;
    this.peerAddr = addr;
    this.counters.pathChanges++;
    this.events.push({ type: "pathChanged", old, new: addr });
    if (addr === this.validatedAddr) {
      this.pathValidated = true;
      this.challenge = null;
      return;
    }
    this.pathValidated = false;
    this.pathIn = 0;
    this.pathOut = 0;
    this.challenge = this.rng(8);
    this.challengeAddr = addr;
    this.challengeAttempts = 0;
    this.sendChallenge(now);
  }

  private sendChallenge(now: number): void {
    if (this.challenge === null) return;
    this.challengeAttempts++;
    this.challengeDue = now + this.cfg.pathProbeIntervalMs;
    this.counters.pathChallengesSent++;
    this.outbox.push([this.sealFrame(concat(Uint8Array.of(F_PATH_CHALLENGE), this.challenge), now), this.challengeAddr]);
  }
}
