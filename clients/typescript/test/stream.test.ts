// The stream's resume rules against a fake EventSource: which position a reconnect asks for,
// the watchdog, the browser's own reconnect, and a refusal that can never work.

import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStream, FlowsyncClient, HttpError, type FlowEvent } from "../src/index.js";
import { FakeApi, Sources } from "./fakes.js";

function stream(options: { idleTimeoutMs?: number; lastEventId?: string } = {}, fetch = new FakeApi().fetch) {
  const sources = new Sources();
  const client = new FlowsyncClient({ baseUrl: "http://fake", fetch, token: "tok" });
  const events: FlowEvent[] = [];
  const fatal: HttpError[] = [];
  const s = new EventStream(client, "f", { event: (e) => events.push(e), fatal: (e) => fatal.push(e) }, {
    EventSource: sources.ctor,
    backoffMs: 1,
    maxBackoffMs: 2,
    ...options,
  });
  return { s, sources, events, fatal };
}

const query = (url: string) => new URL(url).searchParams;

test("asks for heartbeat events and carries the token; a stored id resumes the first stream", async () => {
  const { s, sources } = stream({ lastEventId: "ep-41" });
  const q = query((await sources.nth(0)).url);
  assert.equal(q.get("heartbeat"), "event");
  assert.equal(q.get("access_token"), "tok");
  assert.equal(q.get("last_event_id"), "ep-41");
  s.close();
});

test("a fresh EventSource resumes after the last sequenced event, not after presence", async () => {
  const { s, sources, events } = stream();
  const first = await sources.nth(0);
  assert.equal(query(first.url).get("last_event_id"), null);
  first.ready(7, 3);
  assert.equal(s.lastEventId, "ep-7", "the head it started at, before any event");
  first.send("LOG_STREAM", { execution_id: "x", node_id: "n", index: 0, chunk: "a", done: false }, 8);
  first.send("PRESENCE", { action: "join", connection_id: "c", actor: {} });
  assert.equal(s.lastEventId, "ep-8");
  first.fail(true); // the browser gave up (an HTTP error)
  const second = await sources.nth(1);
  assert.ok(first.closed);
  assert.equal(query(second.url).get("last_event_id"), "ep-8");
  assert.deepEqual(events.map((e) => e.type), ["READY", "LOG_STREAM", "PRESENCE"]);
  s.close();
});

test("the browser's own reconnect is let through once, then the stream reconnects itself", async () => {
  const { s, sources } = stream();
  const first = await sources.nth(0);
  first.ready(1);
  first.fail(false); // CONNECTING: the browser retries with Last-Event-ID
  assert.equal(sources.all.length, 1);
  assert.equal(s.status, "connecting");
  first.fail(false); // and failed again
  const second = await sources.nth(1);
  assert.ok(first.closed);
  assert.equal(query(second.url).get("last_event_id"), "ep-1");
  second.ready(1, 0, true);
  assert.equal(s.status, "open");
  s.close();
});

test("a silent stream is dropped and resumed; heartbeats keep it", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { s, sources } = stream({ idleTimeoutMs: 30 });
  const first = await sources.nth(0);
  first.ready(5);
  // Let what the timers started (an async reconnect) run before looking.
  const settle = () => new Promise((r) => setImmediate(r));
  for (let i = 0; i < 10; i++) {
    t.mock.timers.tick(29);
    await settle();
    first.send("PING", {});
  }
  t.mock.timers.tick(2);
  await settle();
  assert.equal(sources.all.length, 1, "pings reset the watchdog");
  t.mock.timers.tick(30); // silence: dropped, resumed after the (≤ 2 ms) backoff
  t.mock.timers.tick(2);
  await settle();
  const second = await sources.nth(1);
  assert.ok(first.closed);
  assert.equal(query(second.url).get("last_event_id"), "ep-5");
  s.close();
});

test("a browser reconnect that hangs is taken over by the watchdog", async () => {
  const { s, sources } = stream({ idleTimeoutMs: 20 });
  const first = await sources.nth(0);
  first.ready(4);
  first.fail(false); // the browser reconnects… and never gets through
  const second = await sources.nth(1);
  assert.ok(first.closed);
  assert.equal(query(second.url).get("last_event_id"), "ep-4");
  s.close();
});

test("after RESYNC a reconnect starts from the new head, not the lost position", async () => {
  const { s, sources } = stream({ lastEventId: "old-99" });
  const first = await sources.nth(0);
  first.ready(3);
  first.send("RESYNC", { reason: "unknown epoch" });
  assert.equal(s.lastEventId, "ep-3");
  s.close();
});

test("drop and restore: closed until restored, then resumed", async () => {
  const { s, sources } = stream();
  const first = await sources.nth(0);
  first.ready(2);
  s.drop();
  assert.ok(first.closed);
  assert.equal(s.status, "offline");
  s.restore();
  const second = await sources.nth(1);
  assert.equal(query(second.url).get("last_event_id"), "ep-2");
  s.close();
});

test("a refusal that cannot change (flow gone) closes the stream for good", async () => {
  const gone = async () => new Response(JSON.stringify({ error: { code: "flow_not_found", message: "no" } }), { status: 404 });
  const { s, sources, fatal } = stream({}, gone);
  (await sources.nth(0)).fail(true);
  while (fatal.length === 0) await new Promise((r) => setTimeout(r, 1));
  assert.equal(fatal[0]!.code, "flow_not_found");
  assert.equal(s.status, "closed");
  assert.equal(sources.all.length, 1);
});
