/**
 * The shape of a synced state, declared in TypeScript (docs/wire-format/state.md, "The schema").
 *
 * The server's state is a pydantic model; the client declares the same shape with {@link S}:
 *
 * ```ts
 * const Player = S.model({ name: S.str(), x: S.quantized(0.01), y: S.quantized(0.01), away: S.bool() });
 * const MatchState = S.model({ tick: S.int(), server_time: S.float(), players: S.map("str", Player) });
 * type MatchState = Infer<typeof MatchState>; // { tick: number; server_time: number; players: Map<string, {...}> }
 * ```
 *
 * Fields are numbered in the order they are written (the model's declaration order on the
 * server); the schema id (CRC-32 of {@link describe}) is checked against every snapshot, so a
 * shape that differs from the server's is refused (`schema_mismatch`), never misread.
 *
 * Typed values: a MODEL is a plain object keyed by field name, a MAP a `Map` (str or int keys: a
 * `Map` keeps the key's type and is safe from keys such as `"__proto__"`), a LIST an array, a LEAF
 * the decoded msgpack value (a quantized number: `integer × step`).
 */
import { crc32 } from "../crc32.js";
import { UsageError } from "../rpc/status.js";

/** Node kinds (as the Python schema's). */
export const Kind = { LEAF: 0, MODEL: 1, MAP: 2, LIST: 3 } as const;

/** A leaf: a value sent whole. `check` validates a received value (false: the state is `invalid`). */
export interface LeafNode<T = unknown> {
  /** {@link Kind.LEAF} */
  readonly kind: 0;
  /** A quantized number's step (sent as `round(value / step)`), else null. */
  readonly step: number | null;
  /** What the value must be (a name, for error messages). */
  readonly type: string;
  /** Validates a received (unquantized) value. */
  readonly check: (v: unknown) => boolean;
  /** Phantom: the value's type. */
  readonly __t?: T;
}

/** A nested model: synced field by field. */
export interface ModelNode<F extends Fields = Fields> {
  /** {@link Kind.MODEL} */
  readonly kind: 1;
  /** The fields by name, in wire order. */
  readonly shape: F;
  /** Field names in index order. */
  readonly names: readonly string[];
  /** Their nodes. */
  readonly fields: readonly Node[];
}

/** A map of entries by key (`dict[str, V]` or `dict[int, V]`). */
export interface MapNode<K extends "str" | "int" = "str" | "int", V extends ItemNode = ItemNode> {
  /** {@link Kind.MAP} */
  readonly kind: 2;
  /** The key type. */
  readonly key: K;
  /** The entry's node. */
  readonly item: V;
}

/** A list of entries (`list[V]`). */
export interface ListNode<V extends ItemNode = ItemNode> {
  /** {@link Kind.LIST} */
  readonly kind: 3;
  /** The entry's node. */
  readonly item: V;
}

/** Any schema node. */
export type Node = LeafNode | ModelNode | MapNode | ListNode;
/** What a MAP or LIST holds: an entity (MODEL) or a LEAF (a collection of collections is a LEAF). */
export type ItemNode = LeafNode | ModelNode;
/** A model's fields by name. */
export type Fields = { readonly [name: string]: Node };

/** The plain TypeScript type of a node's value. */
export type Infer<N> = N extends LeafNode<infer T>
  ? T
  : N extends ModelNode<infer F>
    ? { [K in keyof F]: Infer<F[K]> }
    : N extends MapNode<infer K, infer V>
      ? Map<K extends "int" ? number : string, Infer<V>>
      : N extends ListNode<infer V>
        ? Array<Infer<V>>
        : never;

function leaf<T>(type: string, check: (v: unknown) => boolean, step: number | null = null): LeafNode<T> {
  return { kind: Kind.LEAF, step, type, check };
}

