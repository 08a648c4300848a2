/**
 * The canonical JSON form of a state value, as tests/clients/state_canon.py builds it on the Python
 * side: a model as an object, a map as its entries sorted by typed key (`i3`, `s3`), a list item by item.
 */
import { Kind, type Node } from "../../src/state/schema.js";

/** A map key with its type: `i3` for the number 3, `s3` for the string "3". */
export const keyrepr = (k: unknown): string => (typeof k === "number" ? `i${k}` : `s${String(k)}`);

/** `v` (of schema `node`) in the canonical form both sides build. */
export function canon(node: Node, v: unknown): unknown {
  switch (node.kind) {
    case Kind.MODEL: {
      const out: Record<string, unknown> = {};
      node.names.forEach((n, i) => (out[n] = canon(node.fields[i] as Node, (v as Record<string, unknown>)[n])));
      return out;
    }
    case Kind.MAP: {
      const es = [...(v as Map<unknown, unknown>).entries()].map(([k, x]) => [keyrepr(k), canon(node.item, x)] as [string, unknown]);
      // Python's sorted(): by the key string, code point order
      return es.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    }
    case Kind.LIST:
      return (v as unknown[]).map((x) => canon(node.item, x));
    default:
      return v;
  }
}
