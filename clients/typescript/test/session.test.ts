// The session against a fake EventSource and an in-memory API: op results by op id, retries
// with the same op id, version order with gap filling, resync.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ConflictError, FlowSession, FlowsyncClient, OpTimeoutError, type Applied, type Execution } from "../src/index.js";
import { FakeApi, next, nodeAt, Sources } from "./fakes.js";

async function open(
  options: { opTimeoutMs?: number; opAttempts?: number; gapWaitMs?: number; maxRuns?: number; presenceThrottleMs?: number } = {},
) {
  const api = new FakeApi();
  const sources = new Sources();
  const client = new FlowsyncClient({ baseUrl: "http://fake", fetch: api.fetch, backoffMs: 1 });
  const logger = { warned: [] as string[], warn: (m: string) => logger.warned.push(m), error: (m: string) => logger.warned.push(m) };
  const opening = FlowSession.open(client, "f", { EventSource: sources.ctor, clientId: "me", logger, ...options });
  (await sources.nth(0)).ready();
  const session = await opening;
  return { api, sources, session, es: sources.last, logger };
}

test("subscribes first, then loads; events behind the loaded version are skipped", async () => {
  const api = new FakeApi();
  api.commit("o1", [nodeAt("n1", 1, 1)]);
  const sources = new Sources();
  const client = new FlowsyncClient({ baseUrl: "http://fake", fetch: api.fetch });
  const opening = FlowSession.open(client, "f", { EventSource: sources.ctor });
  const es = await sources.nth(0);
  assert.deepEqual(api.requests, [], "nothing loaded before the stream is up");
  es.ready(1, 1);
  // Already in the loaded state: must not apply twice or fail.
  es.send("SYNC_CANVAS", { prev_version: 0, version: 1, client_id: "x", ops: [{ op_id: "o1", type: "node.add", version: 1, changes: [nodeAt("n1", 1, 1)] }] }, 1);
  const session = await opening;
  assert.equal(api.requests[0], "GET /v1/flows/f");
  assert.equal(session.version, 1);
  assert.deepEqual(session.canvas.nodes.map((n) => n.id), ["n1"]);
  session.close();
});

test("each op's promise settles by its own result, matched by op id", async () => {
  const { api, session, es } = await open();
  const posted = api.nextPost();
  const [a, b, c] = session.sendOps([
    { type: "node.add", node: { id: "n1", type: "note", position: { x: 0, y: 0 } } },
    { type: "node.move", id: "n1", position: { x: 1, y: 1 }, base_version: 0 },
    { type: "node.delete", id: "n1", op_id: "mine-3" },
  ]);
  const ops = await posted;
  assert.equal(ops.length, 3);
  assert.equal(ops[2]!.op_id, "mine-3");
  assert.ok(ops[0]!.op_id.startsWith("op-") && ops[0]!.op_id !== ops[1]!.op_id);
  // Results in another order than sent, and someone else's results in between.
  es.send("CONFLICT", { op_id: ops[1]!.op_id, client_id: "me", reason: "version_mismatch", message: "changed", current_version: 1 }, 2);
  es.send("CONFLICT", { op_id: "someone-else", client_id: "x", reason: "not_found", message: "no", current_version: 1 }, 3);
  es.send("SYNC_CANVAS", { prev_version: 0, version: 1, client_id: "me", ops: [{ op_id: ops[0]!.op_id, type: "node.add", version: 1, changes: [nodeAt("n1", 0, 1)] }] }, 1);
  es.send("CONFLICT", { op_id: "mine-3", client_id: "me", reason: "skipped", message: "after a refusal", current_version: 1 }, 4);
  assert.deepEqual(await a, { opId: ops[0]!.op_id, version: 1 } satisfies Applied);
  await assert.rejects(b!, (e: unknown) => e instanceof ConflictError && e.reason === "version_mismatch");
  await assert.rejects(c!, (e: unknown) => e instanceof ConflictError && e.reason === "skipped");
  assert.equal(session.version, 1);
  session.close();
});