const isInt = (v: unknown): boolean => (typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint";

/** Builders of schema nodes. */
export const S = {
  /** A nested model (or the root): `S.model({ name: S.str(), hp: S.int() })`, fields in the server's order. */
  model<F extends Fields>(shape: F): ModelNode<F> {
    if (typeof shape !== "object" || shape === null) throw new UsageError("S.model() takes an object of fields");
    const names = Object.keys(shape);
    for (const n of names) {
      if (/^(0|[1-9]\d*)$/.test(n)) throw new UsageError(`field name ${JSON.stringify(n)}: a number would not keep its place in the field order`);
      const f = shape[n];
      if (!f || typeof f !== "object" || !("kind" in f)) throw new UsageError(`field ${n}: not a schema node (use S.*)`);
    }
    return { kind: Kind.MODEL, shape, names, fields: names.map((n) => shape[n] as Node) };
  },
  /** A map of entries: `S.map("int", Player)` (`dict[int, Player]`), `S.map("str", S.int())`. */
  map<K extends "str" | "int", V extends ItemNode>(key: K, item: V): MapNode<K, V> {
    if (key !== "str" && key !== "int") throw new UsageError('S.map() keys are "str" or "int"');
    return { kind: Kind.MAP, key, item: itemOf(item) };
  },
  /** A list of entries: `S.list(Item)`, `S.list(S.str())`. */
  list<V extends ItemNode>(item: V): ListNode<V> {
    return { kind: Kind.LIST, item: itemOf(item) };
  },
  /** A str leaf. */
  str(): LeafNode<string> {
    return leaf("str", (v) => typeof v === "string");
  },
  /** An int leaf (a JS number; a bigint beyond 2^64 decodes as such). */
  int(): LeafNode<number> {
    return leaf("int", isInt);
  },
  /** A float leaf. */
  float(): LeafNode<number> {
    return leaf("float", (v) => typeof v === "number" || typeof v === "bigint");
  },
  /** A bool leaf. */
  bool(): LeafNode<boolean> {
    return leaf("bool", (v) => typeof v === "boolean");
  },
  /** A bytes leaf. */
  bytes(): LeafNode<Uint8Array> {
    return leaf("bytes", (v) => v instanceof Uint8Array);
  },
  /** `Annotated[float, Quantized(step)]`: an integer on the wire, `integer × step` here. */
  quantized(step: number): LeafNode<number> {
    if (typeof step !== "number" || !(step >= 1e-6 && step < 1e12)) throw new UsageError(`Quantized step must be a number from 1e-6 to 1e12, not ${String(step)}`);
    return leaf("float", (v) => typeof v === "number", step);
  },
  /** `X | None`: the leaf's value or null. */
  optional<T>(inner: LeafNode<T>): LeafNode<T | null> {
    if (inner.kind !== Kind.LEAF) throw new UsageError("S.optional() takes a leaf (an optional model is a leaf: S.optional(S.any()))");
    return leaf(`${inner.type} | None`, (v) => v === null || inner.check(v), inner.step);
  },
  /** Any other value sent whole (sets, tuples, unions, optional models, dicts of lists ...), optionally checked. */
  any<T = unknown>(check?: (v: unknown) => boolean): LeafNode<T> {
    return leaf("any", check ?? (() => true));
  },
};

function itemOf<V extends ItemNode>(item: V): V {
  const k = (item as Node).kind;
  if (k === Kind.MAP || k === Kind.LIST) throw new UsageError("a collection of collections is a leaf on the wire: declare the entry as S.any()");
  if (k !== Kind.LEAF && k !== Kind.MODEL) throw new UsageError("not a schema node (use S.*)");
  return item;
}

/** The canonical description hashed into the schema id. */
export function describe(node: Node): string {
  switch (node.kind) {
    case Kind.MODEL:
      return "{" + node.names.map((n, i) => `${n}:${describe(node.fields[i] as Node)}`).join(",") + "}";
    case Kind.MAP:
      return `map<${node.key},` + describe(node.item) + ">";
    case Kind.LIST:
      return "list<" + describe(node.item) + ">";
    default:
      return node.step === null ? "v" : `q${pyRound(node.step * 1_000_000)}`;
  }
}

/** Python's round() of a float to an int: half to even. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** The schema id of a root model: CRC-32 (IEEE) of the UTF-8 of {@link describe}. */
export function schemaId(root: ModelNode): number {
  return crc32(new TextEncoder().encode(describe(root)));
}

/** The node at a dotted path (`"players"`, `"settings.mode"`) and whether it is inside an entity (`*`). */
export function nodeAt(root: ModelNode, path: string): Node {
  let node: Node = root;
  for (const part of path ? path.split(".") : []) {
    if (node.kind !== Kind.MODEL || !Object.prototype.hasOwnProperty.call(node.shape, part)) {
      throw new UsageError(`${JSON.stringify(path)}: no field ${JSON.stringify(part)} in the state model`);
    }
    node = node.shape[part] as Node;
  }
  return node;
}
