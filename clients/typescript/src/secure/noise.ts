/**
 * A small Noise Protocol Framework state machine (revision 34), as the Python `kcp/secure/noise.py`:
 * DH 25519, ciphers ChaChaPoly and AESGCM, hash SHA256, patterns IKpsk2 and NNpsk0.
 * Primitives: X25519 from @noble/curves, HKDF-SHA256 from @noble/hashes (Noise's HKDF is RFC 5869
 * with the chaining key as salt and empty info), AES-256-GCM and ChaCha20-Poly1305 from Node's own
 * `node:crypto` (OpenSSL) when it has them, else from @noble/ciphers (both give the same bytes: a
 * test checks it). OpenSSL is 5-7x faster per packet than the pure-JS ciphers (bench/ts_client.py).
 */
import { createCipheriv, createDecipheriv, getCiphers } from "node:crypto";
import { gcm } from "@noble/ciphers/aes.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { expand, hkdf as nobleHkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { concat, utf8, type Rng } from "./bytes.js";
import { DecodeError } from "./errors.js";

/** Length of a hash output and of a DH key. */
export const HASHLEN = 32;
/** Length of an X25519 public key. */
export const DHLEN = 32;
/** Length of an AEAD tag. */
export const TAGLEN = 16;

/** A handshake message failed to decrypt or parse (wrong key, wrong PSK, tampering). Internal. */
export class NoiseError extends DecodeError {}

/** An AEAD with a fixed key: seal/open with a 12-byte nonce and associated data. */
export interface Aead {
  /** Ciphertext and 16-byte tag of `plaintext`. */
  seal(nonce: Uint8Array, plaintext: Uint8Array, ad: Uint8Array): Uint8Array;
  /** The plaintext, or null when the tag does not authenticate. */
  open(nonce: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array): Uint8Array | null;
}

/** One AEAD as Noise names it. */
export interface CipherSuite {
  /** The wire's suite id: 1 ChaChaPoly, 2 AESGCM. */
  readonly id: number;
  /** The name in the Noise protocol name. */
  readonly noiseName: "ChaChaPoly" | "AESGCM";
  /** The configuration name ("chachapoly" / "aesgcm"). */
  readonly name: SuiteName;
  /** An AEAD with a 32-byte key. */
  aead(key: Uint8Array): Aead;
  /** Noise's 96-bit nonce for counter `n`: 32 zero bits, then 64 bits (little-endian for ChaChaPoly, big-endian for AESGCM). */
  nonce(n: number): Uint8Array;
}

/** A cipher suite's configuration name. */
export type SuiteName = "aesgcm" | "chachapoly";

function wrap(make: (key: Uint8Array, nonce: Uint8Array, ad: Uint8Array) => { encrypt(p: Uint8Array): Uint8Array; decrypt(c: Uint8Array): Uint8Array }, key: Uint8Array): Aead {
  const k = Uint8Array.from(key);
  return {
    seal: (nonce, plaintext, ad) => make(k, nonce, ad).encrypt(plaintext),
    open: (nonce, ciphertext, ad) => {
      if (ciphertext.length < TAGLEN) return null;
      try {
        return make(k, nonce, ad).decrypt(ciphertext);
      } catch {
        return null;
      }
    },
  };
}

type NodeAeadName = "aes-256-gcm" | "chacha20-poly1305";

/** An {@link Aead} on node:crypto's OpenSSL cipher `alg` (a cipher object per packet: OpenSSL's key setup is cheap). */
export function nodeAead(alg: NodeAeadName, key: Uint8Array): Aead {
  const k = Uint8Array.from(key);
  // the overloads of createCipheriv are per algorithm family; both families have setAAD/getAuthTag
  const cipher = (nonce: Uint8Array) =>
    alg === "aes-256-gcm" ? createCipheriv(alg, k, nonce, { authTagLength: TAGLEN }) : createCipheriv(alg, k, nonce, { authTagLength: TAGLEN });
  const decipher = (nonce: Uint8Array) =>
    alg === "aes-256-gcm" ? createDecipheriv(alg, k, nonce, { authTagLength: TAGLEN }) : createDecipheriv(alg, k, nonce, { authTagLength: TAGLEN });
  return {
    seal: (nonce, plaintext, ad) => {
      const c = cipher(nonce);
      c.setAAD(ad, { plaintextLength: plaintext.length });
      const out = new Uint8Array(plaintext.length + TAGLEN);
      out.set(c.update(plaintext), 0);
      c.final();
      out.set(c.getAuthTag(), plaintext.length);
      return out;
    },
    open: (nonce, ciphertext, ad) => {
      const n = ciphertext.length - TAGLEN;
      if (n < 0) return null;
      try {
        const d = decipher(nonce);
        d.setAAD(ad, { plaintextLength: n });
        d.setAuthTag(ciphertext.subarray(n));
        const body = d.update(ciphertext.subarray(0, n));
        d.final(); // throws when the tag does not authenticate
        return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
      } catch {
        return null;
      }
    },
  };
}

