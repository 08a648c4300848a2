/**
 * The client side of kcprpc's delta state sync (docs/state.md, docs/wire-format/state.md):
 * {@link StateView} applies snapshots, deltas against the states it acknowledged, and PARTS
 * messages (a sync with groups), keeps the typed state as plain objects and fires change
 * callbacks; {@link attach} wires a view to a {@link Client} (its `EVENT`s in, its
 * acknowledgements out as the unreliable notify `kcprpc.State/Ack`).
 *
 * Whatever comes from the network is checked against the schema and the bounds; a message that
 * does not fit is dropped and counted in {@link StateView.stats}, never thrown. Memory is bounded:
 * at most `maxBaselines` states per group, one staged entry per group, and `maxNodes` /
 * `maxEntities` per message.
 */
import type { Client, RawEvent } from "../rpc/client.js";
import { callGuarded, defaultReporter } from "../rpc/guard.js";
import { UsageError } from "../rpc/status.js";
import { Groups, MAX_GROUPS } from "./groups.js";
import { Kind, nodeAt, schemaId, type Infer, type ModelNode, type Node } from "./schema.js";
import {
  applyModel,
  BadDelta,
  Budget,
  changes,
  emptyTree,
  full,
  InvalidState,
  valueOf,
  type Key,
} from "./tree.js";

/** Message kinds. */
export const SNAPSHOT = 0;
/** A delta against an acknowledged state. */
export const DELTA = 1;
/** One part of a tick of a sync with groups. */
export const PARTS = 2;
/** The default sync name. */
export const DEFAULT_NAME = "kcprpc.state";
/** The acknowledgement's wire name (a notify). */
export const ACK_METHOD = "kcprpc.State/Ack";
/** How long {@link attach} waits for the missing parts of a tick before applying those it has (ms). */
export const COMMIT_DELAY_MS = 10;

/** The view's counters (as the Python view's `stats`). */
export interface StateViewStats {
  /** Messages applied (a new typed state). */
  applied: number;
  /** Snapshots applied (with groups: group full trees). */
  snapshots: number;
  /** Dropped: not newer than the state held. */
  stale: number;
  /** Dropped: a delta against a state this view does not hold. */
  no_base: number;
  /** Dropped: not a state message, or not fitting the schema or the bounds. */
  malformed: number;
  /** Dropped: a snapshot of another schema. */
  schema_mismatch: number;
  /** Dropped: the result does not validate against the schema's leaf types. */
  invalid: number;
  /** PARTS messages kept (some group entry staged). */
  parts: number;
  /** Group entries applied. */
  groups_applied: number;
}

/** The names of {@link StateViewStats}. */
export const VIEW_COUNTERS: ReadonlyArray<keyof StateViewStats> = [
  "applied", "snapshots", "stale", "no_base", "malformed", "schema_mismatch", "invalid", "parts", "groups_applied",
];

/** Bounds of a view. */
export interface StateViewOptions {
  /** States kept per group to apply deltas to (default 32, as the server's). */
  maxBaselines?: number;
  /** Entries in any one MAP or LIST (default 10,000). */
  maxEntities?: number;
  /** Nodes in one message (default 200,000). */
  maxNodes?: number;
  /** Called with an error a callback threw, or the rejection of the promise it returned (default: `console.error`, at most 10 a minute). */
  onCallbackError?: (err: unknown) => void;
}

/** An acknowledgement to send: `seq`, with groups the groups of it applied. */
export interface StateAck {
  /** The sync's name. */
  name: string;
  /** The seq applied. */
  seq: number;
  /** With groups: the groups of `seq` applied. */
  groups?: number[];
}

class Track {
  seq = 0;
  fresh = 0;
  trees = new Map<number, unknown[]>();
  keep(seq: number, tree: unknown[], base: number, bound: number): void {
    keep(this.trees, seq, tree, base, bound);
    this.seq = seq;
    this.fresh = Math.max(this.fresh, seq);
  }
}

