// The SDK against the real one binary: the whole protocol, Node's EventSource (the
// `eventsource` package), nothing faked.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { EventSource } from "eventsource";

import { ConflictError, FlowSession, FlowsyncClient, type FlowEvent } from "../src/index.js";
import { next } from "./fakes.js";
import { chatStub, startSystem, type System } from "./support.js";

const TOKENS = ["Hel", "lo", ", ", "wörld", " 👋", "!"];
let system: System;
let llm: Awaited<ReturnType<typeof chatStub>>;
let client: FlowsyncClient;

before(async () => {
  llm = await chatStub(TOKENS);
  // The one binary notices a closed stream at its next write: a 1 s heartbeat makes the
  // presence test's leave come soon.
  system = await startSystem({ FLOWSYNC_RUNNER__LLM__BASE_URL: llm.url, FLOWSYNC_SSE__HEARTBEAT: "1" });
  client = new FlowsyncClient({ baseUrl: system.url });
});
after(async () => {
  await system.stop();
  await llm.close();
});

let flows = 0;
async function twoSessions() {
  const id = `ts-${process.pid}-${++flows}`;
  await client.createFlow({ id, name: id });
  const open = () => FlowSession.open(client, id, { EventSource });
  return { id, a: await open(), b: await open() };
}

test("ops resolve with their versions and both sessions converge on the server's state", async () => {
  const { id, a, b } = await twoSessions();
  const results = await Promise.all(a.sendOps([
    { type: "node.add", node: { id: "n1", type: "template", position: { x: 10, y: 20 }, data: { template: "hi" } } },
    { type: "node.add", node: { id: "n2", type: "note", position: { x: 200, y: 20 } } },
    { type: "edge.add", edge: { id: "e1", source: "n1", target: "n2" } },
  ]));
  assert.deepEqual(results.map((r) => r.version), [1, 2, 3]);
  const move = await b.sendOp({ type: "node.move", id: "n2", position: { x: 5, y: 6 }, base_version: 3 });
  assert.equal(move.version, 4);
  while (a.version < 4) await next(a, "canvas");
  const server = await client.flow(id);
  for (const s of [a, b]) {
    assert.deepEqual(s.canvas.nodes, server.nodes);
    assert.deepEqual(s.canvas.edges, server.edges);
    assert.equal(s.version, server.version);
  }
  a.close();
  b.close();
});

test("two edits of the same node from the same version: one applies, the other is a CONFLICT", async () => {
  const { a, b } = await twoSessions();
  await a.sendOp({ type: "node.add", node: { id: "n1", type: "note", position: { x: 0, y: 0 } } });
  while (b.version < 1) await next(b, "canvas");
  const base = b.canvas.nodes[0]!.version;
  const conflicts: string[] = [];
  a.on("conflict", (c) => conflicts.push(c.reason));
  await a.sendOp({ type: "node.move", id: "n1", position: { x: 100, y: 0 }, base_version: base });
  const refused = b.sendOp({ type: "node.move", id: "n1", position: { x: 0, y: 100 }, base_version: base });
  await assert.rejects(refused, (e: unknown) => e instanceof ConflictError && e.reason === "version_mismatch");
  assert.deepEqual(b.canvas.nodes[0]!.position, { x: 100, y: 0 }, "the refused move left no trace");
  while (a.version < 2 || conflicts.length === 0) await next(a, "event");
  assert.deepEqual(conflicts, ["version_mismatch"], "everyone sees the conflict, the sender too");
  a.close();
  b.close();
});

test("text ops arrive as splices and count UTF-16 like the server", async () => {
  const { a, b } = await twoSessions();
  await a.sendOp({ type: "node.add", node: { id: "t", type: "note", position: { x: 0, y: 0 }, data: { body: "" } } });
  for (const text of ["👋 ", "héllo", " wörld"]) await a.sendOp({ type: "text.append", id: "t", path: "/body", text });
  await a.sendOp({ type: "text.delete", id: "t", path: "/body", at: 0, len: 3 });
  while (b.version < 5) await next(b, "canvas");
  assert.equal(b.text("t", "/body"), "héllo wörld");
  a.close();
  b.close();
});

