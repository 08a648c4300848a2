/**
 * Groups (docs/wire-format/state.md, "Parts"): a state cut into `n` key groups, each synced on
 * its own. Every entry of a MAP field of the root belongs to the group of its key; the root's
 * other fields to group 0. A group tree has the root's shape with `undefined` in the fields the
 * group does not own, and only the group's keys in its MAP fields.
 */
import { crc32 } from "../crc32.js";
import { Kind, type MapNode, type ModelNode } from "./schema.js";
import { BadDelta, type Budget, full, entriesOf, indexOf, isMapLike, keyAs, type Key, type MapTree } from "./tree.js";

/** Most groups a sync may have. */
export const MAX_GROUPS = 256;

const utf8 = new TextEncoder();

/** The group of a MAP key: an int `k` to `k mod n` (floor modulo), a str to CRC-32 of its UTF-8 `mod n`. */
export function groupOf(key: Key, n: number): number {
  if (typeof key === "number") return ((key % n) + n) % n;
  return crc32(utf8.encode(key)) % n;
}

/** The grouping of one root model into `n` groups. */
export class Groups {
  /** Indexes of the root's MAP fields. */
  readonly maps: number[];
  /** @param root the root model @param n the number of groups (2 to 256) */
  constructor(
    readonly root: ModelNode,
    readonly n: number,
  ) {
    this.maps = root.fields.flatMap((f, i) => (f.kind === Kind.MAP ? [i] : []));
  }

  /** Whether group `g` holds root field `i`. */
  owns(g: number, i: number): boolean {
    return g === 0 || this.maps.includes(i);
  }

  /** The root tree of the groups' trees: group 0's fields, each MAP field the union of the groups'. */
  merge(trees: ReadonlyArray<readonly unknown[]>): unknown[] {
    const out = (trees[0] as readonly unknown[]).slice();
    for (const i of this.maps) {
      const m = new Map<Key, unknown>();
      for (const t of trees) for (const [k, v] of t[i] as MapTree) m.set(k, v);
      out[i] = m;
    }
    return out;
  }

  /** Check a group's full tree from the network (`{field index: full tree}` of exactly its fields). */
  full(g: number, body: unknown, budget: Budget): unknown[] {
    if (!isMapLike(body)) throw new BadDelta("a group's full tree must be a map");
    const nf = this.root.fields.length;
    const given = new Map<number, unknown>();
    for (const [k, v] of entriesOf(body)) {
      const i = indexOf(k);
      if (i < 0 || i >= nf || !this.owns(g, i) || given.has(i)) throw new BadDelta("a group's full tree must hold exactly its fields");
      given.set(i, v);
    }
    const want = g === 0 ? nf : this.maps.length;
    if (given.size !== want) throw new BadDelta("a group's full tree must hold exactly its fields");
    budget.take(given.size);
    const out: unknown[] = new Array<unknown>(nf).fill(undefined);
    for (let i = 0; i < nf; i++) if (given.has(i)) out[i] = full(this.root.fields[i]!, given.get(i), budget);
    this.checkKeys(g, out, null);
    return out;
  }

  /** A group's change names only fields the group owns. */
  checkChange(g: number, change: unknown): void {
    if (!isMapLike(change)) throw new BadDelta("a model change must be a map");
    for (const [k] of entriesOf(change)) {
      const i = indexOf(k);
      if (i < 0 || i >= this.root.fields.length || !this.owns(g, i)) throw new BadDelta("a change to a field of another group");
    }
  }

  /** The keys `tree` holds (change null) or the change added belong to group `g` (`tree` already applied). */
  checkKeys(g: number, tree: readonly unknown[], change: unknown): void {
    for (const i of this.maps) {
      let keys: Iterable<Key>;
      if (change === null) keys = (tree[i] as MapTree).keys();
      else {
        const c = entriesOf(change as Record<string, unknown>).find(([k]) => indexOf(k) === i);
        if (c === undefined || c[1] === null || c[1] === undefined) continue;
        // [removed, changed, added]: removed and changed keys exist already (apply checked them)
        const added = (c[1] as unknown[])[2] as Record<string, unknown>;
        const type = (this.root.fields[i] as MapNode).key;
        keys = entriesOf(added).map(([k]) => keyAs(type, k) as Key);
      }
      for (const k of keys) if (groupOf(k, this.n) !== g) throw new BadDelta("a key of another group");
    }
  }
}
