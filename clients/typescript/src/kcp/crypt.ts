/**
 * kcp-go's packet ciphers (docs/wire-format/packet.md), on `node:crypto`.
 *
 * Block ciphers run kcp-go's packet CFB: full-block feedback restarted at a fixed IV for every
 * packet, a short final segment XORed with the next keystream block. That is exactly OpenSSL's
 * CFB-128 for a whole packet, so `aes-*-cfb` does it. `aes-128-gcm` is AES-GCM with a 12-byte nonce
 * and a 16-byte tag, no additional data. `none` copies; `null` means no crypt layer at all.
 */
import { createCipheriv, createDecipheriv, pbkdf2Sync } from "node:crypto";
import { KcpUsageError } from "./errors.js";

/** kcp-go's fixed CFB IV. */
export const INITIAL_VECTOR = new Uint8Array([167, 115, 79, 156, 18, 172, 27, 1, 164, 21, 242, 193, 252, 120, 230, 107]);

/** The kcptun cipher names this client supports. */
export type CryptName = "aes" | "aes-128" | "aes-192" | "aes-128-gcm" | "none" | "null";

/** Supported names, for messages and checks. */
export const CRYPT_NAMES: readonly CryptName[] = ["aes", "aes-128", "aes-192", "aes-128-gcm", "none", "null"];

/** kcptun's key derivation: PBKDF2-HMAC-SHA1(passphrase, "kcp-go", 4096 rounds, 32 bytes). */
export function deriveKey(passphrase: string | Uint8Array): Uint8Array {
  return new Uint8Array(pbkdf2Sync(passphrase, "kcp-go", 4096, 32, "sha1"));
}

/** A block cipher in kcp-go's packet CFB (encrypts the whole packet, nonce included). */
export interface BlockCrypt {
  /** `"block"`. */
  readonly kind: "block";
  /** The kcptun name. */
  readonly name: string;
  /** Encrypt one packet (same length). */
  encrypt(data: Uint8Array): Uint8Array;
  /** Decrypt one packet (same length). */
  decrypt(data: Uint8Array): Uint8Array;
}

/** An AEAD (kcp-go's aes-128-gcm). */
export interface AeadCrypt {
  /** `"aead"`. */
  readonly kind: "aead";
  /** The kcptun name. */
  readonly name: string;
  /** Nonce bytes in front of the sealed body (12). */
  readonly nonceSize: number;
  /** Tag bytes after it (16). */
  readonly overhead: number;
  /** Ciphertext plus tag of `plain`. */
  seal(nonce: Uint8Array, plain: Uint8Array): Uint8Array;
  /** The plaintext, or null when the tag does not verify. */
  open(nonce: Uint8Array, sealed: Uint8Array): Uint8Array | null;
}

/** What {@link newCrypt} returns (null for `null`: no crypt layer). */
export type PacketCrypt = BlockCrypt | AeadCrypt;

function cfb(name: string, algo: string, key: Uint8Array): BlockCrypt {
  return {
    kind: "block",
    name,
    encrypt(data: Uint8Array): Uint8Array {
      const c = createCipheriv(algo, key, INITIAL_VECTOR);
      return new Uint8Array(Buffer.concat([c.update(data), c.final()]));
    },
    decrypt(data: Uint8Array): Uint8Array {
      const d = createDecipheriv(algo, key, INITIAL_VECTOR);
      return new Uint8Array(Buffer.concat([d.update(data), d.final()]));
    },
  };
}

function gcm(key: Uint8Array): AeadCrypt {
  const algo = `aes-${key.length * 8}-gcm` as "aes-128-gcm";
  return {
    kind: "aead",
    name: "aes-128-gcm",
    nonceSize: 12,
    overhead: 16,
    seal(nonce: Uint8Array, plain: Uint8Array): Uint8Array {
      const c = createCipheriv(algo, key, nonce);
      const body = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
      return new Uint8Array(body);
    },
    open(nonce: Uint8Array, sealed: Uint8Array): Uint8Array | null {
      if (sealed.length < 16) return null;
      try {
        const d = createDecipheriv(algo, key, nonce);
        d.setAuthTag(sealed.subarray(sealed.length - 16));
        return new Uint8Array(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]));
      } catch {
        return null;
      }
    },
  };
}

const KEY_SIZES: Record<CryptName, number> = { aes: 32, "aes-128": 16, "aes-192": 24, "aes-128-gcm": 16, none: 0, null: 0 };

/**
 * The packet cipher kcptun builds for `--crypt name` from `key` (normally {@link deriveKey}'s 32
 * bytes; each cipher takes the prefix it needs). Returns null for `null`. Throws
 * {@link KcpUsageError} for an unknown name or a short key.
 */
export function newCrypt(name: string, key: Uint8Array): PacketCrypt | null {
  if (!(CRYPT_NAMES as readonly string[]).includes(name)) {
    throw new KcpUsageError(`unknown or unsupported cipher ${JSON.stringify(name)}; supported: ${CRYPT_NAMES.join(", ")}`);
  }
  const n = name as CryptName;
  const size = KEY_SIZES[n];
  if (key.length < size) throw new KcpUsageError(`cipher ${name} needs a key of at least ${size} bytes, got ${key.length}`);
  const k = key.slice(0, size);
  switch (n) {
    case "aes":
      return cfb(n, "aes-256-cfb", k);
    case "aes-128":
      return cfb(n, "aes-128-cfb", k);
    case "aes-192":
      return cfb(n, "aes-192-cfb", k);
    case "aes-128-gcm":
      return gcm(k);
    case "none":
      return { kind: "block", name: "none", encrypt: (d) => d.slice(), decrypt: (d) => d.slice() };
    case "null":
      return null;
  }
}

/** CRC-32/IEEE (zlib.crc32), from src/crc32.ts (which the browser bundle shares). */
export { crc32 } from "../crc32.js";