/** True when node:crypto offers both AEADs (then they are used; else @noble/ciphers). */
export const NATIVE_AEAD: boolean = ((names) => names.includes("aes-256-gcm") && names.includes("chacha20-poly1305"))(getCiphers());

/** The pure-JS {@link Aead}s of @noble/ciphers (the fallback, and the cross-check of the native ones). */
export const NOBLE_AEAD: Readonly<Record<SuiteName, (key: Uint8Array) => Aead>> = {
  aesgcm: (key) => wrap(gcm, key),
  chachapoly: (key) => wrap(chacha20poly1305, key),
};

function noiseNonce(n: number, little: boolean): Uint8Array {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  if (little) {
    dv.setUint32(4, lo, true);
    dv.setUint32(8, hi, true);
  } else {
    dv.setUint32(4, hi);
    dv.setUint32(8, lo);
  }
  return out;
}

/** A suite of wire id `id`: Node's native AEAD `native` when it has it, else the pure-JS `make`. */
function suite(id: number, noiseName: CipherSuite["noiseName"], name: SuiteName, native: NodeAeadName, make: Parameters<typeof wrap>[0], littleNonce: boolean): CipherSuite {
  return {
    id,
    noiseName,
    name,
    aead: (key) => (NATIVE_AEAD ? nodeAead(native, key) : wrap(make, key)),
    nonce: (n) => noiseNonce(n, littleNonce),
  };
}

/** ChaCha20-Poly1305 (suite id 1). */
export const CHACHAPOLY: CipherSuite = suite(1, "ChaChaPoly", "chachapoly", "chacha20-poly1305", chacha20poly1305, true);

/** AES-256-GCM (suite id 2). */
export const AESGCM: CipherSuite = suite(2, "AESGCM", "aesgcm", "aes-256-gcm", gcm, false);

/** Suites by wire id. */
export const SUITES: ReadonlyMap<number, CipherSuite> = new Map([
  [1, CHACHAPOLY],
  [2, AESGCM],
]);

/** Suites by configuration name. */
export const SUITE_BY_NAME: Readonly<Record<SuiteName, CipherSuite>> = { chachapoly: CHACHAPOLY, aesgcm: AESGCM };

/** SHA-256. */
export function sha256(data: Uint8Array): Uint8Array {
  return nobleSha256(data);
}

/** HMAC-SHA256 truncated to 16 bytes (mac1, mac2, cookies, reset tokens). */
export function mac16(key: Uint8Array, data: Uint8Array): Uint8Array {
  return hmac(nobleSha256, key, data).slice(0, 16);
}

/** Noise's HKDF: RFC 5869 with salt = chaining key and empty info, cut into `outputs` 32-byte outputs. */
export function hkdf(chainingKey: Uint8Array, ikm: Uint8Array, outputs: number): Uint8Array[] {
  const okm = nobleHkdf(nobleSha256, ikm, chainingKey, new Uint8Array(0), HASHLEN * outputs);
  const out: Uint8Array[] = [];
  for (let i = 0; i < outputs; i++) out.push(okm.slice(i * HASHLEN, (i + 1) * HASHLEN));
  return out;
}

/** HKDF-Expand-SHA256(secret, label, length): the traffic keys' derivation. */
export function hkdfExpand(secret: Uint8Array, label: Uint8Array, length: number): Uint8Array {
  return expand(nobleSha256, secret, label, length);
}

/** An X25519 key pair: 32 raw private bytes and the 32-byte public key. */
export class KeyPair {
  /** The public key. */
  readonly publicKey: Uint8Array;
  /** A key pair from 32 raw private bytes (clamped by X25519 as usual). */
  constructor(readonly privateKey: Uint8Array) {
    if (privateKey.length !== 32) throw new RangeError("an X25519 private key is 32 bytes");
    this.publicKey = x25519.getPublicKey(privateKey);
  }
  /** A fresh key pair from `rng` (32 bytes). */
  static generate(rng: Rng): KeyPair {
    return new KeyPair(rng(32));
  }
}

/** X25519; a low-order public key (all-zero result) raises {@link NoiseError}. */
export function dh(kp: KeyPair, publicKey: Uint8Array): Uint8Array {
  try {
    return x25519.getSharedSecret(kp.privateKey, publicKey);
  } catch {
    throw new NoiseError("bad DH public key");
  }
}

/** The X25519 public key of 32 raw private bytes. */
export function publicKeyOf(privateKey: Uint8Array): Uint8Array {
  return new KeyPair(privateKey).publicKey;
}

