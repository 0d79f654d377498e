// How fast a session takes events in Node (the same code a browser runs), fed by the test
// fake EventSource, so the figure is the SDK's own cost: parsing, ordering, applying.
// Run: npm run bench   (never in CI)

import { FlowSession, FlowsyncClient } from "../src/index.js";
import { FakeApi, frame, next, Sources } from "../test/fakes.js";

const NODES = Number(process.env.NODES ?? 1000);
const EVENTS = 100_000;

async function open(api: FakeApi) {
  const sources = new Sources();
  const client = new FlowsyncClient({ baseUrl: "http://fake", fetch: api.fetch });
  const opening = FlowSession.open(client, "f", { EventSource: sources.ctor });
  (await sources.nth(0)).ready(0, api.flow.version);
  return { session: await opening, es: sources.last };
}

function canvasOf(nodes: number) {
  const api = new FakeApi();
  api.flow = {
    ...api.flow,
    nodes: Array.from({ length: nodes }, (_, i) => ({ id: `n${i}`, type: "note", position: { x: i, y: 0 }, data: { text: "" }, version: 0 })),
  };
  return api;
}

/** `EVENTS` text splices delivered in one burst (a resume's replay, or a fast token stream). */
async function splices(listen: boolean): Promise<void> {
  const { session, es } = await open(canvasOf(NODES));
  let emissions = 0;
  const frames = Array.from({ length: EVENTS }, (_, i) => {
    const v = i + 1;
    const change = { kind: "node.splice" as const, id: "n7", path: "/text", at: v - 1, delete: 0, insert: "x", version: v };
    return frame("SYNC_CANVAS", { prev_version: v - 1, version: v, client_id: "a", ops: [{ op_id: `o${v}`, type: "text.append", version: v, changes: [change] }] }, v);
  });
  if (listen) session.on("canvas", (c) => (emissions += c.nodes.length > 0 ? 1 : 0));
  const done = listen
    ? next(session, "canvas", (c) => c.version === EVENTS)
    : next(session, "event", (e) => e.type === "SYNC_CANVAS" && e.data.version === EVENTS);
  const start = performance.now();
  frames.forEach((f, i) => es.deliver("SYNC_CANVAS", f, i + 1));
  await done;
  const s = (performance.now() - start) / 1000;
  const what = listen ? `, a canvas listener (${emissions} emission${emissions === 1 ? "" : "s"})` : ", no canvas listener";
  console.log(`SYNC_CANVAS text splices, ${NODES}-node canvas${what}: ${Math.round(EVENTS / s).toLocaleString("en")} events/s`);
  session.close();
}

async function logs(): Promise<void> {
  const { session, es } = await open(canvasOf(10));
  const frames = Array.from({ length: EVENTS }, (_, i) =>
    frame("LOG_STREAM", { execution_id: "x", node_id: "n1", index: i, chunk: "tok ", done: i === EVENTS - 1 }, i + 1),
  );
  const done = next(session, "log", (l) => l.done);
  const start = performance.now();
  frames.forEach((f, i) => es.deliver("LOG_STREAM", f, i + 1));
  const last = await done;
  const s = (performance.now() - start) / 1000;
  console.log(`LOG_STREAM chunks into one node's text: ${Math.round(EVENTS / s).toLocaleString("en")} chunks/s (text ${last.text.length.toLocaleString("en")} chars)`);
  session.close();
}

await splices(false);
await splices(true);
await logs();
