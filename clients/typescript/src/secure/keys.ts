/**
 * Traffic keys and their rotation (the Python `kcp/secure/keys.py`): an epoch's AEAD key and IV are
 * `HKDF-Expand(secret, "kcprpc key" / "kcprpc iv")`, the next epoch's secret
 * `HKDF-Expand(secret, "kcprpc ku")`; the nonce is `IV xor packet number` (12 bytes, big-endian).
 */
import { utf8 } from "./bytes.js";
import { hkdfExpand, type Aead, type CipherSuite } from "./noise.js";

const LABEL_KEY = utf8("kcprpc key");
const LABEL_IV = utf8("kcprpc iv");
const LABEL_UPDATE = utf8("kcprpc ku");

/** The AEAD and IV of one direction in one epoch. */
export class EpochKeys {
  /** The AEAD of this epoch. */
  readonly aead: Aead;
  private readonly iv: Uint8Array;

  /** Keys of `epoch` from its 32-byte `secret`. */
  constructor(readonly suite: CipherSuite, readonly secret: Uint8Array, readonly epoch: number) {
    this.aead = suite.aead(hkdfExpand(secret, LABEL_KEY, 32));
    this.iv = hkdfExpand(secret, LABEL_IV, 12);
  }

  /** The 12-byte nonce of packet number `pn`. */
  nonce(pn: number): Uint8Array {
    const out = Uint8Array.from(this.iv);
    let x = pn;
    for (let i = 11; i >= 4 && x > 0; i--) {
      out[i] = (out[i] as number) ^ (x % 256);
      x = Math.floor(x / 256);
    }
    return out;
  }

  /** The keys of the following epoch. */
  next(): EpochKeys {
    return new EpochKeys(this.suite, hkdfExpand(this.secret, LABEL_UPDATE, 32), this.epoch + 1);
  }
}