test("an op without a result is sent again with the same op id, then fails", async () => {
  const { api, session, es } = await open({ opTimeoutMs: 20, opAttempts: 3 });
  const first = api.nextPost();
  const p = session.sendOp({ type: "node.delete", id: "x" });
  const [op] = await first;
  const again = await api.nextPost();
  assert.deepEqual(again, [op], "same op, same id");
  const third = await api.nextPost();
  assert.deepEqual(third, [op]);
  await assert.rejects(p, (e: unknown) => e instanceof OpTimeoutError && e.attempts === 3);
  // A late result of a given-up op changes nothing for the caller.
  es.send("CONFLICT", { op_id: op!.op_id, client_id: "me", reason: "not_found", message: "", current_version: 0 }, 1);
  session.close();
});

test("a retried op's re-announced result resolves it once", async () => {
  const { api, session, es } = await open({ opTimeoutMs: 20 });
  const first = api.nextPost();
  const p = session.sendOp({ type: "node.add", node: { id: "n1", type: "note", position: { x: 0, y: 0 } } });
  const [op] = await first;
  await api.nextPost(); // the retry
  const sync = { prev_version: 0, version: 1, client_id: "me", ops: [{ op_id: op!.op_id, type: "node.add", version: 1, changes: [nodeAt("n1", 0, 1)] }] };
  es.send("SYNC_CANVAS", sync, 1);
  es.send("SYNC_CANVAS", sync, 2); // announced again for the retry
  assert.equal((await p).version, 1);
  assert.equal(session.version, 1);
  session.close();
});

test("a SYNC_CANVAS ahead of its predecessor waits, then history fills the gap", async () => {
  const { api, session, es } = await open({ gapWaitMs: 10 });
  const s1 = api.commit("o1", [nodeAt("n1", 1, 1)]);
  const s2 = api.commit("o2", [nodeAt("n1", 2, 2)]);
  const s3 = api.commit("o3", [nodeAt("n2", 3, 3)]);
  // v3 then v2 arrive; v1's announcement is lost (an API died between commit and publish).
  const handled = next(session, "event", (e) => e.seq === 2);
  es.send("SYNC_CANVAS", s3, 3);
  es.send("SYNC_CANVAS", s2, 2);
  await handled;
  assert.equal(session.version, 0, "nothing applies out of order");
  const state = await next(session, "canvas", (c) => c.version === 3);
  assert.deepEqual(state.nodes.map((n) => [n.id, n.position.x]).sort(), [["n1", 2], ["n2", 3]]);
  assert.ok(api.requests.includes("GET /v1/flows/f/history?after=0&limit=500"));
  assert.ok(!api.requests.slice(1).includes("GET /v1/flows/f"), "filled from history, not reloaded");
  void s1;
  session.close();
});

test("the change feed tells each op once, in version order: live, held, repeated, from history; a reload is told", async () => {
  const { api, session, es } = await open({ gapWaitMs: 10 });
  const seen: string[] = [];
  session.on("change", (c) => seen.push(`${c.opId}@${c.version}`));
  const reloads: number[] = [];
  session.on("reload", (c) => reloads.push(c.version));
  const s1 = api.commit("o1", [nodeAt("n1", 1, 1)]);
  const s2 = api.commit("o2", [nodeAt("n1", 2, 2)]);
  const s3 = api.commit("o3", [nodeAt("n1", 3, 3)]);
  api.commit("o4", [nodeAt("n1", 4, 4)]); // announced never: history fills it in
  const s5 = api.commit("o5", [nodeAt("n1", 5, 5)]);
  es.send("SYNC_CANVAS", s1, 1);
  es.send("SYNC_CANVAS", s1, 2); // announced again (a client sent o1 again)
  es.send("SYNC_CANVAS", s3, 3); // ahead of o2: held
  es.send("SYNC_CANVAS", s2, 4);
  es.send("SYNC_CANVAS", s5, 5); // ahead of o4, which never comes
  await next(session, "canvas", (c) => c.version === 5);
  assert.deepEqual(seen, ["o1@1", "o2@2", "o3@3", "o4@4", "o5@5"]);
  assert.deepEqual(reloads, []);
  api.commit("o6", [nodeAt("n1", 6, 6)]);
  es.send("RESYNC", { reason: "history lost" }, 6);
  await next(session, "reload", (c) => c.version === 6);
  assert.deepEqual(seen.length, 5, "a reload is not told op by op");
  session.close();
});

