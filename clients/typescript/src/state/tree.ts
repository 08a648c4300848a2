/**
 * State trees: check full trees and apply changes from the network, build typed values, list
 * what changed (docs/wire-format/state.md, "Trees"). Sans-I/O; trees are never mutated (a
 * change makes new arrays and maps along its path and shares the rest), so the states kept as
 * baselines stay intact.
 *
 * A tree, per node kind: MODEL an array of its fields' trees, MAP a `Map` of key to tree, LIST
 * an array of trees, LEAF the decoded msgpack value (a quantized number: its integer).
 *
 * msgpack maps arrive decoded as plain objects (the RPC layer's decoder), so their keys are
 * strings: a MAP's int keys are read back with the schema (a key must be the decimal form of an
 * integer), a model change's field indexes likewise.
 */
import { Kind, type ItemNode, type LeafNode, type ListNode, type MapNode, type ModelNode, type Node } from "./schema.js";

/** A received snapshot or delta that does not fit the schema or the bounds (`malformed`). */
export class BadDelta extends Error {
  override name = "BadDelta";
}

/** A received state that does not validate against the schema's leaf types (`invalid`). */
export class InvalidState extends Error {
  override name = "InvalidState";
}

/** Bounds on one received message: at most `entries` nodes, `maxEntities` entries in any one MAP or LIST. */
export class Budget {
  /** @param entries nodes left @param maxEntities entries allowed in one collection */
  constructor(
    public entries: number,
    readonly maxEntities: number,
  ) {}
  /** Charge `n` nodes; {@link BadDelta} when over. */
  take(n: number): void {
    this.entries -= n;
    if (this.entries < 0) throw new BadDelta("message over its node budget");
  }
}

/** A MAP key (str or int). */
export type Key = string | number;
/** A MAP tree. */
export type MapTree = ReadonlyMap<Key, unknown>;

/** Is `v` a decoded msgpack map (a plain object) or a `Map`. */
export function isMapLike(v: unknown): v is Record<string, unknown> | Map<unknown, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** The entries of a decoded msgpack map (own keys only). */
export function entriesOf(v: Record<string, unknown> | Map<unknown, unknown>): Array<[unknown, unknown]> {
  return v instanceof Map ? [...v.entries()] : Object.entries(v);
}

const INT_KEY = /^-?(0|[1-9]\d*)$/;

/** A key as the schema declares it, or undefined when it cannot be one. */
export function keyAs(type: "str" | "int", k: unknown): Key | undefined {
  if (type === "str") {
    if (typeof k === "string") return k;
    return typeof k === "number" && Number.isInteger(k) ? String(k) : undefined; // an object key that was an int
  }
  if (typeof k === "number") return Number.isInteger(k) ? k : undefined;
  if (typeof k === "string" && INT_KEY.test(k)) {
    const n = Number(k);
    return Number.isSafeInteger(n) ? n : undefined;
  }
  return undefined;
}

/** A field or list index from a decoded map key, or -1. */
export function indexOf(k: unknown): number {
  const n = keyAs("int", k);
  return typeof n === "number" && n >= 0 ? n : -1;
}

/** How deep {@link deepEqual} looks into nested values (a leaf's value may nest as deep as msgpack allows). */
export const MAX_COMPARE_DEPTH = 512;

/**
 * Deep equality of trees and leaf values (arrays, Maps, plain objects, bytes, primitives). Values
 * nested deeper than {@link MAX_COMPARE_DEPTH} compare unequal (never a stack overflow): the cost
 * is a rebuilt value or a callback that fires, never a wrong state.
 */