/** Keep `tree` as `seq`: forget states older than `base` (never used again), stay within `bound`. */
function keep(trees: Map<number, unknown[]>, seq: number, tree: unknown[], base: number, bound: number): void {
  for (const s of [...trees.keys()]) if (s < base) trees.delete(s);
  trees.set(seq, tree);
  const limit = Math.max(2, bound);
  while (trees.size > limit) {
    const s = [...trees.keys()].find((x) => x !== base);
    if (s === undefined) break;
    trees.delete(s);
  }
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v);

type FieldCb = (now: unknown, prev: unknown) => void;
type EntryCb = (key: Key, entity: unknown) => void;

/** Root fields of `T` that are collections (typed callback paths). */
type CollectionKeys<T> = { [K in keyof T]: T[K] extends Map<unknown, unknown> | unknown[] ? K : never }[keyof T] & string;
type KeyOf<C> = C extends Map<infer K, unknown> ? K : number;
type EntryOf<C> = C extends Map<unknown, infer V> ? V : C extends Array<infer V> ? V : never;

/**
 * The client's copy of a synced state: `const view = new StateView(MatchState, "state:room1")`.
 * Sans-I/O: {@link receive} takes one message (the sync `EVENT`'s payload) and returns the seq to
 * acknowledge, or null when the message was dropped (counted). {@link attach} does the I/O.
 */
export class StateView<M extends ModelNode> {
  /** The root schema. */
  readonly schema: M;
  /** The schema id snapshots must carry. */
  readonly schemaId: number;
  /** The sync's name (the `EVENT` name). */
  readonly name: string;
  /** The typed state (null before the first complete state). */
  state: Infer<M> | null = null;
  /** The seq the state comes from (with groups: the newest group's). */
  seq = 0;
  /** The oldest seq any part of the state is current at (with groups: the oldest group's `fresh`). */
  minSeq = 0;
  /** The extra the server sent with the state (a tick room: this client's last input seq applied), else null. */
  extra: unknown = null;
  /** The groups the last {@link receive} applied or staged (null: not a PARTS message). */
  ackedGroups: number[] | null = null;
  /** Counters. */
  readonly stats: StateViewStats = { applied: 0, snapshots: 0, stale: 0, no_base: 0, malformed: 0, schema_mismatch: 0, invalid: 0, parts: 0, groups_applied: 0 };

  private readonly maxBaselines: number;
  private readonly maxEntities: number;
  private readonly maxNodes: number;
  private readonly onCallbackError: (err: unknown) => void;
  private tree: unknown[] | null = null;
  private readonly trees = new Map<number, unknown[]>();
  private readonly fieldCbs = new Map<string, FieldCb[]>();
  private readonly entryCbs = new Map<string, EntryCb[]>();
  private readonly stateCbs: Array<(s: Infer<M>) => void> = [];
  private groups: Groups | null = null;
  private tracks: Track[] = [];
  private readonly staged = new Map<number, { seq: number; body: unknown; base: number }>();
  private stagedSeq = 0;
  private stagedCount = 0;
  private stagedExtra: unknown = null;
  private isComplete = false;

  /** @param schema the root model (S.model) @param name the sync's name @param options bounds */
  constructor(schema: M, name: string = DEFAULT_NAME, options: StateViewOptions = {}) {
    if (!schema || schema.kind !== Kind.MODEL) throw new UsageError("StateView needs a root model: S.model({...})");
    if (typeof name !== "string" || !name || name.length > 128) throw new UsageError("a state sync name has 1 to 128 characters");
    const { maxBaselines = 32, maxEntities = 10_000, maxNodes = 200_000 } = options;
    for (const [k, v] of Object.entries({ maxBaselines, maxEntities, maxNodes })) {
      if (!Number.isInteger(v) || v < 1) throw new UsageError(`${k} must be an integer of at least 1`);
    }
    this.schema = schema;
    this.schemaId = schemaId(schema);
    this.name = name;
    this.maxBaselines = maxBaselines;
    this.maxEntities = maxEntities;
    this.maxNodes = maxNodes;
    const onError = options.onCallbackError;
    this.onCallbackError = onError ? (e) => onError(e) : (e) => defaultReporter(e, `a state callback of ${name}`);
  }