test("an op announced ahead of its predecessor resolves once the canvas holds it, after its change", async () => {
  const { api, session, es } = await open({ gapWaitMs: 60_000 });
  const order: string[] = [];
  session.on("change", (c) => order.push(`change ${c.opId}`));
  const posted = api.nextPost();
  const mine = session.sendOp({ type: "node.add", node: { id: "n2", type: "note", position: { x: 0, y: 0 } } });
  const [op] = await posted;
  const s1 = api.commit("o1", [nodeAt("n1", 1, 1)]);
  const s2 = api.commit(op!.op_id, [nodeAt("n2", 2, 2)]);
  void mine.then(() => order.push(`result ${op!.op_id}`));
  es.send("SYNC_CANVAS", s2, 2); // mine, ahead of o1
  await next(session, "event", (e) => e.seq === 2);
  await Promise.resolve();
  assert.deepEqual(order, [], "not resolved while held");
  es.send("SYNC_CANVAS", s1, 1);
  assert.deepEqual(await mine, { opId: op!.op_id, version: 2 });
  assert.deepEqual(order, ["change o1", `change ${op!.op_id}`, `result ${op!.op_id}`]);
  session.close();
});

test("a refused op settles the rest of its request as skipped, even when their own results are lost", async () => {
  const { api, session, es } = await open({ opTimeoutMs: 60_000 });
  const posted = api.nextPost();
  const [head, tail] = session.sendOps([
    { type: "node.move", id: "n1", position: { x: 1, y: 1 }, base_version: 0 },
    { type: "node.move", id: "n1", position: { x: 2, y: 2 } },
  ]);
  const [first] = await posted;
  es.send("CONFLICT", { op_id: first!.op_id, client_id: "me", reason: "version_mismatch", message: "changed", current_version: 3 }, 1);
  await assert.rejects(head!, (e: unknown) => e instanceof ConflictError && e.reason === "version_mismatch");
  await assert.rejects(tail!, (e: unknown) => e instanceof ConflictError && e.reason === "skipped");
  // A RESYNC sends again what waits: nothing of that request.
  const before = api.posts.length;
  es.send("RESYNC", { reason: "history lost" }, 2);
  await next(session, "event", (e) => e.type === "RESYNC"); // emitted after what waits was sent again
  assert.equal(api.posts.length, before);
  session.close();
});

test("an early event whose predecessor arrives in time needs no history", async () => {
  const { api, session, es } = await open({ gapWaitMs: 60_000 });
  const s1 = api.commit("o1", [nodeAt("n1", 1, 1)]);
  const s2 = api.commit("o2", [nodeAt("n1", 2, 2)]);
  es.send("SYNC_CANVAS", s2, 2);
  es.send("SYNC_CANVAS", s1, 1);
  await next(session, "canvas", (c) => c.version === 2);
  assert.equal(session.canvas.nodes[0]!.position.x, 2);
  assert.ok(!api.requests.some((r) => r.includes("/history")));
  session.close();
});

