/**
 * Anti-replay sliding window over packet numbers (RFC 6479 / WireGuard style), as the Python
 * `kcp/secure/replay.py`: {@link ReplayWindow.check} before authentication (cheap reject),
 * {@link ReplayWindow.update} only after the AEAD accepted the packet, so forged packets cannot
 * move the window. Memory: `size` bits.
 */

/** {@link ReplayWindow.check}: not seen yet. */
export const REPLAY_OK = 0;
/** {@link ReplayWindow.check}: already accepted. */
export const REPLAY_DUPLICATE = 1;
/** {@link ReplayWindow.check}: older than the window. */
export const REPLAY_TOO_OLD = 2;

/** Remembers which of the last `size` packet numbers up to the highest one were accepted. */
export class ReplayWindow {
  /** The highest packet number accepted so far (-1: none). */
  top = -1;
  private readonly bits: Uint32Array;

  /** A window of `size` packets (at least 64, a multiple of 32 is used). */
  constructor(readonly size = 2048) {
    if (!(size >= 64)) throw new RangeError("replay window must be at least 64");
    this.bits = new Uint32Array(Math.ceil(size / 32));
  }

  private slot(pn: number): [number, number] {
    const i = pn % this.size;
    return [i >>> 5, 1 << (i & 31)];
  }

  /** {@link REPLAY_OK}, {@link REPLAY_DUPLICATE} or {@link REPLAY_TOO_OLD}; does not change the window. */
  check(pn: number): number {
    if (pn > this.top) return REPLAY_OK;
    if (this.top - pn >= this.size) return REPLAY_TOO_OLD;
    const [w, b] = this.slot(pn);
    return ((this.bits[w] as number) & b) !== 0 ? REPLAY_DUPLICATE : REPLAY_OK;
  }

  /** Mark `pn` as received (only after it authenticated and passed {@link check}). */
  update(pn: number): void {
    if (pn > this.top) {
      const shift = pn - this.top;
      if (shift >= this.size || this.top < 0) {
        this.bits.fill(0);
      } else {
        for (let q = this.top + 1; q < pn; q++) {
          const [w, b] = this.slot(q);
          this.bits[w] = (this.bits[w] as number) & ~b;
        }
      }
      this.top = pn;
    }
    const [w, b] = this.slot(pn);
    this.bits[w] = (this.bits[w] as number) | b;
  }
}
