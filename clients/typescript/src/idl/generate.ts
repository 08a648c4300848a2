/**
 * TypeScript from an interface document: message types, a typed client class, event and topic
 * types, and a const with the service's names.
 *
 * The JSON Schema -> TypeScript part is json-schema-to-typescript's (pinned in package.json).
 * Before it runs, the document's schemas are adjusted for it: every message gets a fixed type
 * name (its `$defs` key, PascalCased and made unique), titles inside messages are dropped (so
 * fields are typed inline rather than through one alias per field), `prefixItems` tuples become
 * the `items` arrays it reads, and `{"type": "string", "format": "binary"}` becomes `Uint8Array`
 * (a msgpack bin). Schemas of methods and events that are not a `$ref` are added as messages
 * named after the method or event. The rest (service, methods, streams, events) is ours.
 *
 * Output is deterministic: the same document and options give the same text.
 */

import { compile } from "json-schema-to-typescript";
import type { JSONSchema4 } from "json-schema";
import type { IdlDocument, JsonSchema, JsonValue, MethodDef } from "./document.js";

/** Options of {@link generateService}. */
export interface GenerateOptions {
  /**
   * Where the generated module imports the runtime's types (`RpcChannel`, `CallOptions`, ...)
   * from: `"kcprpc"` (the default) for an application, a relative path inside this package.
   */
  runtimeImport?: string;
  /** What produced the module, named in its header (default `kcprpc-gen-ts`). */
  generatedBy?: string;
}

/** The module file name for a document: `<service name>.ts` (e.g. `game.v1.Game.ts`). */
export function moduleFileName(doc: IdlDocument): string {
  return `${doc.name}.ts`;
}

const ROOT = "__KcprpcRoot";
const NULL_SCHEMA = JSON.stringify({ type: "null" });

/** Names TypeScript code in a module must not redeclare (the generated code uses them). */
const GLOBALS = [
  "Array", "AsyncIterable", "Boolean", "Date", "Error", "Function", "Iterable", "Map", "Number",
  "Object", "Promise", "Readonly", "Record", "Set", "String", "Symbol", "Uint8Array",
];
const RUNTIME_TYPES = ["BidiCall", "CallOptions", "EventInfo", "NotifyOptions", "RpcChannel", "ServerStreamCall"];

/**
 * `"game.chat"` -> `"GameChat"`; a leading digit gets a `T`, a letter after digits is upper-cased
 * (`"2fast"` -> `"T2Fast"`). The result is a name json-schema-to-typescript keeps as it is.
 */
export function pascalCase(name: string): string {
  const out = name
    .split(/[^0-9A-Za-z]+/)
    .filter((p) => p.length > 0)
    .map((p) => p[0]!.toUpperCase() + p.slice(1))
    .join("")
    .replace(/(\d)([a-z])/g, (_, d: string, c: string) => d + c.toUpperCase());
  if (out === "") return "T";
  return /^[0-9]/.test(out) ? `T${out}` : out;
}