test("RESYNC reloads and sends waiting ops again at once", async () => {
  const { api, session, es } = await open({ opTimeoutMs: 60_000 });
  const first = api.nextPost();
  const p = session.sendOp({ type: "node.delete", id: "gone" });
  const [op] = await first;
  api.commit("o1", [nodeAt("n9", 9, 1)]);
  const again = api.nextPost();
  es.send("RESYNC", { reason: "history lost" });
  assert.deepEqual(await again, [op]);
  assert.equal(session.version, 1, "reloaded");
  es.send("CONFLICT", { op_id: op!.op_id, client_id: "me", reason: "not_found", message: "", current_version: 1 }, 5);
  await assert.rejects(p, ConflictError);
  session.close();
});

test("a change that does not fit reloads the canvas", async () => {
  const { api, session, es, logger } = await open();
  api.commit("o1", [nodeAt("n1", 1, 1)]);
  es.send("SYNC_CANVAS", { prev_version: 0, version: 1, client_id: "x", ops: [{ op_id: "o1", type: "text.append", version: 1, changes: [{ kind: "node.splice", id: "nope", path: "/t", at: 0, delete: 0, insert: "x", version: 1 }] }] }, 1);
  const state = await next(session, "canvas", (c) => c.version === 1);
  assert.deepEqual(state.nodes.map((n) => n.id), ["n1"], "the server's state");
  assert.deepEqual(logger.warned, ["flowsync: splice of missing node nope; reloading"]);
  session.close();
});

test("closing fails waiting ops and FLOW_DELETED ends the session", async () => {
  const { session, es } = await open();
  const p = session.sendOp({ type: "node.delete", id: "x" });
  const closed = next(session, "closed");
  es.send("FLOW_DELETED", {}, 1);
  assert.equal(await closed, "the flow was deleted");
  await assert.rejects(p, /session closed/);
  assert.ok(es.closed);
  await assert.rejects(session.sendOp({ type: "redo" }), /session closed/);
});

test("LOG_STREAM text accumulates per node once, in index order", async () => {
  const { session, es } = await open();
  es.send("EXECUTION_UPDATE", { execution_id: "x1", status: "running" }, 1);
  es.send("EXECUTION_UPDATE", { execution_id: "x1", node_id: "n1", node_status: "running" }, 2);
  es.send("LOG_STREAM", { execution_id: "x1", node_id: "n1", index: 0, chunk: "Hel", done: false }, 3);
  es.send("LOG_STREAM", { execution_id: "x1", node_id: "n1", index: 1, chunk: "lo", done: false }, 4);
  es.send("LOG_STREAM", { execution_id: "x1", node_id: "n1", index: 1, chunk: "lo", done: false }, 5);
  es.send("EXECUTION_UPDATE", { execution_id: "x1", node_id: "n1", node_status: "succeeded", output: "Hello" }, 6);
  const done = next(session, "execution", (x) => x.status === "succeeded");
  es.send("EXECUTION_UPDATE", { execution_id: "x1", status: "succeeded" }, 7);
  const run = await done;
  assert.equal(run.nodes.n1!.log, "Hello");
  assert.equal(run.nodes.n1!.status, "succeeded");
  assert.equal(run.nodes.n1!.output, "Hello");
  assert.equal(run.nodes.n1!.chunks, 2);
  session.close();
});

