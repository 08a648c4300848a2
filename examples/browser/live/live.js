// The live example's viewer in a browser (examples/live): it follows a channel's topic, shows each
// message, and after a reload resumes from the position it saved, with nothing missed and
// nothing twice.
//
// Each message is saved with its position in sessionStorage in ONE write (the list and the
// position together), as the Python viewer writes one log line per event: a reload between two
// writes can neither lose a message whose position was saved nor show one twice. On load the
// saved list is shown again and the page subscribes with `since` = the saved position; the server
// replays (flagged) what was published in between, then the live messages follow. A dropped
// connection is resumed by the client in place (`reconnect.restore`).
//
// ?channel=main            the channel (topic channel:<name>)
// ?transport=websocket|webtransport   force a transport (default: WebTransport when offered)
// ?static=["a: 1", ...]    no connection: show these messages (a reference rendering for tests)
// ?fresh=1                 forget what this tab saved before
import { connectView, params, publishView, run, setState, show } from "../common.js";

const channel = params.get("channel") || "main";
const topic = `channel:${channel}`;
const STORE = `kcprpc-live:${channel}`;
const MAX_KEPT = 1000; // sessionStorage is small: the newest messages are kept (and shown) after a reload

/** What the page shows, for people (the DOM) and for the tests (window.liveView). */
const view = {
  /** Messages shown, oldest first: {text, epoch, offset, replayed}. */
  items: [],
  /** The last saved position [epoch, offset] (null: none yet). */
  position: null,
  /** The transport of the current connection: "websocket" or "webtransport". */
  transport: null,
  /** The connection (link.drop() cuts it: the client reconnects and resumes). */
  link: null,
  /** The last viewer count (an unreliable event) and how many such events came. */
  viewers: null,
  unreliable: 0,
  /** ... of which came as datagrams. */
  unreliableDatagrams: 0,
  /** Events at or before the saved position, not shown again. */
  duplicates: 0,
  /** The unary call's reply (Health/Stats: this session's id, the server's session count). */
  call: null,
  /** A resume from a saved position: {since, replayed, recovered, missed}. */
  resumed: null,
  disconnects: 0,
  reconnects: 0,
  /** The state: loading, connecting, connected, disconnected, reconnected, error, static. */
  state: "loading",
  error: null,
  client: null,
};
publishView("liveView", view);

const list = document.getElementById("messages");

function label(name, d) {
  if (name === "live.chat") return `${d.user}: ${d.text}`;
  if (name === "live.gift") return `${d.user} sent ${d.amount} x ${d.gift}`;
  return `score ${d.home}:${d.away}`;
}

function render(item) {
  const li = document.createElement("li");
  li.textContent = item.text;
  if (item.offset !== undefined) li.dataset.offset = String(item.offset);
  if (item.replayed) li.dataset.replayed = "1";
  list.append(li);
  while (list.childElementCount > MAX_KEPT) list.firstElementChild.remove();
  show("count", view.items.length);
}

function load() {
  if (params.get("fresh") === "1") sessionStorage.removeItem(STORE);
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) ?? "null");
    if (saved && Array.isArray(saved.position) && Array.isArray(saved.items)) return saved;
  } catch {
    // a damaged entry: start over
  }
  return null;
}

function save() {
  sessionStorage.setItem(STORE, JSON.stringify({ position: view.position, items: view.items.slice(-MAX_KEPT) }));
}

/** A topic message: shown and saved with its position, unless the page has it already. */
function onMessage(name, data, info) {
  if (info.key !== `topic:${topic}` || !info.position) return;
  const [epoch, offset] = info.position;
  const last = view.position;
  if (last && last[0] === epoch && offset <= last[1]) {
    view.duplicates++;
    return;
  }
  const item = { text: label(name, data), epoch, offset, replayed: info.replayed };
  view.items.push(item);
  view.position = [epoch, offset];
  save(); // one write: the message and its position together
  render(item);
}

async function call(client) {
  const stats = await client.unary("kcprpc.Health/Stats", null);
  view.call = { session: stats.session.id, sessions: stats.server.sessions };
  show("call", `session ${stats.session.id}, ${stats.server.sessions} session(s) on the server`);
}

async function live() {
  const saved = load();
  if (saved) {
    view.items = saved.items;
    view.position = saved.position;
    for (const item of view.items) render(item);
  }
  const client = await connectView(view);
  for (const name of ["live.chat", "live.gift", "live.score"]) client.on(name, (d, info) => onMessage(name, d, info));
  client.on("live.viewers", (d, info) => {
    view.unreliable++;
    if (info.unreliable) view.unreliableDatagrams++;
    view.viewers = d.viewers;
    show("viewers", d.viewers);
    show("unreliable", view.unreliable);
  });
  const since = view.position ?? undefined;
  const reply = await client.subscribe(topic, since);
  if (since) {
    view.resumed = { since, replayed: reply.replayed ?? 0, recovered: reply.recovered ?? null, missed: reply.missed ?? null };
    show("resumed", `from #${since[1]}: ${view.resumed.replayed} replayed, ${view.resumed.recovered ? "nothing missed" : `missed ${view.resumed.missed ?? "unknown"}`}`);
  }
  if (!view.position && Array.isArray(reply.position)) {
    view.position = reply.position; // saved at once: a reload before the first message resumes from here
    save();
  }
  setState(view, "connected");
  await call(client);
}

function staticMode(texts) {
  view.items = texts.map((text) => ({ text }));
  for (const item of view.items) render(item);
  setState(view, "static");
}

show("channel", channel);
const fixed = params.get("static");
await run(view, async () => {
  if (fixed !== null) staticMode(JSON.parse(fixed));
  else await live();
});