function unique(base: string, taken: Set<string>): string {
  let n = base;
  for (let i = 2; taken.has(n); i++) n = `${base}${i}`;
  taken.add(n);
  return n;
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const RESERVED_MEMBERS = new Set(["constructor", "channel", "on", "service", "prototype"]);

/** A class member name for a method (its own name when it is a plain identifier). */
function memberName(name: string, taken: Set<string>): string {
  let n = IDENT.test(name) ? name : name.replace(/[^A-Za-z0-9_$]/g, "_");
  if (/^[0-9]/.test(n)) n = `m_${n}`;
  if (RESERVED_MEMBERS.has(n)) n = `${n}_`;
  return unique(n, taken);
}

/** A string as a TypeScript string literal. */
function lit(s: string): string {
  return JSON.stringify(s);
}

/** A property key: bare when an identifier, quoted otherwise. */
function key(s: string): string {
  return IDENT.test(s) ? s : lit(s);
}

/** A doc comment from free text (or nothing). */
function docComment(text: string | null | undefined, indent: string, extra: string[] = []): string[] {
  const lines = [...(text ? text.replace(/\*\//g, "*\\/").split("\n") : []), ...extra];
  if (lines.length === 0) return [];
  return [`${indent}/**`, ...lines.map((l) => (l ? `${indent} * ${l}` : `${indent} *`)), `${indent} */`];
}

const SUBSCHEMA_MAPS = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
const SUBSCHEMA_ONE = ["additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames", "unevaluatedProperties", "additionalItems"];
const SUBSCHEMA_LISTS = ["anyOf", "oneOf", "allOf", "prefixItems", "items"];

function isObj(v: JsonValue | undefined): v is { [key: string]: JsonValue } {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * A copy of a schema adjusted for json-schema-to-typescript (see the module's doc): no titles,
 * tuples as `items` arrays, binary strings as `Uint8Array`, `$ref`s to renamed messages kept.
 */
function adjust(schema: JsonValue): JsonValue {
  if (!isObj(schema)) return schema;
  if (schema["type"] === "string" && schema["format"] === "binary") {
    const out: JsonSchema = { tsType: "Uint8Array" };
    if (typeof schema["description"] === "string") out["description"] = schema["description"];
    return out;
  }
  const out: JsonSchema = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k === "title") continue;
    if (SUBSCHEMA_MAPS.includes(k) && isObj(v)) {
      out[k] = Object.fromEntries(Object.entries(v).map(([n, s]) => [n, adjust(s)]));
    } else if (SUBSCHEMA_LISTS.includes(k) && Array.isArray(v)) {
      out[k] = v.map(adjust);
    } else if (SUBSCHEMA_ONE.includes(k) && isObj(v)) {
      out[k] = adjust(v);
    } else {
      out[k] = v;
    }
  }
  if (Array.isArray(out["prefixItems"])) {
    const tuple = out["prefixItems"];
    delete out["prefixItems"];
    const rest = out["items"];
    out["items"] = tuple;
    if (rest === false || rest === undefined) {
      out["additionalItems"] = false;
      out["minItems"] = typeof out["minItems"] === "number" ? out["minItems"] : tuple.length;
      out["maxItems"] = tuple.length;
    } else {
      out["additionalItems"] = rest;
    }
  }
  // a schema that constrains nothing (Python's `Any`: `{"default": null}`) is any value, not the
  // object json-schema-to-typescript makes of it (`{[k: string]: unknown}`: a number would not compile)
  if (!ANY_VALUE_KEYS.some((k) => k in out) && !ROOT_ONLY_KEYS.some((k) => k in out)) out["tsType"] = "unknown";
  return out;
}

/** The keys of a schema that say something of the value's type. */
const ANY_VALUE_KEYS = ["type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "items", "properties", "additionalProperties", "patternProperties", "not", "tsType"];
/** Keys of a document's root or `$defs` container, never of an unconstrained value. */
const ROOT_ONLY_KEYS = ["$defs", "definitions"];

/** The `$defs` key a schema `{"$ref": "#/$defs/KEY"}` names, or undefined. */
function refKey(schema: JsonSchema): string | undefined {
  const ref = schema["$ref"];
  if (typeof ref !== "string" || !ref.startsWith("#/$defs/") || Object.keys(schema).length !== 1) return undefined;
  return ref.slice("#/$defs/".length);
}

interface Names {
  /** The service's short TypeScript name (e.g. `Game`). */
  base: string;
  service: string;
  client: string;
  events: string;
  eventName: string;
  topic: string;
}

/** How a method or event schema is typed: a message name, or none (`{"type": "null"}`). */
type Slot = { type: string } | null;

/** The module text for `doc` (a checked document). Deterministic. */
export async function generateService(doc: IdlDocument, options: GenerateOptions = {}): Promise<string> {
  const runtime = options.runtimeImport ?? "kcprpc";
  const generatedBy = options.generatedBy ?? "kcprpc-gen-ts";
  const taken = new Set<string>([ROOT, ...GLOBALS, ...RUNTIME_TYPES]);
  const base = pascalCase(doc.service);
  const names: Names = {
    base,
    service: unique(`${base}Service`, taken),
    client: unique(`${base}Client`, taken),
    events: unique(`${base}Events`, taken),
    eventName: unique(`${base}EventName`, taken),
    topic: unique(`${base}Topic`, taken),
  };

  // Messages: every $defs entry gets a fixed, unique type name (its title for the generator).
  const defs: Record<string, JsonSchema> = {};
  const typeOfDef = new Map<string, string>();
  for (const k of Object.keys(doc.$defs ?? {}).sort()) {
    typeOfDef.set(k, unique(pascalCase(k), taken));
  }
  // Method and event schemas that are not a plain $ref become messages of their own.
  const slot = (schema: JsonSchema, nameIfInline: string): Slot => {
    if (JSON.stringify(schema) === NULL_SCHEMA) return null;
    const k = refKey(schema);
    if (k !== undefined && typeOfDef.has(k)) return { type: typeOfDef.get(k)! };
    const t = unique(nameIfInline, taken);
    const synthetic = `__${t}`;
    defs[synthetic] = { ...schema, title: t };
    typeOfDef.set(synthetic, t);
    return { type: t };
  };
  const methodNames = Object.keys(doc.methods).sort();
  const methodSlots = new Map<string, { req: Slot; res: Slot }>();
  for (const m of methodNames) {
    const def = doc.methods[m]!;
    const mn = pascalCase(m);
    methodSlots.set(m, { req: slot(def.request, `${mn}Request`), res: slot(def.response, `${mn}Response`) });
  }
  const eventNames = Object.keys(doc.events ?? {}).sort();
  const eventSlots = new Map<string, Slot>();
  for (const e of eventNames) eventSlots.set(e, slot(doc.events![e]!.schema, `${pascalCase(e)}Event`));

  for (const [k, s] of Object.entries(doc.$defs ?? {})) {
    const adjusted = adjust(s) as JsonSchema;
    defs[k] = { ...adjusted, title: typeOfDef.get(k)! };
  }
  for (const [k, s] of Object.entries(defs)) {
    if (k.startsWith("__")) defs[k] = { ...(adjust(s) as JsonSchema), title: typeOfDef.get(k)! };
  }
  const sortedDefs = Object.fromEntries(Object.keys(defs).sort().map((k) => [k, defs[k]!]));

  let models = "";
  if (Object.keys(sortedDefs).length > 0) {
    const root = { title: ROOT, type: "object", properties: {}, additionalProperties: false, $defs: sortedDefs };
    models = await compile(root as unknown as JSONSchema4, ROOT, {
      bannerComment: "",
      unreachableDefinitions: true,
      additionalProperties: false,
      strictIndexSignatures: true,
      unknownAny: true,
      format: true,
      declareExternallyReferenced: true,
      enableConstEnums: false,
      $refOptions: { resolve: { external: false } },
    });
    models = cleanModels(models);
  }
  const declared = new Set([...models.matchAll(/^export (?:interface|type|enum|const enum|const) ([A-Za-z_$][\w$]*)/gm)].map((m) => m[1]!));
  for (const t of new Set(typeOfDef.values())) {
    if (!declared.has(t)) {
      throw new Error(`${doc.name}: json-schema-to-typescript did not declare the message type ${t} under that name`);
    }
  }
  for (const n of [names.service, names.client, names.events, names.eventName, names.topic, ...RUNTIME_TYPES]) {
    if (declared.has(n)) {
      throw new Error(`${doc.name}: json-schema-to-typescript declared ${n}, a name the stub needs; rename that message`);
    }
  }

  const used = new Set<string>(["RpcChannel"]);
  const out: string[] = [];
  out.push(`// Generated by ${generatedBy} from ${doc.name} (protocol ${doc.protocol_version}).`);
  out.push("// Do not edit: regenerate from the interface document.");
  out.push("");
  const importAt = out.length;
  out.push("");
  if (models) {
    out.push(models.trimEnd());
    out.push("");
  }

  // The names const.
  out.push(...docComment(`Names of ${doc.name}: its wire name, methods (wire name, kind, delivery), events and topics.`, ""));
  out.push(`export const ${names.service} = {`);
  out.push(`  name: ${lit(doc.name)},`);
  out.push(`  package: ${lit(doc.package)},`);
  out.push(`  service: ${lit(doc.service)},`);
  out.push(`  protocolVersion: ${doc.protocol_version},`);
  const group = (name: string, lines: string[]): void => {
    if (lines.length === 0) out.push(`  ${name}: {},`);
    else out.push(`  ${name}: {`, ...lines, "  },");
  };
  group(
    "methods",
    methodNames.map((m) => {
      const d = doc.methods[m]!;
      const id = typeof d.id === "number" ? `, id: ${d.id}` : "";
      return `    ${key(m)}: { wireName: ${lit(d.wire_name)}, kind: ${lit(d.kind)}, delivery: ${lit(d.delivery)}${id} },`;
    }),
  );
  group(
    "events",
    eventNames.map((e) => {
      const d = doc.events![e]!;
      const extra = (d.lane ? `, lane: ${lit(d.lane)}` : "") + (d.key ? `, key: ${lit(d.key)}` : "");
      return `    ${key(e)}: { delivery: ${lit(d.delivery)}${extra} },`;
    }),
  );
  group(
    "topics",
    Object.keys(doc.topics ?? {})
      .sort()
      .map((t) => `    ${key(t)}: { events: [${[...doc.topics![t]!.events].sort().map(lit).join(", ")}] },`),
  );
  out.push("} as const;");
  out.push("");

  // Events and topics.
  if (eventNames.length > 0) {
    out.push(...docComment(`The payload type of each event ${doc.name} pushes, by wire name.`, ""));
    out.push(`export interface ${names.events} {`);
    for (const e of eventNames) {
      const d = doc.events![e]!;
      out.push(...docComment(d.description, "  "));
      const s = eventSlots.get(e)!;
      out.push(`  ${key(e)}: ${s ? s.type : "null"};`);
    }
    out.push("}");
    out.push("");
    out.push(...docComment(`The wire name of an event ${doc.name} pushes.`, ""));
    out.push(`export type ${names.eventName} = keyof ${names.events};`);
    out.push("");
  }
  const topics = Object.keys(doc.topics ?? {}).sort();
  if (topics.length > 0) {
    out.push(...docComment(`A topic ${doc.name} publishes on (\`{placeholders}\` are any string).`, ""));
    const alts = topics.map((t) => {
      const parts = t.split(/\{[^{}]*\}/);
      if (parts.length === 1) return lit(t);
      return "`" + parts.map((p) => p.replace(/[`\\$]/g, (c) => `\\${c}`)).join("${string}") + "`";
    });
    out.push(`export type ${names.topic} = ${alts.join(" | ")};`);
    out.push("");
  }

  // The client class.
  out.push(...docComment(
    `Typed client of ${doc.name}${doc.description ? `: ${doc.description}` : "."}`,
    "",
    ["", "Each method calls the runtime's RpcChannel (a connected `Client`) with the method's wire", "name and the document's types: a call with a wrong message type does not compile."],
  ));
  out.push(`export class ${names.client} {`);
  out.push(`  /** Names of ${doc.name}. */`);
  out.push(`  static readonly service = ${names.service};`);
  out.push("  /** The channel the calls go over. */");
  out.push("  readonly channel: RpcChannel;");
  out.push("");
  out.push("  /** A client of the service over `channel` (a connected `Client`, or any RpcChannel). */");
  out.push("  constructor(channel: RpcChannel) {");
  out.push("    this.channel = channel;");
  out.push("  }");
  const members = new Set<string>();
  for (const m of methodNames) {
    const d = doc.methods[m]!;
    const { req, res } = methodSlots.get(m)!;
    out.push("");
    out.push(...methodLines(d, memberName(m, members), req, res, used));
  }
  if (eventNames.length > 0) {
    used.add("EventInfo");
    const E = names.events;
    out.push("");
    out.push("  /**");
    out.push(`   * Calls \`handler\` with each push of \`event\` (one of ${names.service}.events), its payload typed,`);
    out.push("   * and where it came from; returns the function that removes the handler.");
    out.push("   */");
    out.push(`  on<K extends ${names.eventName}>(event: K, handler: (data: ${E}[K], info: EventInfo) => void): () => void {`);
    out.push(`    return this.channel.on<${E}[K]>(event, handler);`);
    out.push("  }");
  }
  out.push("}");

  const imports = RUNTIME_TYPES.filter((t) => used.has(t));
  out[importAt] = `import type { ${imports.join(", ")} } from ${lit(runtime)};\n`;
  return out.join("\n") + "\n";
}

function methodLines(d: MethodDef, member: string, req: Slot, res: Slot, used: Set<string>): string[] {
  const out: string[] = [];
  const resT = res ? res.type : "void";
  const reqT = req ? req.type : "null";
  const wire = lit(d.wire_name);
  const arg = req ? "request" : "null";
  const param = req ? `request: ${reqT}, ` : "";
  const c = "this.channel";
  const note = `\`${d.wire_name}\`: ${d.kind.replace("_", " ")}${d.kind === "notify" ? ` (${d.delivery})` : ""}.`;
  out.push(...docComment(d.description, "  ", d.description ? ["", note] : [note]));
  switch (d.kind) {
    case "unary":
      used.add("CallOptions");
      out.push(`  ${member}(${param}options?: CallOptions): Promise<${resT}> {`);
      out.push(`    return ${c}.unary<${reqT}, ${resT}>(${wire}, ${arg}, options);`);
      break;
    case "server_stream":
      used.add("CallOptions").add("ServerStreamCall");
      out.push(`  ${member}(${param}options?: CallOptions): ServerStreamCall<${resT}> {`);
      out.push(`    return ${c}.serverStream<${reqT}, ${resT}>(${wire}, ${arg}, options);`);
      break;
    case "client_stream":
      used.add("CallOptions");
      out.push(`  ${member}(requests: Iterable<${reqT}> | AsyncIterable<${reqT}>, options?: CallOptions): Promise<${resT}> {`);
      out.push(`    return ${c}.clientStream<${reqT}, ${resT}>(${wire}, requests, options);`);
      break;
    case "bidi":
      used.add("CallOptions").add("BidiCall");
      out.push(`  ${member}(options?: CallOptions): BidiCall<${reqT}, ${resT}> {`);
      out.push(`    return ${c}.bidi<${reqT}, ${resT}>(${wire}, options);`);
      break;
    case "notify":
      used.add("NotifyOptions");
      out.push(`  ${member}(${param}options?: NotifyOptions): void {`);
      if (d.delivery === "reliable") {
        // The method's declared delivery is the default; options.reliable still overrides it.
        out.push(`    ${c}.notify(${wire}, ${arg}, { ...options, reliable: options?.reliable ?? true });`);
      } else {
        out.push(`    ${c}.notify(${wire}, ${arg}, options);`);
      }
      break;
  }
  out.push("  }");
  return out;
}

/** json-schema-to-typescript's output without the synthetic root and its "referenced by" notes. */
function cleanModels(text: string): string {
  const note = new RegExp(
    String.raw`( \*\n)? \* This interface was referenced by \`${ROOT}\`'s JSON-Schema\n \* via the \`definition\` "[^"\n]*"\.\n`,
    "g",
  );
  return text
    .replace(note, "")
    .replace(/\/\*\*\n \*\/\n/g, "")
    .replace(new RegExp(String.raw`^export interface ${ROOT} \{\}\n`, "m"), "")
    .replace(/\n{3,}/g, "\n\n")
    .trim() + "\n";
}
