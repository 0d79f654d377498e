import assert from "node:assert/strict";
import { test } from "node:test";

import { Canvas, CanvasMismatch, parsePointer, type Flow } from "../src/index.js";

const flow: Flow = {
  id: "f",
  name: "Flow",
  version: 3,
  nodes: [
    { id: "a", type: "note", position: { x: 0, y: 0 }, data: { text: "héllo 👋 wörld", deep: { list: ["x", "y"] } }, version: 2 },
    { id: "b", type: "note", position: { x: 5, y: 5 }, data: {}, version: 3 },
  ],
  edges: [{ id: "e", source: "a", target: "b", data: {}, version: 3 }],
  meta: {},
  created_at: "",
  updated_at: "",
};

test("changes replace entities whole; untouched ones keep their identity", () => {
  const c = Canvas.fromFlow(flow);
  const before = c.state();
  c.apply(4, [{ kind: "node.upsert", node: { ...flow.nodes[1]!, position: { x: 9, y: 9 }, version: 4 } }]);
  const after = c.state();
  assert.notEqual(after, before);
  assert.equal(after.version, 4);
  assert.deepEqual(c.node("b")!.position, { x: 9, y: 9 });
  assert.equal(after.nodes.find((n) => n.id === "a"), before.nodes.find((n) => n.id === "a"));
  assert.equal(c.state(), after, "the same view until the next change");

  c.apply(5, [{ kind: "node.delete", id: "b" }, { kind: "edge.delete", id: "e" }, { kind: "flow.update", name: "New", meta: { k: 1 } }]);
  assert.deepEqual(c.state().nodes.map((n) => n.id), ["a"]);
  assert.equal(c.state().edges.length, 0);
  assert.equal(c.name, "New");
});

test("an op already contained is skipped", () => {
  const c = Canvas.fromFlow(flow);
  c.apply(3, [{ kind: "node.delete", id: "a" }]);
  assert.ok(c.node("a"));
  assert.equal(c.version, 3);
});

test("splices count UTF-16 code units, as the server does", () => {
  const c = Canvas.fromFlow(flow);
  // "héllo " is 6 units, the emoji 2: delete it and insert two astral characters.
  c.apply(4, [{ kind: "node.splice", id: "a", path: "/text", at: 6, delete: 2, insert: "🌍🌎", version: 4 }]);
  assert.equal(c.text("a", "/text"), "héllo 🌍🌎 wörld");
  assert.equal(c.node("a")!.version, 4);
  c.apply(5, [{ kind: "node.splice", id: "a", path: "/deep/list/1", at: 1, delete: 0, insert: "z", version: 5 }]);
  assert.deepEqual(c.node("a")!.data.deep, { list: ["x", "yz"] });
  assert.deepEqual(flow.nodes[0]!.data.deep, { list: ["x", "y"] }, "the loaded flow is not mutated");
});

test("a change that does not fit throws and changes nothing", () => {
  const c = Canvas.fromFlow(flow);
  const before = c.state();
  for (const bad of [
    { kind: "node.splice" as const, id: "a", path: "/text", at: 100, delete: 0, insert: "x", version: 4 },
    { kind: "node.splice" as const, id: "zz", path: "/text", at: 0, delete: 0, insert: "x", version: 4 },
    { kind: "node.splice" as const, id: "a", path: "/missing", at: 0, delete: 0, insert: "x", version: 4 },
  ]) {
    assert.throws(() => c.apply(4, [{ kind: "node.delete", id: "b" }, bad]), CanvasMismatch);
    assert.equal(c.state(), before);
    assert.ok(c.node("b"), "all or nothing");
  }
});

test("JSON pointers unescape ~1 and ~0", () => {
  assert.deepEqual(parsePointer("/a~1b/c~0d"), ["a/b", "c~d"]);
  assert.deepEqual(parsePointer(""), []);
  assert.throws(() => parsePointer("nope"), CanvasMismatch);
});
