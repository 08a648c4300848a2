/**
 * Interface documents (docs/idl.md): their shape, and a structural check with errors that name
 * the file and the place, so that a bad document fails before any code is generated.
 */

/** A JSON Schema object, as the document carries it. */
export type JsonSchema = { [key: string]: JsonValue };

/** Any JSON value. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** The kinds of method a document may declare. */
export const METHOD_KINDS = ["unary", "server_stream", "client_stream", "bidi", "notify"] as const;

/** One of {@link METHOD_KINDS}. */
export type MethodKind = (typeof METHOD_KINDS)[number];

/** How a method or event travels. */
export type Delivery = "reliable" | "unreliable";

/** One method of a service. */
export interface MethodDef {
  /** `"<service>/<method>"`: what a CALL or NOTIFY frame carries. */
  wire_name: string;
  /** unary, server_stream, client_stream, bidi or notify. */
  kind: MethodKind;
  /** reliable (a mux stream) or unreliable (one OOB datagram; notify only). */
  delivery: Delivery;
  /** Schema of one request message; `{"type": "null"}` for none. */
  request: JsonSchema;
  /** Schema of one response message; `{"type": "null"}` for none. */
  response: JsonSchema;
  /** What the method does. */
  description?: string | null;
  /** A numeric id, for wires that use them. */
  id?: number | null;
}

/** One server-push event type. */
export interface EventDef {
  /** reliable or unreliable. */
  delivery: Delivery;
  /** Schema of the payload. */
  schema: JsonSchema;
  /** The payload field that is the event's latest-wins key. */
  key?: string | null;
  /** The server's send lane of the event. */
  lane?: string | null;
  /** What the event says. */
  description?: string | null;
}

/** A topic clients subscribe to (`{name}` parts are placeholders). */
export interface TopicDef {
  /** Wire names of the events published on it. */
  events: string[];
  /** What the topic carries. */
  description?: string | null;
}

/** One interface document (format `kcprpc-idl`, version 1). */
export interface IdlDocument {
  format: "kcprpc-idl";
  format_version: 1;
  /** Full wire name of the service: package + "." + service. */
  name: string;
  /** Dotted package (may be empty). */
  package: string;
  /** The service's short name. */
  service: string;
  /** Version of the kcprpc wire protocol. */
  protocol_version: number;
  /** What the service is for. */
  description?: string | null;
  /** Methods by name. */
  methods: Record<string, MethodDef>;
  /** Server-push events by wire name. */
  events?: Record<string, EventDef>;
  /** Topics by name (template). */
  topics?: Record<string, TopicDef>;
  /** Every message schema, by name. */
  $defs?: Record<string, JsonSchema>;
}

/** A document that is not a kcprpc interface document; the message names the source and the place. */
export class IdlDocumentError extends Error {
  override name = "IdlDocumentError";
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Checks that `value` (parsed JSON from `source`) is an interface document this generator can
 * read, and returns it typed. Throws {@link IdlDocumentError} naming the first problem.
 */
export function checkDocument(value: unknown, source: string): IdlDocument {
  const fail = (where: string, what: string): never => {
    throw new IdlDocumentError(`${source}: ${where}: ${what}`);
  };
  if (!isObject(value)) fail("document", "expected a JSON object");
  const d = value as Record<string, unknown>;
  if (d["format"] !== "kcprpc-idl") fail("format", `expected "kcprpc-idl", got ${JSON.stringify(d["format"])}`);
  if (d["format_version"] !== 1) fail("format_version", `expected 1, got ${JSON.stringify(d["format_version"])}`);
  for (const k of ["name", "package", "service"]) {
    if (typeof d[k] !== "string") fail(k, "expected a string");
  }
  if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/.test(d["name"] as string)) {
    fail("name", `not a dotted name: ${JSON.stringify(d["name"])}`);
  }
  if (typeof d["protocol_version"] !== "number" || !Number.isInteger(d["protocol_version"])) {
    fail("protocol_version", "expected an integer");
  }
  if (d["description"] !== undefined && d["description"] !== null && typeof d["description"] !== "string") {
    fail("description", "expected a string");
  }
  if (!isObject(d["methods"])) fail("methods", "expected an object");
  for (const [name, m] of Object.entries(d["methods"] as Record<string, unknown>)) {
    const at = `methods.${name}`;
    if (!isObject(m)) fail(at, "expected an object");
    const md = m as Record<string, unknown>;
    if (typeof md["wire_name"] !== "string") fail(`${at}.wire_name`, "expected a string");
    if (!(METHOD_KINDS as readonly unknown[]).includes(md["kind"])) {
      fail(`${at}.kind`, `expected one of ${METHOD_KINDS.join(", ")}, got ${JSON.stringify(md["kind"])}`);
    }
    if (md["delivery"] !== "reliable" && md["delivery"] !== "unreliable") {
      fail(`${at}.delivery`, "expected reliable or unreliable");
    }
    for (const k of ["request", "response"]) if (!isObject(md[k])) fail(`${at}.${k}`, "expected a schema object");
  }
  if (d["events"] !== undefined) {
    if (!isObject(d["events"])) fail("events", "expected an object");
    for (const [name, e] of Object.entries(d["events"] as Record<string, unknown>)) {
      if (!isObject(e)) fail(`events.${name}`, "expected an object");
      const ed = e as Record<string, unknown>;
      if (ed["delivery"] !== "reliable" && ed["delivery"] !== "unreliable") {
        fail(`events.${name}.delivery`, "expected reliable or unreliable");
      }
      if (!isObject(ed["schema"])) fail(`events.${name}.schema`, "expected a schema object");
    }
  }
  if (d["topics"] !== undefined) {
    if (!isObject(d["topics"])) fail("topics", "expected an object");
    const events = isObject(d["events"]) ? d["events"] : {};
    for (const [name, t] of Object.entries(d["topics"] as Record<string, unknown>)) {
      if (!isObject(t) || !Array.isArray(t["events"])) fail(`topics.${name}.events`, "expected a list");
      for (const e of (t as { events: unknown[] }).events) {
        if (typeof e !== "string" || !(e in events)) fail(`topics.${name}.events`, `${JSON.stringify(e)} is not an event of the document`);
      }
    }
  }
  if (d["$defs"] !== undefined) {
    if (!isObject(d["$defs"])) fail("$defs", "expected an object");
    for (const [name, s] of Object.entries(d["$defs"] as Record<string, unknown>)) {
      if (!isObject(s)) fail(`$defs.${name}`, "expected a schema object");
    }
  }
  return value as IdlDocument;
}

/** Parses JSON text from `source` and checks it with {@link checkDocument}. */
export function parseDocument(text: string, source: string): IdlDocument {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new IdlDocumentError(`${source}: not JSON: ${(e as Error).message}`);
  }
  return checkDocument(value, source);
}
