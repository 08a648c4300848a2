/**
 * The live example's viewer for Node (the equivalent of `python -m examples.live.viewer`): it
 * follows a channel of the live server (examples/live) and survives a lost connection and its own
 * restart with nothing missed and nothing twice.
 *
 * ```sh
 * python -m examples.live.viewer --serve 9200                  # the server (secure mode)
 * node dist/examples/live-viewer.js --host 127.0.0.1 --port 9200 --channel main --log viewer.jsonl
 * node dist/examples/live-viewer.js --host 127.0.0.1 --port 9200 --publish 100   # a publisher
 * ```
 *
 * Each event is appended to `--log` as one JSON line *with its position* (`epoch`, `offset`): the
 * log is both what the viewer did and what it saved. One write per event, so a kill (even
 * SIGKILL) leaves neither a message done with its position unsaved (a duplicate) nor the other
 * way round (a gap); a last line cut short by the kill is removed on restart. Started again with
 * the same log, the viewer subscribes with `since` = the last saved position and the server
 * replays what was published in between (flagged `replayed`) before the live events, in order.
 *
 * While it runs, a lost connection is resumed by the client (`reconnect`: the session is taken
 * back, or the topic re-subscribed from the client's position), and the replayed events go
 * through the same handler; events at or before a position already seen are dropped by the
 * client, so nothing is shown twice.
 *
 * stdout: one JSON line on subscribing (`since`, `position`, `recovered`, `replayed`, `missed`, as
 * the Python viewer prints), then one line per event (`--json`: a JSON object per event, as in
 * the log), and a JSON line on each disconnect and reconnect.
 */
import { closeSync, existsSync, openSync, readFileSync, truncateSync, writeSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect, type Client, type EventInfo, type Position } from "../src/index.js";
import { LiveClient, type Chat, type Gift, type LiveEventName, type LiveEvents, type Score } from "../src/generated/live.v1.Live.js";

/** The shared passphrase of the live example (examples/live/service.py KEY: the secure handshake's PSK). */
const LIVE_KEY = "live example passphrase";

/** The topic viewers of `channel` subscribe to (examples/live/service.py `topic`). */
function liveTopic(channel: string): string {
  return `channel:${channel}`;
}

/** One line of the viewer's log. */
interface LogEntry {
  /** `"chat"`, `"gift"`, `"score"`, or `"subscribed"` (the position a subscribe's reply gave). */
  kind: string;
  /** The position's epoch. */
  epoch: number;
  /** The position's offset (the topic message's seq). */
  offset: number;
  /** The event's fields, and `replayed` (and a subscribe's `recovered` ...). */
  [field: string]: unknown;
}

/**
 * The position of the last whole line of the log at `path` (null: no log yet, or nothing in it).
 * A last line cut short by a kill is removed from the file.
 */
function lastPosition(path: string): Position | null {
  if (!existsSync(path)) return null;
  const data = readFileSync(path);
  const keep = data.lastIndexOf(0x0a) + 1;
  if (keep !== data.length) truncateSync(path, keep); // a partial line: the write the kill interrupted
  const lines = data.subarray(0, keep).toString("utf8").split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i];
    if (!line) continue;
    const e = JSON.parse(line) as LogEntry;
    return [e.epoch, e.offset];
  }
  return null;
}

/** What {@link view} needs. */
interface ViewOptions {
  host: string;
  port: number;
  /** The channel (topic `channel:<name>`). */
  channel: string;
  /** The log file: events and positions (appended; read on start). */
  log: string;
  /** Stop after this long (ms); null: until killed. */
  durationMs: number | null;
  /** Print each event as a JSON object (else a line of text). */
  json: boolean;
  /** Heartbeat interval (ms): a dead link is noticed after 5 intervals of silence. */
  heartbeatMs: number;
  /** The server's passphrase. */
  key: string;
}

function out(line: string): void {
  writeSync(1, line + "\n"); // synchronous: a killed viewer has printed exactly what it logged before
}

function kindOf(name: LiveEventName): string {
  return name.slice(name.indexOf(".") + 1); // "live.chat" -> "chat"
}

function show(kind: string, data: Chat | Gift | Score, info: EventInfo): string {
  const where = `[${data.channel} #${info.position?.[1] ?? "?"}${info.replayed ? " replayed" : ""}]`;
  if (kind === "chat") return `${where} ${(data as Chat).user}: ${(data as Chat).text}`;
  if (kind === "gift") return `${where} ${(data as Gift).user} sent ${(data as Gift).amount} x ${(data as Gift).gift}`;
  return `${where} score ${(data as Score).home}:${(data as Score).away}`;
}

