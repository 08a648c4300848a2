/** Byte helpers shared by the layers (kcp, mux, secure). */

/**
 * The bytes of `parts`, one after the other, in a new array (`total`: their summed length, computed
 * when omitted).
 */
export function joinBytes(parts: readonly Uint8Array[], total?: number): Uint8Array {
  let n = total ?? 0;
  if (total === undefined) for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * As {@link joinBytes}, but a lone part (of length `total`, when given) is returned itself, not
 * copied: for hot paths that never write to the result.
 */
export function concat(parts: readonly Uint8Array[], total?: number): Uint8Array {
  const only = parts.length === 1 ? (parts[0] as Uint8Array) : null;
  if (only !== null && (total === undefined || total === only.length)) return only;
  return joinBytes(parts, total);
}