/** A new static key pair (a server identity or a client identity): [private, public], 32 bytes each. */
export function generateKeypair(rng: Rng): [Uint8Array, Uint8Array] {
  const kp = KeyPair.generate(rng);
  return [kp.privateKey, kp.publicKey];
}

const MAX_NONCE = Number.MAX_SAFE_INTEGER;

/** Noise CipherState: a key (or none) and a nonce counter. */
export class CipherState {
  private aead: Aead | null = null;
  /** The nonce counter. */
  n = 0;
  /** A cipher state for `suite`, without a key. */
  constructor(readonly suite: CipherSuite) {}
  /** Set the key and reset the counter. */
  initializeKey(key: Uint8Array): void {
    this.aead = this.suite.aead(key);
    this.n = 0;
  }
  /** True once a key is set. */
  hasKey(): boolean {
    return this.aead !== null;
  }
  /** EncryptWithAd (the plaintext itself without a key). */
  encryptWithAd(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.aead === null) return plaintext;
    if (this.n >= MAX_NONCE) throw new NoiseError("nonce exhausted");
    const out = this.aead.seal(this.suite.nonce(this.n), plaintext, ad);
    this.n++;
    return out;
  }
  /** DecryptWithAd; throws {@link NoiseError} when it does not authenticate. */
  decryptWithAd(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.aead === null) return ciphertext;
    if (this.n >= MAX_NONCE) throw new NoiseError("nonce exhausted");
    const out = this.aead.open(this.suite.nonce(this.n), ciphertext, ad);
    if (out === null) throw new NoiseError("decryption failed");
    this.n++;
    return out;
  }
}

/** Noise SymmetricState: chaining key `ck`, handshake hash `h` and a CipherState. */
export class SymmetricState {
  /** The chaining key. */
  ck: Uint8Array;
  /** The handshake hash. */
  h: Uint8Array;
  /** The cipher state. */
  readonly cs: CipherState;
  /** InitializeSymmetric(protocolName). */
  constructor(protocolName: Uint8Array, suite: CipherSuite) {
    if (protocolName.length <= HASHLEN) {
      this.h = new Uint8Array(HASHLEN);
      this.h.set(protocolName);
    } else {
      this.h = sha256(protocolName);
    }
    this.ck = this.h;
    this.cs = new CipherState(suite);
  }
  /** MixKey. */
  mixKey(ikm: Uint8Array): void {
    const [ck, k] = hkdf(this.ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.ck = ck;
    this.cs.initializeKey(k);
  }
  /** MixHash. */
  mixHash(data: Uint8Array): void {
    this.h = sha256(concat(this.h, data));
  }
  /** MixKeyAndHash. */
  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, th, k] = hkdf(this.ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.ck = ck;
    this.mixHash(th);
    this.cs.initializeKey(k);
  }
  /** EncryptAndHash. */
  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ct = this.cs.encryptWithAd(this.h, plaintext);
    this.mixHash(ct);
    return ct;
  }
  /** DecryptAndHash. */
  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const pt = this.cs.decryptWithAd(this.h, ciphertext);
    this.mixHash(ciphertext);
    return pt;
  }
  /** Split: [initiator→responder secret, responder→initiator secret]. */
  split(): [Uint8Array, Uint8Array] {
    const [k1, k2] = hkdf(this.ck, new Uint8Array(0), 2) as [Uint8Array, Uint8Array];
    return [k1, k2];
  }
}

/** A handshake pattern: the responder's pre-message tokens and the two messages' tokens. */
export interface Pattern {
  /** "IKpsk2" or "NNpsk0". */
  readonly name: "IKpsk2" | "NNpsk0";
  /** The wire's pattern id: 1 IKpsk2, 2 NNpsk0. */
  readonly id: number;
  /** Pre-message tokens of the responder. */
  readonly responderPre: readonly string[];
  /** Tokens of message 1 and message 2. */
  readonly messages: readonly (readonly string[])[];
}

/** `<- s ... -> e, es, s, ss  <- e, ee, se, psk`. */
export const IKPSK2: Pattern = { name: "IKpsk2", id: 1, responderPre: ["s"], messages: [["e", "es", "s", "ss"], ["e", "ee", "se", "psk"]] };
/** `-> psk, e  <- e, ee`. */
export const NNPSK0: Pattern = { name: "NNpsk0", id: 2, responderPre: [], messages: [["psk", "e"], ["e", "ee"]] };

/** The full Noise protocol name, e.g. `Noise_IKpsk2_25519_ChaChaPoly_SHA256`. */
export function protocolName(pattern: Pattern, suite: CipherSuite): string {
  return `Noise_${pattern.name}_25519_${suite.noiseName}_SHA256`;
}