test("a run joined midway shows the stored text at once, then the live chunks past it", async () => {
  const { api, session, es } = await open();
  const run = (log: string, logIndex: number): Execution => ({
    id: "x3", flow_id: "f", flow_version: 0, status: "running", created_at: "", updated_at: "",
    nodes: [{ node_id: "n1", status: "running", log, log_index: logIndex }],
  });
  // The first chunk this session sees is the third: the two before it are on the server.
  api.executions.set("x3", run("Hel", 2));
  const read = next(session, "execution", (x) => x.id === "x3" && x.nodes.n1?.log !== undefined);
  es.send("LOG_STREAM", { execution_id: "x3", node_id: "n1", index: 2, chunk: "lo", done: false }, 1);
  const first = await read;
  assert.ok(api.requests.includes("GET /v1/flows/f/executions/x3"), "read on the gap");
  // Stored after the read was made: the held chunk is applied past it.
  assert.equal(first.nodes.n1!.log, "Hel");
  const whole = next(session, "log", (l) => l.done);
  es.send("LOG_STREAM", { execution_id: "x3", node_id: "n1", index: 1, chunk: "l", done: false }, 2); // a repeat
  es.send("LOG_STREAM", { execution_id: "x3", node_id: "n1", index: 3, chunk: ", world", done: false }, 3);
  es.send("LOG_STREAM", { execution_id: "x3", node_id: "n1", index: 4, chunk: "", done: true }, 4);
  assert.equal((await whole).text, "Hello, world");
  assert.equal(session.executions.get("x3")!.nodes.n1!.chunks, 5);
  session.close();
});

test("chunks the server never stored are shown past the hole after one read, not read for again", async () => {
  const { api, session, es, logger } = await open();
  api.executions.set("x5", {
    id: "x5", flow_id: "f", flow_version: 0, status: "running", created_at: "", updated_at: "",
    nodes: [{ node_id: "n1", status: "running", log: "ab", log_index: 2 }],
  });
  const shown = next(session, "log", (l) => l.text === "abd");
  es.send("LOG_STREAM", { execution_id: "x5", node_id: "n1", index: 3, chunk: "d", done: false }, 1);
  assert.equal((await shown).text, "abd");
  const reads = api.requests.filter((r) => r === "GET /v1/flows/f/executions/x5").length;
  assert.equal(reads, 1, "one read");
  assert.deepEqual(logger.warned, ["flowsync: chunks 2..3 of node n1 are lost"]);
  session.close();
});

test("a node update of a run the session never saw start reads the run", async () => {
  const { api, session, es } = await open();
  api.executions.set("x6", {
    id: "x6", flow_id: "f", flow_version: 0, status: "running", created_at: "", updated_at: "",
    nodes: [{ node_id: "n1", status: "succeeded", output: "hi", log: "hi", log_index: 3 }],
  });
  const read = next(session, "execution", (x) => x.id === "x6" && x.nodes.n1?.log === "hi");
  es.send("EXECUTION_UPDATE", { execution_id: "x6", node_id: "n1", node_status: "succeeded", output: "hi" }, 1);
  const run = await read;
  assert.equal(run.nodes.n1!.chunks, 3);
  session.close();
});

test("a read that already holds the live chunks takes nothing twice; an older update does not undo an end", async () => {
  const { api, session, es } = await open();
  api.executions.set("x4", {
    id: "x4", flow_id: "f", flow_version: 0, status: "succeeded", created_at: "", updated_at: "",
    nodes: [{ node_id: "n1", status: "succeeded", output: "abc", log: "abc", log_index: 4 }],
  });
  const done = next(session, "execution", (x) => x.id === "x4" && x.status === "succeeded");
  es.send("LOG_STREAM", { execution_id: "x4", node_id: "n1", index: 2, chunk: "c", done: false }, 1);
  es.send("EXECUTION_UPDATE", { execution_id: "x4", node_id: "n1", node_status: "running" }, 2);
  es.send("LOG_STREAM", { execution_id: "x4", node_id: "n1", index: 3, chunk: "", done: true }, 3);
  const run = await done;
  await new Promise((r) => setImmediate(r));
  const now = session.executions.get("x4")!;
  assert.equal(run.nodes.n1!.log, "abc");
  assert.equal(now.nodes.n1!.log, "abc", "held chunks below the stored index are repeats");
  assert.equal(now.nodes.n1!.status, "succeeded", "not back to running");
  session.close();
});