export function deepEqual(a: unknown, b: unknown, depth = 0): boolean {
  if (a === b) return true;
  if (depth > MAX_COMPARE_DEPTH) return false;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i], depth + 1)) return false;
    return true;
  }
  if (a instanceof Map) {
    if (!(b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) {
      if (!b.has(k) || !deepEqual(v, b.get(k), depth + 1)) return false;
    }
    return true;
  }
  if (ArrayBuffer.isView(a)) {
    if (!ArrayBuffer.isView(b) || a.byteLength !== b.byteLength) return false;
    const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
    return true;
  }
  if (Array.isArray(b) || b instanceof Map || ArrayBuffer.isView(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k)) return false;
    if (!deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], depth + 1)) return false;
  }
  return true;
}

// ------------------------------------------------------------------------------------ full trees

/** Check a full tree from the network against `node`; returns it as a tree. */
export function full(node: Node, value: unknown, budget: Budget): unknown {
  switch (node.kind) {
    case Kind.LEAF:
      return value;
    case Kind.MODEL: {
      const fields = node.fields;
      if (!Array.isArray(value) || value.length !== fields.length) throw new BadDelta("a model must be an array of its fields");
      budget.take(value.length);
      return fields.map((f, i) => (f.kind === Kind.LEAF ? value[i] : full(f, value[i], budget)));
    }
    case Kind.MAP: {
      if (!isMapLike(value)) throw new BadDelta("a dict must be a map");
      const es = entriesOf(value);
      if (es.length > budget.maxEntities) throw new BadDelta("too many entities");
      budget.take(es.length);
      const keys = es.map(([k]) => {
        const key = keyAs(node.key, k);
        if (key === undefined) throw new BadDelta("bad key type");
        return key;
      });
      const out = new Map<Key, unknown>();
      const leaf = node.item.kind === Kind.LEAF;
      es.forEach(([, v], i) => out.set(keys[i] as Key, leaf ? v : full(node.item, v, budget)));
      if (out.size !== es.length) throw new BadDelta("a key twice");
      return out;
    }
    default: {
      if (!Array.isArray(value)) throw new BadDelta("a list must be an array");
      if (value.length > budget.maxEntities) throw new BadDelta("too many entities");
      budget.take(value.length);
      if (node.item.kind === Kind.LEAF) return value.slice();
      return value.map((v) => full(node.item, v, budget));
    }
  }
}

// --------------------------------------------------------------------------------------- apply

/** The tree `old` with `change` (from the network) applied; `old` is not modified. */
export function apply(node: Node, old: unknown, change: unknown, budget: Budget): unknown {
  switch (node.kind) {
    case Kind.LEAF:
      return change;
    case Kind.MODEL:
      return applyModel(node, old as readonly unknown[], change, budget);
    case Kind.MAP:
      return applyMap(node, old as MapTree, change, budget);
    default:
      return applyList(node, old as readonly unknown[], change, budget);
  }
}

/** A MODEL change: `{field index: change}`. */
export function applyModel(node: ModelNode, old: readonly unknown[], change: unknown, budget: Budget): unknown[] {
  if (!isMapLike(change)) throw new BadDelta("a model change must be a map");
  const es = entriesOf(change);
  budget.take(es.length);
  const out = old.slice();
  const fields = node.fields;
  for (const [k, c] of es) {
    const i = indexOf(k);
    if (i < 0 || i >= fields.length) throw new BadDelta("bad field index");
    const f = fields[i] as Node;
    out[i] = f.kind === Kind.LEAF ? c : apply(f, old[i], c, budget);
  }
  return out;
}

function collectionChange(change: unknown, budget: Budget): [unknown, Array<[unknown, unknown]>, unknown] {
  if (!Array.isArray(change) || change.length !== 3) throw new BadDelta("a collection change must be a 3-array");
  const [a, changed, added] = change as [unknown, unknown, unknown];
  if (!isMapLike(changed)) throw new BadDelta("changed entries must be a map");
  const es = entriesOf(changed);
  budget.take(es.length);
  return [a, es, added];
}