/** Follow the channel, appending every event to the log, from the position saved there. */
async function view(o: ViewOptions): Promise<number> {
  const since = lastPosition(o.log);
  const fd = openSync(o.log, "a");
  const record = (kind: string, position: Position, fields: Record<string, unknown>): void => {
    const entry: LogEntry = { kind, epoch: position[0], offset: position[1], ...fields };
    writeSync(fd, JSON.stringify(entry) + "\n"); // one write per event: the event and its position together
  };
  let client: Client | null = null;
  try {
    client = await connect(o.host, o.port, {
      wire: { mode: "secure", passphrase: o.key },
      heartbeat: { intervalMs: o.heartbeatMs, timeoutMs: 5 * o.heartbeatMs },
      reconnect: { initialMs: 100, maximumMs: 2000, restore: true },
      onDisconnect: (reason) => out(JSON.stringify({ disconnected: reason })),
      onReconnect: () => out(JSON.stringify({ reconnected: true, resumes: client?.resumes ?? 0, position: client?.position(liveTopic(o.channel)) ?? null })),
    });
    const c: Client = client;
    const live = new LiveClient(c);
    const names = ["live.chat", "live.gift", "live.score"] as const satisfies readonly LiveEventName[]; // not live.viewers (a session event)
    for (const name of names) {
      live.on(name, (data: LiveEvents[typeof name], info: EventInfo) => {
        if (info.position === null || info.key !== `topic:${liveTopic(o.channel)}`) return; // a topic event always has one
        const kind = kindOf(name);
        record(kind, info.position, { replayed: info.replayed, ...data });
        out(o.json ? JSON.stringify({ kind, epoch: info.position[0], offset: info.position[1], replayed: info.replayed, ...data }) : show(kind, data, info));
      });
    }
    const reply = await c.subscribe(liveTopic(o.channel), since ?? undefined);
    const position = reply.position as Position;
    // saved at once: a viewer killed before its first event resumes from here
    record("subscribed", position, { recovered: reply.recovered ?? null, replayed: reply.replayed ?? 0 });
    out(JSON.stringify({ since, position, recovered: reply.recovered ?? null, replayed: reply.replayed ?? 0, missed: reply.missed ?? null }));
    await new Promise<void>((resolve) => {
      if (o.durationMs !== null) setTimeout(resolve, o.durationMs);
      const stop = (): void => resolve();
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
    });
    return 0;
  } finally {
    await client?.close().catch(() => undefined);
    closeSync(fd);
  }
}

/** Publish `n` chat messages `"0"` ... `"n-1"` (the publisher's token in the call metadata), one every `paceMs`. */
async function publish(host: string, port: number, channel: string, n: number, paceMs: number, token: string, key: string): Promise<number> {
  const client = await connect(host, port, { wire: { mode: "secure", passphrase: key } });
  try {
    const live = new LiveClient(client);
    for (let i = 0; i < n; i++) {
      const ack = await live.chat({ channel, user: "host", text: String(i) }, { metadata: { token }, timeoutMs: 5000 });
      out(JSON.stringify({ published: String(i), seq: ack.seq, epoch: ack.epoch }));
      if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
    }
  } finally {
    await client.close();
  }
  return 0;
}

const USAGE = `usage: node dist/examples/live-viewer.js --host HOST --port PORT [--channel main] [--log viewer.jsonl]
       [--seconds S] [--json] [--heartbeat-ms 1000] [--key PASSPHRASE]
       node dist/examples/live-viewer.js --host HOST --port PORT --publish N [--pace-ms 50] [--token T]`;

function positive(name: string, v: string | undefined, dflt: number, allowZero = false): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) throw new Error(`--${name}: expected a ${allowZero ? "non-negative" : "positive"} number, got ${v}`);
  return n;
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string" },
      channel: { type: "string", default: "main" },
      log: { type: "string", default: process.env["VIEWER_LOG"] ?? "viewer.jsonl" },
      seconds: { type: "string" },
      json: { type: "boolean", default: false },
      "heartbeat-ms": { type: "string" },
      key: { type: "string", default: LIVE_KEY },
      publish: { type: "string" },
      "pace-ms": { type: "string" },
      token: { type: "string", default: "publisher-secret" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    out(USAGE);
    return 0;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`--port: expected the server's UDP port, got ${String(values.port)}\n${USAGE}`);
  const host = values.host ?? "127.0.0.1";
  const channel = values.channel ?? "main";
  const key = values.key ?? LIVE_KEY;
  if (values.publish !== undefined) {
    const n = positive("publish", values.publish, 1);
    return publish(host, port, channel, Math.floor(n), positive("pace-ms", values["pace-ms"], 50, true), values.token ?? "publisher-secret", key);
  }
  return view({
    host, port, channel, key,
    log: values.log ?? "viewer.jsonl",
    durationMs: values.seconds === undefined ? null : positive("seconds", values.seconds, 0, true) * 1000,
    json: values.json ?? false,
    heartbeatMs: positive("heartbeat-ms", values["heartbeat-ms"], 1000),
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`live-viewer: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