test("an output announced by reference is read whole from the execution", async () => {
  const { api, session, es } = await open();
  const whole = "x".repeat(100_000);
  api.executions.set("x2", {
    id: "x2", flow_id: "f", flow_version: 0, status: "running", created_at: "", updated_at: "",
    nodes: [{ node_id: "n1", status: "succeeded", output: whole, log: "", log_index: 0 }],
  });
  es.send("EXECUTION_UPDATE", { execution_id: "x2", status: "running" }, 1);
  es.send("EXECUTION_UPDATE", { execution_id: "x2", node_id: "n1", node_status: "running" }, 2);
  const read = next(session, "execution", (x) => x.nodes.n1?.output === whole);
  es.send("EXECUTION_UPDATE", { execution_id: "x2", node_id: "n1", node_status: "succeeded", output: "x".repeat(1024), output_bytes: 100_000 }, 3);
  const run = await read;
  assert.equal(run.nodes.n1!.status, "succeeded");
  assert.ok(api.requests.includes("GET /v1/flows/f/executions/x2"));
  session.close();
});

test("a long session keeps the newest runs, and every running one", async () => {
  const { session, es } = await open({ maxRuns: 10 });
  let seq = 1;
  es.send("EXECUTION_UPDATE", { execution_id: "long", status: "running" }, seq++);
  for (let i = 0; i < 30; i++) {
    es.send("EXECUTION_UPDATE", { execution_id: `r${i}`, status: "succeeded" }, seq++);
  }
  await next(session, "execution", (x) => x.id === "r29");
  assert.equal(session.executions.size, 10);
  assert.ok(session.executions.has("long"), "a running execution stays");
  assert.ok(session.executions.has("r29") && !session.executions.has("r0"));
  session.close();
});

test("presence: joins, updates and leaves; own connection marked", async () => {
  const { session, es } = await open();
  const actor = { id: "bob", kind: "user", name: "Bob" };
  es.send("PRESENCE", { action: "join", connection_id: "c9", actor });
  es.send("PRESENCE", { action: "update", connection_id: "c9", actor, state: { cursor: [1, 2] } });
  es.send("PRESENCE", { action: "join", connection_id: "c0", actor });
  const list = await next(session, "presence", (p) => p.length === 2);
  assert.deepEqual(list.map((p) => [p.connectionId, p.self, p.state]), [["c9", false, { cursor: [1, 2] }], ["c0", true, undefined]]);
  const left = next(session, "presence", (p) => p.length === 1);
  es.send("PRESENCE", { action: "leave", connection_id: "c9", actor });
  assert.deepEqual((await left).map((p) => p.connectionId), ["c0"]);
  session.close();
});

test("presence: our state is told again to each newcomer (the server keeps none)", async () => {
  const { api, session, es } = await open({ presenceThrottleMs: 1 });
  const first = api.nextPresence();
  session.setPresence({ name: "ada" });
  assert.deepEqual(await first, { connection_id: "c0", state: { name: "ada" } });
  const again = api.nextPresence();
  es.send("PRESENCE", { action: "join", connection_id: "c9", actor: { id: "bob", kind: "user", name: "Bob" } });
  assert.deepEqual(await again, { connection_id: "c0", state: { name: "ada" } });
  // Our own join (another tab of ours is another connection; this one is c0) is no newcomer.
  es.send("PRESENCE", { action: "join", connection_id: "c0", actor: { id: "me", kind: "user", name: "Me" } });
  await next(session, "presence", (p) => p.length === 2);
  assert.equal(api.presencePosts.length, 2);
  session.close();
});

test("opening can be given up while the stream cannot connect", async () => {
  const sources = new Sources();
  const client = new FlowsyncClient({ baseUrl: "http://fake", fetch: new FakeApi().fetch });
  const abort = new AbortController();
  const opening = FlowSession.open(client, "f", { EventSource: sources.ctor, signal: abort.signal });
  const es = await sources.nth(0);
  abort.abort("user left");
  await assert.rejects(opening, /opening aborted: user left/);
  assert.ok(es.closed);
});