function applyMap(node: MapNode, old: MapTree, change: unknown, budget: Budget): Map<Key, unknown> {
  const [removed, changed, added] = collectionChange(change, budget);
  if (!Array.isArray(removed) || !isMapLike(added)) throw new BadDelta("bad map change");
  const adds = entriesOf(added);
  budget.take(removed.length + adds.length);
  const leaf = node.item.kind === Kind.LEAF;
  const out = new Map(old);
  for (const r of removed) {
    const k = keyAs(node.key, r);
    if (k === undefined || !out.has(k)) throw new BadDelta("removed key not present");
    out.delete(k);
  }
  for (const [r, c] of changed) {
    const k = keyAs(node.key, r);
    if (k === undefined || !out.has(k)) throw new BadDelta("changed key not present");
    out.set(k, leaf ? c : apply(node.item, out.get(k), c, budget));
  }
  for (const [r, v] of adds) {
    const k = keyAs(node.key, r);
    if (k === undefined || out.has(k)) throw new BadDelta("added key already present");
    out.set(k, leaf ? v : full(node.item, v, budget));
  }
  if (out.size > budget.maxEntities) throw new BadDelta("too many entities");
  return out;
}

function applyList(node: ListNode, old: readonly unknown[], change: unknown, budget: Budget): unknown[] {
  const [n, changed, added] = collectionChange(change, budget);
  if (typeof n !== "number" || !Number.isInteger(n) || !Array.isArray(added)) throw new BadDelta("bad list change");
  budget.take(added.length);
  const nOld = old.length;
  if (n < 0 || n > budget.maxEntities) throw new BadDelta("bad list length");
  if ((n <= nOld && added.length) || (n > nOld && added.length !== n - nOld)) throw new BadDelta("list length does not match the appended entries");
  const leaf = node.item.kind === Kind.LEAF;
  const out = old.slice(0, n);
  const common = Math.min(n, nOld);
  for (const [r, c] of changed) {
    const i = indexOf(r);
    if (i < 0 || i >= common) throw new BadDelta("bad list index");
    out[i] = leaf ? c : apply(node.item, out[i], c, budget);
  }
  for (const v of added) out.push(leaf ? v : full(node.item, v, budget));
  return out;
}

// ------------------------------------------------------------------------------------- values

/** A quantized number's value: `integer × step` (anything else as it is). */
export function unquantize(step: number, v: unknown): unknown {
  if (typeof v === "number" && Number.isInteger(v)) return v * step;
  if (typeof v === "bigint") return Number(v) * step;
  return v;
}

/**
 * The typed value of a tree, validated (throws {@link InvalidState}). With `prev` (the tree and
 * value held before), subtrees equal to the held ones keep their value objects: an unchanged
 * entity is the same object in the old and the new state, and costs nothing to rebuild.
 */
export function valueOf(node: Node, tree: unknown, prev?: { tree: unknown; value: unknown }): unknown {
  if (prev !== undefined && tree === prev.tree) return prev.value;
  switch (node.kind) {
    case Kind.LEAF:
      return leafValue(node, tree, prev);
    case Kind.MODEL: {
      const t = tree as readonly unknown[];
      const pt = prev?.tree as readonly unknown[] | undefined;
      const pv = prev?.value as Record<string, unknown> | undefined;
      const out: Record<string, unknown> = {};
      let same = prev !== undefined;
      node.names.forEach((name, i) => {
        const v = valueOf(node.fields[i] as Node, t[i], pt && pv ? { tree: pt[i], value: pv[name] } : undefined);
        out[name] = v;
        if (same && v !== pv?.[name]) same = false;
      });
      return same ? prev!.value : out;
    }
    case Kind.MAP: {
      const t = tree as MapTree;
      const pt = prev?.tree as MapTree | undefined;
      const pv = prev?.value as Map<Key, unknown> | undefined;
      const out = new Map<Key, unknown>();
      let same = pv !== undefined && pv.size === t.size;
      for (const [k, sub] of t) {
        const had = pt !== undefined && pv !== undefined && pt.has(k) && pv.has(k);
        const v = valueOf(node.item, sub, had ? { tree: pt.get(k), value: pv.get(k) } : undefined);
        out.set(k, v);
        if (same && (!had || v !== pv.get(k))) same = false;
      }
      return same ? prev!.value : out;
    }
    default: {
      const t = tree as readonly unknown[];
      const pt = prev?.tree as readonly unknown[] | undefined;
      const pv = prev?.value as unknown[] | undefined;
      let same = pv !== undefined && pv.length === t.length;
      const out = t.map((sub, i) => {
        const had = pt !== undefined && pv !== undefined && i < pt.length && i < pv.length;
        const v = valueOf(node.item, sub, had ? { tree: pt[i], value: pv[i] } : undefined);
        if (same && (!had || v !== pv[i])) same = false;
        return v;
      });
      return same ? prev!.value : out;
    }
  }
}