test("a dropped stream resumes where it left off: no gap, no duplicate, no reload", async () => {
  const { a, b } = await twoSessions();
  await a.sendOp({ type: "node.add", node: { id: "n1", type: "note", position: { x: 0, y: 0 } } });
  while (b.version < 1) await next(b, "canvas");
  const seen: FlowEvent[] = [];
  b.on("event", (e) => seen.push(e));
  b.stream.drop();
  for (let x = 1; x <= 20; x++) await a.sendOp({ type: "node.move", id: "n1", position: { x, y: 0 } });
  assert.equal(b.version, 1, "nothing reached the dropped stream");
  b.stream.restore();
  const last = (e: FlowEvent) => e.type === "SYNC_CANVAS" && e.data.version === 21;
  if (!seen.some(last)) await next(b, "event", last);
  const ready = seen.find((e) => e.type === "READY");
  assert.equal(ready?.type === "READY" && ready.data.resumed, true);
  const seqs = seen.filter((e) => e.seq !== undefined).map((e) => e.seq!);
  assert.deepEqual(seqs, seqs.map((_, i) => seqs[0]! + i), "contiguous, each once");
  // (Version 1's event may still be on its way out when the listener was added.)
  const versions = seen.flatMap((e) => (e.type === "SYNC_CANVAS" && e.data.version > 1 ? [e.data.version] : []));
  assert.deepEqual(versions, [...Array(20).keys()].map((i) => i + 2), `seen: ${seen.map((e) => `${e.type}:${e.seq}`)}`);
  assert.deepEqual(b.canvas.nodes[0]!.position, { x: 20, y: 0 });
  a.close();
  b.close();
});

test("an execution's status and streamed LLM text reach every session", async () => {
  const { a, b } = await twoSessions();
  await Promise.all(
    a.sendOps([
      { type: "node.add", node: { id: "n1", type: "template", position: { x: 0, y: 0 }, data: { template: "Say hi" } } },
      { type: "node.add", node: { id: "n2", type: "llm", position: { x: 200, y: 0 }, data: { prompt: "{{n1}}" } } },
      { type: "edge.add", edge: { id: "e1", source: "n1", target: "n2" } },
    ]),
  );
  const finished = next(b, "execution", (x) => x.status === "succeeded");
  const id = await a.startExecution();
  const run = await finished;
  assert.equal(run.id, id);
  assert.equal(run.nodes.n1!.status, "succeeded");
  assert.equal(run.nodes.n2!.status, "succeeded");
  assert.equal(run.nodes.n2!.log, TOKENS.join(""));
  assert.equal(run.nodes.n2!.chunks, TOKENS.length + 1, "every chunk and the closing one");
  a.close();
  b.close();
});

test("a session opened in the middle of a run shows the text streamed before it, then the rest", async () => {
  const { id, a, b } = await twoSessions();
  await a.sendOp({ type: "node.add", node: { id: "n1", type: "llm", position: { x: 0, y: 0 }, data: { prompt: "hi" } } });
  const hold = llm.holdNext(3);
  const before = TOKENS.slice(0, 3).join("");
  const halfway = next(a, "log", (l) => l.text === before);
  const run = await a.startExecution();
  await hold.reached;
  await halfway;
  const late = await FlowSession.open(client, id, { EventSource });
  assert.equal(late.executions.get(run)?.nodes.n1?.log, before, "the text so far, at once");
  const finished = next(late, "execution", (x) => x.id === run && x.status === "succeeded");
  hold.release();
  const done = await finished;
  assert.equal(done.nodes.n1!.log, TOKENS.join(""));
  assert.equal(done.nodes.n1!.chunks, TOKENS.length + 1);
  for (const s of [a, b, late]) s.close();
});

test("cancelling a run stops it; every session sees it cancelled", async () => {
  const { a, b } = await twoSessions();
  await Promise.all(
    a.sendOps([
      { type: "node.add", node: { id: "slow", type: "delay", position: { x: 0, y: 0 }, data: { ms: 60_000 } } },
      { type: "node.add", node: { id: "after", type: "template", position: { x: 200, y: 0 }, data: { template: "never" } } },
      { type: "edge.add", edge: { id: "e1", source: "slow", target: "after" } },
    ]),
  );
  const running = next(a, "execution", (x) => x.nodes.slow?.status === "running");
  const cancelled = next(b, "execution", (x) => x.status === "cancelled");
  const id = await a.startExecution();
  await running;
  await a.cancelExecution(id);
  const run = await cancelled;
  assert.equal(run.id, id);
  const server = await client.execution(a.flowId, id);
  assert.equal(server.status, "cancelled");
  assert.notEqual(server.nodes.find((n) => n.node_id === "after")!.status, "succeeded");
  a.close();
  b.close();
});

test("presence: each sees the other, with the state it set", async () => {
  const { a, b } = await twoSessions();
  const seen = next(b, "presence", (list) => list.some((p) => !p.self && JSON.stringify(p.state) === '{"cursor":[3,4]}'));
  a.setPresence({ cursor: [1, 2] });
  a.setPresence({ cursor: [3, 4] }); // throttled: the latest wins
  const list = await seen;
  assert.ok(list.some((p) => p.self && p.connectionId === b.connectionId));
  assert.ok(list.some((p) => p.connectionId === a.connectionId));
  a.close();
  const gone = await next(b, "presence", (l) => l.every((p) => p.connectionId !== a.connectionId));
  assert.equal(gone.length, 1);
  b.close();
});
