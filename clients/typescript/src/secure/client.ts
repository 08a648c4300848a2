/**
 * The handshake's initiator (the Python `SecureClient` of `kcp/secure/handshake.py`): builds the
 * padded INITIATION (Noise IKpsk2 with a pinned server key, NNpsk0 with only a PSK/passphrase),
 * retransmits it with back-off, answers a RETRY with the cookie, takes bound wire hints, retries
 * at once with another suite on a suite refusal, checks the server's answer, and fails with a
 * typed {@link HandshakeError} naming the cause.
 *
 * Sans-I/O: `initiate(now)`, `receive(datagram, addr, now)`, `datagramsToSend(now)`,
 * `getTimer()` / `handleTimer(now)`; randomness and time are injected.
 */
import { randomBytes } from "node:crypto";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { concat, equal, fromUtf8, u16be, utf8, type Rng } from "./bytes.js";
import { checkAccepted, clientConfig, encodeClientHello, type ClientConfig, type SecureOptions, type SessionParams } from "./config.js";
import { SecureConnection, newCounters, type PeerAddr, type SecureCounters } from "./connection.js";
import {
  DecodeError,
  HandshakeError,
  HandshakeKeyMismatch,
  HandshakeNoAnswer,
  HandshakePskMismatch,
  HandshakeRefused,
  HandshakeTimeout,
  HandshakeWireMismatch,
  SecureUsageError,
} from "./errors.js";
import { HandshakeState, IKPSK2, KeyPair, NNPSK0, NoiseError, SUITES, mac16, sha256, type Pattern } from "./noise.js";
import {
  CID_LEN,
  ECHO_LEN,
  HintCode,
  PATTERN_IKPSK2,
  PATTERN_NNPSK0,
  PROLOGUE_LABEL,
  RESET_TOKEN_LEN,
  RESP_HEADER,
  Reason,
  SEALED_COOKIE_LEN,
  T_HINT,
  T_INITIATION,
  T_RESPONSE,
  T_RETRY,
  TAG_CID,
  TAG_FEATURES,
  TAG_FEC,
  TAG_MESSAGE,
  TAG_MTU,
  TAG_MUX,
  TAG_RESET,
  TAG_STATUS,
  TAG_SUITES,
  TAG_VERSIONS,
  TAG_WINDOWS,
  WIRE_VERSION,
  decodeTlv,
  hintMessage,
  isTransportType,
  parseHint,
  reasonText,
  tlvU16s,
  tlvU8,
} from "./packet.js";

const ZERO_PSK = new Uint8Array(32);
const SENT_LOG = 8;

/** The default randomness: the OS CSPRNG. */
export const systemRng: Rng = (n) => new Uint8Array(randomBytes(n));

const WHAT_TO_CHECK: Record<number, string> = {
  [Reason.VERSION_MISMATCH]: "upgrade the older side",
  [Reason.SUITE_REFUSED]: "allow a common cipher suite: SecureConfig.suites",
  [Reason.PARAMS_REFUSED]: "make the client's transport settings fit the server's policy",
  [Reason.BAD_TOKEN]: "check the client's token",
  [Reason.SERVER_BUSY]: "try again later, or another server",
};