  /** With groups: the seq each group is current at; else `[seq]`. */
  get seqs(): number[] {
    return this.tracks.length ? this.tracks.map((t) => t.fresh) : [this.seq];
  }

  /** How many states this view keeps to apply deltas to (bounded: `max(2, maxBaselines)` per group). */
  get held(): number {
    return this.trees.size + this.tracks.reduce((n, t) => n + t.trees.size, 0);
  }

  /** Every part of the newest staged tick is staged: {@link commit} now. */
  get complete(): boolean {
    return this.isComplete;
  }

  /** Group entries wait for {@link commit}. */
  get hasStaged(): boolean {
    return this.staged.size > 0;
  }

  // ---------------------------------------------------------------- callbacks

  /** `cb(now, prev)` when the field at `path` changes (`"phase"`, `"settings.mode"`; a model or collection: anything in it). */
  listen<K extends keyof Infer<M> & string>(path: K, cb: (now: Infer<M>[K], prev: Infer<M>[K] | undefined) => void): () => void;
  listen(path: string, cb: (now: unknown, prev: unknown) => void): () => void;
  listen(path: string, cb: (now: never, prev: never) => void): () => void {
    if (!path) throw new UsageError("listen(): name a field of the state");
    nodeAt(this.schema, path);
    return add(this.fieldCbs, path, cb as FieldCb);
  }

  /** `cb(key, entity)` for each entry added to the map or list at `path`. */
  onAdd<K extends CollectionKeys<Infer<M>>>(path: K, cb: (key: KeyOf<Infer<M>[K]>, entity: EntryOf<Infer<M>[K]>) => void): () => void;
  onAdd(path: string, cb: (key: Key, entity: unknown) => void): () => void;
  onAdd(path: string, cb: (key: never, entity: never) => void): () => void {
    return this.entry("add", path, cb as EntryCb);
  }

  /** `cb(key, entity)` for each entry of the map or list at `path` that changed. */
  onChange<K extends CollectionKeys<Infer<M>>>(path: K, cb: (key: KeyOf<Infer<M>[K]>, entity: EntryOf<Infer<M>[K]>) => void): () => void;
  onChange(path: string, cb: (key: Key, entity: unknown) => void): () => void;
  onChange(path: string, cb: (key: never, entity: never) => void): () => void {
    return this.entry("change", path, cb as EntryCb);
  }

  /** `cb(key, oldEntity)` for each entry removed from the map or list at `path`. */
  onRemove<K extends CollectionKeys<Infer<M>>>(path: K, cb: (key: KeyOf<Infer<M>[K]>, old: EntryOf<Infer<M>[K]>) => void): () => void;
  onRemove(path: string, cb: (key: Key, old: unknown) => void): () => void;
  onRemove(path: string, cb: (key: never, entity: never) => void): () => void {
    return this.entry("remove", path, cb as EntryCb);
  }

  /** `cb(state)` after each applied message. */
  onState(cb: (state: Infer<M>) => void): () => void {
    this.stateCbs.push(cb);
    return () => {
      const i = this.stateCbs.indexOf(cb);
      if (i >= 0) this.stateCbs.splice(i, 1);
    };
  }

  private entry(what: string, path: string, cb: EntryCb): () => void {
    const node: Node = nodeAt(this.schema, path);
    if (node.kind !== Kind.MAP && node.kind !== Kind.LIST) throw new UsageError(`${JSON.stringify(path)} is not a map or list field of the state (outside entities)`);
    return add(this.entryCbs, `${what} ${path}`, cb);
  }

  // ---------------------------------------------------------------- receiving

