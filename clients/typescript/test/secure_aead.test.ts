/**
 * The transport AEADs on node:crypto (OpenSSL, the fast path) against @noble/ciphers (the pure-JS
 * fallback): the same ciphertext and tag for the same key, nonce and associated data at every
 * size, each opens the other's output, and both refuse a flipped bit, a wrong nonce, a wrong
 * associated data or a truncated packet (null, never a throw).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { AESGCM, CHACHAPOLY, NATIVE_AEAD, NOBLE_AEAD, nodeAead } from "../src/secure/noise.js";

const CASES = [
  { suite: "aesgcm", alg: "aes-256-gcm" },
  { suite: "chachapoly", alg: "chacha20-poly1305" },
] as const;

test("node:crypto offers both AEADs here, so the suites use them", () => {
  assert.equal(NATIVE_AEAD, true);
  const key = new Uint8Array(32).fill(7);
  const nonce = AESGCM.nonce(5);
  const pt = new Uint8Array([1, 2, 3]);
  assert.deepEqual(AESGCM.aead(key).seal(nonce, pt, pt), NOBLE_AEAD.aesgcm(key).seal(nonce, pt, pt));
  assert.deepEqual(CHACHAPOLY.aead(key).seal(CHACHAPOLY.nonce(5), pt, pt), NOBLE_AEAD.chachapoly(key).seal(CHACHAPOLY.nonce(5), pt, pt));
});

for (const { suite, alg } of CASES) {
  test(`${alg}: node:crypto and @noble/ciphers agree byte for byte, and refuse the same tampering`, () => {
    for (const size of [0, 1, 15, 16, 17, 64, 255, 1371, 1400, 4096]) {
      const key = randomBytes(32);
      const nonce = randomBytes(12);
      const ad = randomBytes(size % 23);
      const pt = randomBytes(size);
      const native = nodeAead(alg, key);
      const noble = NOBLE_AEAD[suite](key);
      const sealed = native.seal(nonce, pt, ad);
      assert.deepEqual(sealed, noble.seal(nonce, pt, ad), `size ${size}`);
      assert.equal(sealed.length, size + 16);
      assert.deepEqual(native.open(nonce, sealed, ad), new Uint8Array(pt));
      assert.deepEqual(noble.open(nonce, sealed, ad), new Uint8Array(pt));
      const flipped = Uint8Array.from(sealed);
      flipped[(size * 7) % flipped.length]! ^= 0x10;
      const otherNonce = Uint8Array.from(nonce);
      otherNonce[11]! ^= 1;
      const otherAd = Uint8Array.of(...ad, 0);
      for (const aead of [native, noble]) {
        assert.equal(aead.open(nonce, flipped, ad), null);
        assert.equal(aead.open(otherNonce, sealed, ad), null);
        assert.equal(aead.open(nonce, sealed, otherAd), null);
        assert.equal(aead.open(nonce, sealed.subarray(0, 15), ad), null);
      }
    }
  });
}