/** Inputs of a {@link HandshakeState}. */
export interface HandshakeStateOptions {
  /** True for the initiator (the client). */
  initiator: boolean;
  /** The prologue mixed into the hash. */
  prologue: Uint8Array;
  /** Where a generated ephemeral key's bytes come from. */
  rng: Rng;
  /** Our static key pair (IKpsk2). */
  s?: KeyPair | null;
  /** The responder's static public key, known in advance (IKpsk2 initiator). */
  rs?: Uint8Array | null;
  /** The 32-byte PSK. */
  psk: Uint8Array;
  /** A fixed ephemeral key pair (tests); else generated from `rng` when message 1/2 is written. */
  e?: KeyPair | null;
}

/** Noise HandshakeState for one side of a one-round-trip pattern. */
export class HandshakeState {
  private readonly ss: SymmetricState;
  private msg = 0;
  private readonly initiator: boolean;
  private readonly rng: Rng;
  private readonly s: KeyPair | null;
  private readonly psk: Uint8Array;
  /** Our ephemeral key pair (after writing our message). */
  e: KeyPair | null;
  /** The peer's ephemeral public key (after reading its message). */
  re: Uint8Array | null = null;
  /** The peer's static public key (pinned, or read from message 1 by a responder). */
  rs: Uint8Array | null;

  /** Initialize(pattern, suite, ...). */
  constructor(readonly pattern: Pattern, suite: CipherSuite, o: HandshakeStateOptions) {
    this.initiator = o.initiator;
    this.rng = o.rng;
    this.s = o.s ?? null;
    this.rs = o.rs ?? null;
    this.e = o.e ?? null;
    if (o.psk.length !== 32) throw new RangeError("this pattern needs a 32-byte PSK");
    this.psk = o.psk;
    this.ss = new SymmetricState(utf8(protocolName(pattern, suite)), suite);
    this.ss.mixHash(o.prologue);
    for (const _token of pattern.responderPre) {
      const key = !this.initiator && this.s !== null ? this.s.publicKey : this.rs;
      if (key === null) throw new RangeError("the responder's static key is needed for this pattern");
      this.ss.mixHash(key);
    }
  }

  /** The handshake hash `h` (the channel binding once the handshake is over). */
  get handshakeHash(): Uint8Array {
    return this.ss.h;
  }

  private dhToken(token: string): Uint8Array {
    let local = token[0];
    let remote = token[1];
    if (!this.initiator) [local, remote] = [remote, local];
    const kp = local === "e" ? this.e : this.s;
    const pub = remote === "e" ? this.re : this.rs;
    if (kp === null || pub === null) throw new NoiseError(`missing key for ${token}`);
    return dh(kp, pub);
  }

  /** Write the next message with `payload`; returns its bytes. */
  writeMessage(payload: Uint8Array): Uint8Array {
    const tokens = this.pattern.messages[this.msg++] ?? [];
    const out: Uint8Array[] = [];
    for (const token of tokens) {
      if (token === "e") {
        if (this.e === null) this.e = KeyPair.generate(this.rng);
        out.push(this.e.publicKey);
        this.ss.mixHash(this.e.publicKey);
        this.ss.mixKey(this.e.publicKey); // both patterns have a PSK
      } else if (token === "s") {
        if (this.s === null) throw new NoiseError("no static key");
        out.push(this.ss.encryptAndHash(this.s.publicKey));
      } else if (token === "psk") {
        this.ss.mixKeyAndHash(this.psk);
      } else {
        this.ss.mixKey(this.dhToken(token));
      }
    }
    out.push(this.ss.encryptAndHash(payload));
    return concat(...out);
  }

  /** Read the peer's next message; returns its payload or throws {@link NoiseError}. */
  readMessage(message: Uint8Array): Uint8Array {
    const tokens = this.pattern.messages[this.msg++] ?? [];
    let pos = 0;
    for (const token of tokens) {
      if (token === "e") {
        if (message.length < pos + DHLEN) throw new NoiseError("message too short");
        this.re = message.slice(pos, pos + DHLEN);
        pos += DHLEN;
        this.ss.mixHash(this.re);
        this.ss.mixKey(this.re);
      } else if (token === "s") {
        const size = DHLEN + (this.ss.cs.hasKey() ? TAGLEN : 0);
        if (message.length < pos + size) throw new NoiseError("message too short");
        this.rs = this.ss.decryptAndHash(message.slice(pos, pos + size));
        pos += size;
      } else if (token === "psk") {
        this.ss.mixKeyAndHash(this.psk);
      } else {
        this.ss.mixKey(this.dhToken(token));
      }
    }
    const rest = message.slice(pos);
    if (this.ss.cs.hasKey() && rest.length < TAGLEN) throw new NoiseError("message too short");
    return this.ss.decryptAndHash(rest);
  }

  /** Transport secrets after the last message: [initiator→responder, responder→initiator]. */
  split(): [Uint8Array, Uint8Array] {
    return this.ss.split();
  }
}