  /**
   * Apply one message (`[kind, seq, schema id | base, body, extra?]` or a PARTS message); returns
   * the seq to acknowledge (PARTS: {@link ackedGroups} are its groups), or null when it was
   * dropped (counted). `commit: false` (PARTS): only stage the part; {@link commit} applies what is staged.
   */
  receive(msg: unknown, commit = true): number | null {
    const stats = this.stats;
    if (Array.isArray(msg) && (msg.length === 7 || msg.length === 8) && msg[0] === PARTS) return this.receiveParts(msg, commit);
    this.ackedGroups = null;
    if (!Array.isArray(msg) || msg.length < 4 || msg.length > 5) {
      stats.malformed++;
      return null;
    }
    const [kind, seq, ref, body] = msg as [unknown, unknown, unknown, unknown];
    if (!isInt(kind) || !isInt(seq) || !isInt(ref) || seq < 1) {
      stats.malformed++;
      return null;
    }
    if (seq <= this.seq) {
      stats.stale++;
      return null;
    }
    const root = this.schema;
    const budget = new Budget(this.maxNodes, this.maxEntities);
    let tree: unknown[];
    let state: Infer<M>;
    try {
      if (kind === SNAPSHOT) {
        if (ref !== this.schemaId) {
          stats.schema_mismatch++;
          return null;
        }
        tree = full(root, body, budget) as unknown[];
      } else if (kind === DELTA) {
        const base = this.trees.get(ref);
        if (base === undefined) {
          stats.no_base++;
          return null;
        }
        tree = applyModel(root, base, body, budget);
      } else {
        stats.malformed++;
        return null;
      }
      state = this.value(tree);
    } catch (e) {
      if (e instanceof InvalidState) stats.invalid++;
      else stats.malformed++; // BadDelta, or anything else a forged message provokes
      return null;
    }
    // a snapshot keeps the states held before it: an ack for one of them may still be on its way
    keep(this.trees, seq, tree, kind === DELTA ? ref : 0, this.maxBaselines);
    if (this.groups !== null) {
      // the server went back to whole messages: forget the groups
      this.groups = null;
      this.tracks = [];
      this.unstage();
    }
    this.minSeq = seq;
    this.install(tree, state, seq, msg.length === 5 ? msg[4] : null);
    if (kind === SNAPSHOT) stats.snapshots++;
    return seq;
  }

  private value(tree: unknown[]): Infer<M> {
    const prev = this.state !== null && this.tree !== null ? { tree: this.tree, value: this.state } : undefined;
    return valueOf(this.schema, tree, prev) as Infer<M>;
  }

  private unstage(): void {
    this.staged.clear();
    this.stagedSeq = 0;
    this.stagedCount = 0;
    this.isComplete = false;
  }

  private receiveParts(msg: unknown[], commit: boolean): number | null {
    const stats = this.stats;
    this.ackedGroups = null;
    const [, seq, sid, n, nparts, items, idle] = msg;
    if (
      !isInt(seq) || !isInt(sid) || !isInt(n) || !isInt(nparts) || seq < 1 ||
      n < 2 || n > MAX_GROUPS || nparts < 1 || nparts > MAX_GROUPS ||
      !Array.isArray(items) || items.length < 1 || items.length > n ||
      !Array.isArray(idle) || idle.length > n || idle.some((g) => !isInt(g) || g < 0 || g >= n)
    ) {
      stats.malformed++;
      return null;
    }
    if (sid !== this.schemaId) {
      stats.schema_mismatch++;
      return null;
    }
    if (this.groups === null || this.groups.n !== n) {
      // the first PARTS message, or a server with other groups: start over
      this.groups = new Groups(this.schema, n);
      this.tracks = Array.from({ length: n }, () => new Track());
      this.unstage();
    }
    const tracks = this.tracks;
    const staged = this.staged;
    const fresh = new Map<number, { seq: number; body: unknown; base: number }>();
    for (const item of items) {
      if (!Array.isArray(item) || item.length !== 3) {
        stats.malformed++;
        return null;
      }
      const [g, base, body] = item as [unknown, unknown, unknown];
      if (!isInt(g) || !isInt(base) || g < 0 || g >= n || fresh.has(g) || base < 0) {
        stats.malformed++;
        return null;
      }
      const held = staged.get(g);
      const t = tracks[g] as Track;
      if (seq <= (held !== undefined ? held.seq : t.fresh)) {
        stats.stale++;
        continue;
      }
      if (base && !t.trees.has(base)) {
        stats.no_base++;
        continue;
      }
      // kept as it came: checked and applied by commit(), so that a newer entry staged for the
      // group before then supersedes it unapplied (a client behind skips ahead)
      fresh.set(g, { seq, body, base });
    }
    for (const g of idle as number[]) {
      // unchanged at seq: what this view holds of them is current
      const t = tracks[g] as Track;
      if (t.seq && !staged.has(g)) t.fresh = Math.max(t.fresh, seq);
    }
    if (!fresh.size) return null;
    for (const [g, e] of fresh) staged.set(g, e);
    stats.parts++;
    if (seq > this.stagedSeq) {
      this.stagedSeq = seq;
      this.stagedCount = 0;
      this.stagedExtra = msg.length === 8 ? msg[7] : null;
    }
    if (seq === this.stagedSeq) {
      this.stagedCount++;
      this.isComplete = this.stagedCount >= nparts;
    }
    if (commit) {
      const acks = this.commit();
      const mine = acks.get(seq);
      this.ackedGroups = mine ?? null;
      return mine ? seq : null;
    }
    this.ackedGroups = [...fresh.keys()].sort((a, b) => a - b);
    return seq;
  }