/** The text of an authenticated refusal by `who` (as Python's `refusal_text`). */
export function refusalText(code: number, message: string, who: string): string {
  const text = `handshake refused by ${who}: ${reasonText(code, message)}`;
  const hint = WHAT_TO_CHECK[code];
  return hint ? `${text} (${hint})` : text;
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toPrecision(6))} s`;
}

function mac1Key(patternId: number, material: Uint8Array): Uint8Array {
  return sha256(concat(utf8("kcprpc mac1"), Uint8Array.of(patternId), material));
}

function cookieKey(patternId: number, material: Uint8Array): Uint8Array {
  return sha256(concat(utf8("kcprpc cookie"), Uint8Array.of(patternId), material));
}

/** A client handshake's state. */
export type ClientState = "idle" | "initiating" | "established" | "failed";

/** Extra inputs of a {@link SecureClient} (all for tests or the session layer). */
export interface SecureClientInit {
  /** Randomness (static key if none given, connection ID, ephemeral keys, path challenges); default the OS CSPRNG. */
  rng?: Rng;
  /** The server's `HOST:PORT`, for error messages. */
  peer?: string;
}

/** The initiator of the secure handshake. */
export class SecureClient {
  /** The validated configuration. */
  readonly config: ClientConfig;
  /** The handshake's counters (the connection keeps its own). */
  readonly counters: SecureCounters = newCounters();
  /** Our connection ID (the server puts it on packets to us); byte 0 is `cidPrefix` when set. */
  readonly localCid: Uint8Array;
  /** The state: idle → initiating → established | failed. */
  state: ClientState = "idle";
  /** The failure, once failed. */
  error: HandshakeError | null = null;
  /** The connection, once established. */
  connection: SecureConnection | null = null;
  /** Datagrams received from the server while the handshake ran. */
  heard = 0;
  /** The server's `HOST:PORT` ("" if unknown). */
  readonly peer: string;

  private readonly rng: Rng;
  private readonly who: string;
  private readonly patternId: number;
  private readonly psk: Uint8Array;
  private readonly staticKey: KeyPair | null;
  private readonly mac1K: Uint8Array;
  private readonly cookieK: Uint8Array;
  private suitesLeft: number[];
  private suiteId: number;
  private hs: HandshakeState | null = null;
  private base: Uint8Array = new Uint8Array(0);
  private mac1: Uint8Array = new Uint8Array(0);
  private cookie: Uint8Array | null = null;
  private outbox: Uint8Array[] = [];
  private deadline = 0;
  private nextRetx = 0;
  private interval = 0;
  private sentAt = 0;
  private copies = 0;
  private readonly sent: Uint8Array[] = [];

  /** A client for `options` (validated: throws {@link SecureUsageError} naming a bad option). */
  constructor(options: SecureOptions | ClientConfig, init: SecureClientInit = {}) {
    const cfg = "suiteIds" in options ? options : clientConfig(options);
    this.config = cfg;
    this.rng = init.rng ?? systemRng;
    this.peer = init.peer ?? "";
    this.who = this.peer ? `the server at ${this.peer}` : "the server";
    let material: Uint8Array;
    if (cfg.serverPublicKey !== null) {
      this.patternId = PATTERN_IKPSK2;
      this.psk = cfg.psk ?? ZERO_PSK;
      this.staticKey = cfg.staticPrivateKey !== null ? new KeyPair(cfg.staticPrivateKey) : KeyPair.generate(this.rng);
      material = cfg.serverPublicKey;
    } else if (cfg.psk !== null) {
      this.patternId = PATTERN_NNPSK0;
      this.psk = cfg.psk;
      this.staticKey = null;
      material = cfg.psk;
    } else {
      throw new SecureUsageError("a secure client needs serverPublicKey (pinned key) or psk/passphrase");
    }
    this.mac1K = mac1Key(this.patternId, material);
    this.cookieK = cookieKey(this.patternId, material);
    this.suitesLeft = [...cfg.suiteIds];
    this.suiteId = this.suitesLeft.shift() as number;
    this.localCid = concat(cfg.cidPrefix, this.rng(CID_LEN - cfg.cidPrefix.length));
    this.interval = cfg.handshakeRetryMs;
  }

  /** The client's static public key (IKpsk2), which the server's hook sees; null in NNpsk0. */
  get publicKey(): Uint8Array | null {
    return this.staticKey?.publicKey ?? null;
  }

  /** "IKpsk2" or "NNpsk0". */
  get patternName(): "IKpsk2" | "NNpsk0" {
    return this.patternId === PATTERN_IKPSK2 ? "IKpsk2" : "NNpsk0";
  }

  /** Start the handshake; returns the padded initiation datagram. */
  initiate(now: number): Uint8Array {
    if (this.state !== "idle") throw new SecureUsageError("initiate() called twice");
    this.state = "initiating";
    this.counters.handshakesInitiated++;
    this.deadline = now + this.config.handshakeTimeoutMs;
    return this.start(now);
  }

  private start(now: number): Uint8Array {
    const cfg = this.config;
    const suite = SUITES.get(this.suiteId);
    if (suite === undefined) throw new SecureUsageError(`unknown suite ${this.suiteId}`);
    const header = concat(Uint8Array.of(T_INITIATION, WIRE_VERSION, this.suiteId, this.patternId), this.localCid);
    const pattern: Pattern = this.patternId === PATTERN_IKPSK2 ? IKPSK2 : NNPSK0;
    this.hs = new HandshakeState(pattern, suite, {
      initiator: true,
      prologue: concat(PROLOGUE_LABEL, header),
      rng: this.rng,
      s: this.staticKey,
      rs: cfg.serverPublicKey,
      psk: this.psk,
    });
    const msg1 = this.hs.writeMessage(encodeClientHello(cfg));
    const body = concat(header, u16be(msg1.length), msg1);
    const room = cfg.initiationSize - 32 - body.length;
    if (room < 0) {
      throw new SecureUsageError(`the token does not fit: initiation needs ${body.length + 32} bytes, initiationSize is ${cfg.initiationSize}`);
    }
    const padded = concat(body, new Uint8Array(room));
    this.mac1 = mac16(this.mac1K, padded);
    this.base = concat(padded, this.mac1);
    this.sent.push(padded.slice(0, ECHO_LEN));
    if (this.sent.length > SENT_LOG) this.sent.shift();
    this.cookie = null;
    this.interval = cfg.handshakeRetryMs;
    this.nextRetx = now + this.interval;
    this.sentAt = now;
    this.copies = 1;
    this.counters.initiationsSent++;
    return this.current();
  }

  private current(): Uint8Array {
    const mac2 = this.cookie !== null ? mac16(this.cookie, this.base) : new Uint8Array(16);
    return concat(this.base, mac2);
  }

  /** Handshake datagrams to send to the server (retransmissions, an initiation with a cookie, a suite retry, a CLOSE refusing the answer). */
  datagramsToSend(_now: number): Uint8Array[] {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  /** When {@link handleTimer} wants to run (ms), or null once the handshake is over. */
  getTimer(): number | null {
    return this.state === "initiating" ? Math.min(this.nextRetx, this.deadline) : null;
  }

  /** Retransmit the initiation (backing off), or fail once the timeout is over. */
  handleTimer(now: number): void {
    if (this.state !== "initiating") return;
    if (now >= this.deadline) {
      this.fail(this.timeoutError(this.config.handshakeTimeoutMs));
    } else if (now >= this.nextRetx) {
      this.interval = Math.min(this.interval * 2, Math.max(this.config.handshakeRetryMaxMs, this.interval));
      this.nextRetx = now + this.interval;
      this.copies++;
      this.counters.initiationsSent++;
      this.outbox.push(this.current());
    }
  }

  /** Give up now (the caller's own timeout); returns the error, also kept in {@link error}. */
  abandon(now: number): HandshakeError {
    if (this.state === "initiating") {
      const waited = this.config.handshakeTimeoutMs - Math.max(0, this.deadline - now);
      this.fail(this.timeoutError(waited));
    }
    return this.error ?? new HandshakeError("handshake not running");
  }

  /** Fail with `err` (the session layer's: e.g. {@link HandshakeUnreachable} on ICMP port unreachable). */
  failWith(err: HandshakeError): void {
    if (this.state === "initiating") this.fail(err);
  }

  private timeoutError(waitedMs: number): HandshakeTimeout {
    if (!this.heard) {
      return new HandshakeNoAnswer(
        `handshake failed: no answer from ${this.who} within ${seconds(waitedMs)}: is the server running and reachable over UDP (address, port, firewall)?`,
      );
    }
    return new HandshakeTimeout(
      `handshake failed: no authenticated answer from ${this.who} within ${seconds(waitedMs)} (${this.heard} datagrams that did not authenticate): is it a kcprpc secure server, with this key?`,
    );
  }

  private fail(err: HandshakeError): void {
    this.state = "failed";
    this.error = err;
    this.counters.handshakesFailed++;
  }

  /** One datagram from the server during the handshake: the connection once established, else null. Never throws on garbage. */
  receive(datagram: Uint8Array, addr: PeerAddr, now: number): SecureConnection | null {
    const c = this.counters;
    if (this.state !== "initiating" || datagram.length === 0) {
      if (datagram.length > 0 && isTransportType(datagram[0]) && this.connection !== null) return null;
      c.badType++;
      return null;
    }
    this.heard++;
    const t = datagram[0];
    if (t === T_HINT) {
      this.onHint(datagram);
      return null;
    }
    if (t === T_RETRY) {
      if (datagram.length !== RESP_HEADER + SEALED_COOKIE_LEN || !equal(datagram.subarray(2, 2 + CID_LEN), this.localCid)) {
        c.unknownCid++;
        return null;
      }
      const sealed = datagram.subarray(RESP_HEADER);
      let cookie: Uint8Array;
      try {
        cookie = chacha20poly1305(this.cookieK, sealed.slice(0, 12), this.mac1).decrypt(sealed.slice(12));
      } catch {
        c.decryptErrors++;
        return null;
      }
      this.cookie = cookie;
      c.retriesReceived++;
      c.initiationsSent++;
      this.outbox.push(this.current());
      return null;
    }
    if (t !== T_RESPONSE) {
      c.badType++;
      return null;
    }
    if (datagram.length < RESP_HEADER + 48 || !equal(datagram.subarray(2, 2 + CID_LEN), this.localCid)) {
      c.unknownCid++;
      return null;
    }
    const hs = this.hs;
    if (hs === null) return null;
    let payload: Uint8Array;
    try {
      payload = hs.readMessage(datagram.slice(RESP_HEADER));
    } catch (e) {
      if (!(e instanceof NoiseError)) throw e;
      c.handshakeDecryptErrors++;
      this.fail(
        new HandshakePskMismatch(
          `handshake failed: PSK mismatch: ${this.who} holds the pinned key but its reply did not authenticate with our PSK (check the psk/passphrase)`,
          Reason.PROTOCOL_ERROR,
        ),
      );
      return null;
    }
    try {
      return this.onAnswer(hs, payload, addr, now);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      c.frameErrors++;
      this.fail(new HandshakeError("handshake failed: the server's answer is malformed", Reason.PROTOCOL_ERROR));
      return null;
    }
  }

  private onHint(datagram: Uint8Array): void {
    const c = this.counters;
    const hint = parseHint(datagram);
    if (hint === null || hint[0] === HintCode.SECURE_WIRE || !this.sent.some((e) => equal(e, hint[2]))) {
      c.hintsIgnored++;
      return;
    }
    const [code, detail] = hint;
    c.hintsReceived++;
    const text = "handshake failed: " + hintMessage(code, detail, this.peer);
    if (code === HintCode.WRONG_KEY || code === HintCode.NO_PSK_MODE || code === HintCode.NO_KEY_MODE) {
      this.fail(new HandshakeKeyMismatch(text, Reason.NONE));
    } else if (code === HintCode.WIRE_VERSION) {
      this.fail(new HandshakeWireMismatch(text, Reason.VERSION_MISMATCH));
    } else {
      this.fail(new HandshakeWireMismatch(text, Reason.NONE));
    }
  }

  private onAnswer(hs: HandshakeState, payload: Uint8Array, addr: PeerAddr, now: number): SecureConnection | null {
    const t = decodeTlv(payload);
    const status = tlvU8(t, TAG_STATUS);
    if (status === null) throw new DecodeError("no status");
    if (status !== 0) {
      const message = fromUtf8(t.get(TAG_MESSAGE) ?? new Uint8Array(0));
      const allowed = t.get(TAG_SUITES) ?? new Uint8Array(0);
      if (status === Reason.SUITE_REFUSED) {
        const usable = this.suitesLeft.filter((s) => allowed.includes(s));
        const next = usable[0];
        if (next !== undefined) {
          this.suitesLeft = this.suitesLeft.filter((s) => s !== next);
          this.suiteId = next;
          this.outbox.push(this.start(now));
          return null;
        }
      }
      this.fail(new HandshakeRefused(refusalText(status, message, this.who), status));
      return null;
    }
    const cid = t.get(TAG_CID);
    const version = tlvU8(t, TAG_VERSIONS);
    const suite = tlvU8(t, TAG_SUITES);
    const mtu = (tlvU16s(t, TAG_MTU, 1) ?? [0])[0] as number;
    const wnd = tlvU16s(t, TAG_WINDOWS, 2);
    const fec = t.get(TAG_FEC) ?? new Uint8Array(0);
    const mux = tlvU8(t, TAG_MUX);
    const resetToken = t.get(TAG_RESET) ?? null;
    if (resetToken !== null && resetToken.length !== RESET_TOKEN_LEN) throw new DecodeError("bad reset token");
    if (cid === undefined || cid.length !== CID_LEN || version === null || suite !== this.suiteId || wnd === null || fec.length !== 2 || mux === null) {
      throw new DecodeError("incomplete accept");
    }
    const features = t.get(TAG_FEATURES);
    const cs = SUITES.get(this.suiteId);
    if (cs === undefined) throw new DecodeError("unknown suite");
    const params: SessionParams = {
      version,
      suite: cs.name,
      mtu,
      sndWnd: wnd[0] as number,
      rcvWnd: wnd[1] as number,
      dataShards: fec[0] as number,
      parityShards: fec[1] as number,
      muxVersion: mux,
      features: features !== undefined && features.length > 0 ? (features[0] as number) : 0,
    };
    const [k1, k2] = hs.split();
    const conn = new SecureConnection({
      config: this.config,
      suite: cs,
      sendSecret: k1,
      recvSecret: k2,
      localCid: this.localCid,
      remoteCid: cid,
      peerAddr: addr,
      params,
      rng: this.rng,
      now,
      peerStatic: this.config.serverPublicKey,
      handshakeHash: hs.handshakeHash,
      resetToken,
    });
    this.hs = null;
    const problem = checkAccepted(this.config, params);
    if (problem !== null) {
      this.outbox.push(conn.close(Reason.PARAMS_REFUSED, problem, now));
      this.fail(
        new HandshakeRefused(
          `handshake failed: ${problem} (this client refused the answer of ${this.who}: check its transport settings against the server's)`,
          Reason.PARAMS_REFUSED,
        ),
      );
      return null;
    }
    if (this.copies === 1) conn.handshakeRttMs = Math.max(1, now - this.sentAt);
    conn.queueDatagram(conn.ping(now), addr);
    this.state = "established";
    this.connection = conn;
    this.counters.handshakesCompleted++;
    return conn;
  }
}

/** The first byte of a connection ID, e.g. to ask a reconnect's server worker (docs/workers.md): `cidPrefix: workerOf(conn.remoteCid)`. */
export function workerOf(serverCid: Uint8Array): Uint8Array {
  return serverCid.slice(0, 1);
}