function leafValue(node: LeafNode, tree: unknown, prev?: { tree: unknown; value: unknown }): unknown {
  if (prev !== undefined && deepEqual(tree, prev.tree)) return prev.value;
  const v = node.step === null ? tree : unquantize(node.step, tree);
  if (!node.check(v)) throw new InvalidState(`a value that is not a ${node.type}`);
  return v;
}

// ------------------------------------------------------------------------------------ changes

/** What changed: a field (by path), or an entry of the collection at path. */
export type ChangeKind = "field" | "add" | "change" | "remove";
/** One change found by {@link changes}. */
export interface Change {
  /** Field names from the root. */
  path: string[];
  /** What happened. */
  what: ChangeKind;
  /** The entry's key or index (entries), else undefined. */
  key?: Key;
}

/** A leaf's value before the first state: different from every real value. */
export const UNSET: unique symbol = Symbol("unset");

/** The tree every real tree differs from in every field (the "before" of the first state). */
export function emptyTree(node: Node): unknown {
  switch (node.kind) {
    case Kind.MODEL:
      return node.fields.map(emptyTree);
    case Kind.MAP:
      return new Map();
    case Kind.LIST:
      return [];
    default:
      return UNSET;
  }
}

/**
 * The changes from tree `old` to tree `tree` (a MODEL), outermost first: each model field that
 * differs, then (for a collection field) its entries removed, changed, added. Entries of
 * collections inside entities are not listed (their entity's change covers them).
 */
export function changes(node: ModelNode, old: readonly unknown[], tree: readonly unknown[], path: string[] = [], out: Change[] = []): Change[] {
  node.fields.forEach((f, i) => {
    const o = old[i];
    const n = tree[i];
    if (o === n || deepEqual(o, n)) return;
    const p = [...path, node.names[i] as string];
    out.push({ path: p, what: "field" });
    if (f.kind === Kind.MODEL) changes(f, o as readonly unknown[], n as readonly unknown[], p, out);
    else if (f.kind === Kind.MAP) {
      const om = o as MapTree;
      const nm = n as MapTree;
      for (const k of om.keys()) if (!nm.has(k)) out.push({ path: p, what: "remove", key: k });
      const added: Key[] = [];
      for (const [k, v] of nm) {
        if (!om.has(k)) added.push(k);
        else if (!deepEqual(om.get(k), v)) out.push({ path: p, what: "change", key: k });
      }
      for (const k of added) out.push({ path: p, what: "add", key: k });
    } else if (f.kind === Kind.LIST) {
      const ol = o as readonly unknown[];
      const nl = n as readonly unknown[];
      for (let k = nl.length; k < ol.length; k++) out.push({ path: p, what: "remove", key: k });
      const common = Math.min(ol.length, nl.length);
      for (let k = 0; k < common; k++) if (!deepEqual(ol[k], nl[k])) out.push({ path: p, what: "change", key: k });
      for (let k = ol.length; k < nl.length; k++) out.push({ path: p, what: "add", key: k });
    }
  });
  return out;
}

/** Re-exported for the item type of collections. */
export type { ItemNode };