  /**
   * Apply the staged group entries (the newest per group): the typed state is rebuilt and
   * validated once and the callbacks fire. Returns what to acknowledge, seq → groups (empty when
   * nothing was staged or the result did not validate).
   */
  commit(): Map<number, number[]> {
    const acks = new Map<number, number[]>();
    if (!this.staged.size) return acks;
    const groups = this.groups as Groups;
    const tracks = this.tracks;
    const extra = this.stagedExtra;
    const budget = new Budget(this.maxNodes, this.maxEntities);
    const built = new Map<number, { seq: number; tree: unknown[]; base: number }>();
    for (const [g, { seq, body, base }] of this.staged) {
      try {
        let tree: unknown[];
        if (base === 0) tree = groups.full(g, body, budget);
        else {
          groups.checkChange(g, body);
          const from = (tracks[g] as Track).trees.get(base);
          if (from === undefined) throw new BadDelta("its base was forgotten");
          tree = applyModel(this.schema, from, body, budget);
          groups.checkKeys(g, tree, body);
        }
        built.set(g, { seq, tree, base });
      } catch {
        this.stats.malformed++; // this group's entry; the others go on
      }
    }
    if (!built.size) {
      this.unstage();
      return acks;
    }
    const trees: Array<unknown[] | undefined> = tracks.map((t, g) => built.get(g)?.tree ?? t.trees.get(t.seq));
    let tree: unknown[] | null = null;
    let state: Infer<M> | null = null;
    if (trees.every((t) => t !== undefined)) {
      tree = groups.merge(trees as unknown[][]);
      try {
        state = this.value(tree);
      } catch (e) {
        if (e instanceof InvalidState) this.stats.invalid++;
        else this.stats.malformed++;
        this.unstage();
        return acks;
      }
    }
    for (const g of [...built.keys()].sort((a, b) => a - b)) {
      const { seq, tree: gtree, base } = built.get(g)!;
      (tracks[g] as Track).keep(seq, gtree, base, this.maxBaselines); // a full tree (base 0) keeps the older ones
      const list = acks.get(seq);
      if (list) list.push(g);
      else acks.set(seq, [g]);
      this.stats.groups_applied++;
      if (base === 0) this.stats.snapshots++;
    }
    this.unstage();
    if (tree !== null && state !== null) {
      this.minSeq = Math.min(...tracks.map((t) => t.fresh));
      this.install(tree, state, Math.max(...tracks.map((t) => t.seq)), extra);
    }
    return acks;
  }

  private install(tree: unknown[], state: Infer<M>, seq: number, extra: unknown): void {
    const oldTree = this.tree ?? (emptyTree(this.schema) as unknown[]);
    const old = this.state;
    this.tree = tree;
    this.state = state;
    this.seq = seq;
    this.extra = extra;
    this.stats.applied++;
    if (this.fieldCbs.size || this.entryCbs.size) this.fire(oldTree, tree, old, state);
    for (const cb of [...this.stateCbs]) this.call(() => cb(state));
  }

  private fire(oldTree: unknown[], tree: unknown[], old: Infer<M> | null, now: Infer<M>): void {
    for (const c of changes(this.schema, oldTree, tree)) {
      const p = c.path.join(".");
      if (c.what === "field") {
        const cbs = this.fieldCbs.get(p);
        if (!cbs) continue;
        const a = at(now, c.path);
        const b = old === null ? undefined : at(old, c.path);
        for (const cb of [...cbs]) this.call(() => cb(a, b));
        continue;
      }
      const cbs = this.entryCbs.get(`${c.what} ${p}`);
      if (!cbs) continue;
      const coll = at(c.what === "remove" ? old : now, c.path);
      const entity = coll instanceof Map ? coll.get(c.key) : (coll as unknown[])[c.key as number];
      for (const cb of [...cbs]) this.call(() => cb(c.key as Key, entity));
    }
  }

  private call(f: () => void): void {
    // the application's error: reported, the other callbacks run (the new state is in place already)
    callGuarded(this.onCallbackError, "a state callback", f);
  }
}

function at(obj: unknown, path: readonly string[]): unknown {
  let o = obj;
  for (const n of path) {
    if (o === null || o === undefined) return undefined;
    o = (o as Record<string, unknown>)[n];
  }
  return o;
}

function add<C>(table: Map<string, C[]>, key: string, cb: C): () => void {
  const list = table.get(key) ?? [];
  list.push(cb);
  table.set(key, list);
  return () => {
    const i = list.indexOf(cb);
    if (i >= 0) list.splice(i, 1);
  };
}

/** What {@link attach} needs of a client (a connected {@link Client} is one). */
export type StateClient = Pick<Client, "onRawEvent" | "notify">;

/**
 * Feed `view` the `EVENT`s named `view.name` that `client` receives and acknowledge each applied
 * one (`kcprpc.State/Ack`, an unreliable notify). PARTS: a tick's parts are applied together once
 * they are all in (after the datagrams read are handled), or {@link COMMIT_DELAY_MS} after the
 * first one. Returns the function that detaches it.
 */
export function attach<M extends ModelNode>(client: StateClient, view: StateView<M>): () => void {
  let timer: { kind: "immediate"; h: NodeJS.Immediate } | { kind: "timeout"; h: NodeJS.Timeout } | null = null;
  const cancel = (): void => {
    if (timer === null) return;
    if (timer.kind === "immediate") clearImmediate(timer.h);
    else clearTimeout(timer.h);
    timer = null;
  };
  const ack = (a: StateAck): void => {
    try {
      client.notify(ACK_METHOD, a);
    } catch {
      // no link right now (reconnecting): an ack is unreliable anyway; the next one supersedes it
    }
  };
  const flush = (): void => {
    cancel();
    for (const [seq, groups] of view.commit()) ack({ name: view.name, seq, groups });
  };
  const off = client.onRawEvent((ev: RawEvent) => {
    if (ev.name !== view.name) return;
    const seq = view.receive(ev.payload, false);
    if (seq === null) return;
    if (view.ackedGroups === null) ack({ name: view.name, seq });
    else if (view.complete) {
      // every part of the tick is in: apply once the datagrams read are handled (a newer tick among them supersedes it unapplied)
      cancel();
      timer = { kind: "immediate", h: setImmediate(flush) };
    } else if (timer === null) timer = { kind: "timeout", h: setTimeout(flush, COMMIT_DELAY_MS) };
  });
  return () => {
    cancel();
    off();
  };
}

/** A {@link StateView} of `schema` attached to `client`: `const view = clientState(client, MatchState, reply.state)`. */
export function clientState<M extends ModelNode>(client: StateClient, schema: M, name: string = DEFAULT_NAME, options: StateViewOptions = {}): StateView<M> {
  const view = new StateView(schema, name, options);
  attach(client, view);
  return view;
}

/** Re-exported: a received message that does not fit (thrown only inside the view). */
export { BadDelta };
