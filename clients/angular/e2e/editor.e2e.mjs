// End to end: the one binary serves the editor at /editor/; two people (two Chromium
// contexts, Debian's Chromium driven by playwright-core) and an agent work on one flow.
// They add nodes from the palette, connect two by dragging a port, type into the same
// prompt at once (both texts land), while the agent streams text into a third node; a run
// streams LLM text into both pages, one of which reloads mid-run and still shows the whole
// text; a move is undone and redone through the server; a run is cancelled; a refused op
// shows on its node; a node is deleted. Screenshots go to target/editor-*.png.
//
// Needs the SDK's test build (clients/typescript: `npm run build:test`) for its helpers.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { EventSource } from "eventsource";
import { chromium } from "playwright-core";

import { FlowSession, FlowsyncClient } from "@flowsync/client";
import { REPO, chatStub, startSystem } from "../../typescript/build/test/support.js";

// A guard against a hang, never a timing assertion.
setTimeout(() => {
  console.error("e2e: no end after 5 minutes");
  process.exit(1);
}, 300_000).unref();

const TOKENS = ["Hello", " from", " the", " model", " ✨"];
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PATIENCE = 30_000;
const FLOW = "editor-e2e";

const step = (name) => console.log(`e2e: ${name}`);

const llm = await chatStub(TOKENS);
const system = await startSystem({ FLOWSYNC_RUNNER__LLM__BASE_URL: llm.url });
const api = new FlowsyncClient({ baseUrl: system.url });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
});
const errors = [];

async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  await page.goto(`${system.url}/editor/?flow=${FLOW}&name=${name}`);
  await live(page);
  return page;
}

const live = (page) => page.waitForSelector('[data-testid="status"][data-state="live"]', { timeout: PATIENCE });
const node = (page, id) => page.locator(`[data-testid="node-${id}"]`);
/** The node's group in the SVG canvas: its ports are its two handles (target, then source). */
const group = (page, id) => page.locator("g.vflow-node", { has: node(page, id) });

async function centre(locator) {
  const box = await locator.boundingBox();
  assert.ok(box, "on screen");
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

/** Presses at `from`, moves to `to` in steps, releases: a person's drag. */
async function drag(page, from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(to.x, to.y, { steps: 12 });
  await page.mouse.up();
}

/** Adds a node of `kind` from the palette; its id, once the server has it. */
async function add(page, kind) {
  const before = new Set((await api.flow(FLOW)).nodes.map((n) => n.id));
  await page.click(`[data-testid="add-${kind}"]`);
  const flow = await serverShows((f) => f.nodes.some((n) => n.type === kind && !before.has(n.id)), `a new ${kind} node`);
  return flow.nodes.find((n) => n.type === kind && !before.has(n.id)).id;
}

/** Polls the server until `check` holds for the flow (the pages are checked by selector). */
async function serverShows(check, what) {
  const deadline = Date.now() + PATIENCE;
  for (;;) {
    const flow = await api.flow(FLOW);
    if (check(flow)) return flow;
    assert.ok(Date.now() < deadline, `the server never showed ${what}: ${JSON.stringify(flow.nodes.map((n) => n.data))}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

try {
  await api.createFlow({ id: FLOW, name: "editor e2e" });
  const ada = await person("ada");
  const bob = await person("bob");
  step("both pages live; each sees the other");
  await ada.waitForSelector('[data-testid="people"] .person:text("bob")', { timeout: PATIENCE });
  await bob.waitForSelector('[data-testid="people"] .person:text("ada")', { timeout: PATIENCE });

  const source = await add(ada, "template");
  const model = await add(ada, "llm");
  await node(bob, model).waitFor({ timeout: PATIENCE });
  step(`nodes ${source} and ${model} added from the palette, shown to bob`);

  // Connect: from the template's output port (right) to the LLM's input port (left).
  await drag(bob, await centre(group(bob, source).locator("circle").nth(1)), await centre(group(bob, model).locator("circle").nth(0)));
  await serverShows((f) => f.edges.some((e) => e.source === source && e.target === model), "the edge");
  await ada.waitForFunction(() => document.querySelectorAll("g.vflow-edge, g[edge]").length > 0, null, { timeout: PATIENCE });
  step("bob connected the two nodes by dragging a port; ada sees the edge");

  // The agent: an ordinary client that adds a note and streams text into it meanwhile.
  const agent = await FlowSession.open(new FlowsyncClient({ baseUrl: system.url }), FLOW, { EventSource });
  await agent.sendOp({ type: "node.add", node: { id: "notes", type: "note", position: { x: 40, y: 300 }, data: { title: "Agent notes", text: "" } } });
  const agentWords = Array.from({ length: 30 }, (_, i) => `w${i} `);
  const streaming = (async () => {
    for (const w of agentWords) {
      await agent.sendOp({ type: "text.append", id: "notes", path: "/text", text: w });
    }
  })();

  // Both type into the LLM's prompt at once: ada after the seed text, bob before it.
  await ada.click(`[data-testid="node-${model}"] header`);
  await bob.click(`[data-testid="node-${model}"] header`);
  const adaField = ada.locator('[data-testid="field"]');
  const bobField = bob.locator('[data-testid="field"]');
  await adaField.fill("|");
  await serverShows((f) => f.nodes.find((n) => n.id === model)?.data.prompt === "|", "the seed text");
  await bob.waitForFunction(() => document.querySelector('[data-testid="field"]')?.value === "|", null, { timeout: PATIENCE });
  await adaField.focus();
  await ada.keyboard.press("End");
  await bobField.focus();
  await bob.keyboard.press("Home");
  const [adaText, bobText] = ["Ada writes a poem.", "Bob: "];
  await Promise.all([ada.keyboard.type(adaText, { delay: 15 }), bob.keyboard.type(bobText, { delay: 20 })]);
  const whole = `${bobText}|${adaText}`;
  await serverShows((f) => f.nodes.find((n) => n.id === model)?.data.prompt === whole, `the prompt "${whole}"`);
  for (const page of [ada, bob]) {
    await page.waitForFunction((w) => document.querySelector('[data-testid="field"]')?.value === w, whole, { timeout: PATIENCE });
  }
  step(`both typed into one prompt at once; both texts landed: "${whole}"`);

  await streaming;
  const notes = agentWords.join("");
  for (const page of [ada, bob]) {
    await page.waitForFunction((t) => document.querySelector('[data-testid="node-notes"] .field')?.textContent === t, notes, { timeout: PATIENCE });
  }
  step("the agent streamed its notes into a third node while they typed; both pages show them whole");

  // Remote cursors: ada's pointer over the canvas shows in bob's page.
  const canvasBox = await ada.locator('[data-testid="canvas"]').boundingBox();
  await ada.mouse.move(canvasBox.x + 600, canvasBox.y + 400, { steps: 4 });
  await bob.waitForSelector('.cursor:text("ada")', { timeout: PATIENCE });
  step("ada's cursor shows in bob's page");

  // A run: the model is held after two tokens; bob reloads mid-run and sees the text so far.
  const hold = llm.holdNext(2);
  await ada.click('[data-testid="run"]');
  await hold.reached;
  const sofar = TOKENS.slice(0, 2).join("");
  await node(bob, model).locator('[data-testid="output"]', { hasText: sofar }).waitFor({ timeout: PATIENCE });
  await bob.reload();
  await live(bob);
  await bob.waitForFunction(
    ([id, t]) => document.querySelector(`[data-testid="node-${id}"] [data-testid="output"]`)?.textContent === t,
    [model, sofar],
    { timeout: PATIENCE },
  );
  step("bob reloaded mid-run: the text streamed before is there at once");
  hold.release();
  for (const page of [ada, bob]) {
    await page.waitForSelector(`[data-testid="node-${model}"][data-status="succeeded"]`, { timeout: PATIENCE });
    await page.waitForSelector('[data-testid="run-status"][data-status="succeeded"]', { timeout: PATIENCE });
    assert.equal(await node(page, model).locator('[data-testid="output"]').textContent(), TOKENS.join(""));
    assert.equal(await node(page, source).getAttribute("data-status"), "succeeded");
  }
  step("the run succeeded in both pages, status colours and the model's whole text shown");

  // Drag a node, then undo the move through the server.
  const before = (await api.flow(FLOW)).nodes.find((n) => n.id === "notes").position;
  const header = await centre(node(ada, "notes").locator("header"));
  await drag(ada, header, { x: header.x + 300, y: header.y + 40 });
  const moved = await serverShows((f) => f.nodes.find((n) => n.id === "notes").position.x !== before.x, "the move");
  const at = moved.nodes.find((n) => n.id === "notes").position;
  assert.ok(at.x > before.x + 200, `moved right: ${JSON.stringify(at)}`);
  await ada.click('[data-testid="undo"]');
  await serverShows((f) => {
    const p = f.nodes.find((n) => n.id === "notes").position;
    return p.x === before.x && p.y === before.y;
  }, "the move undone");
  const translate = `translate(${before.x}, ${before.y})`;
  for (const page of [ada, bob]) {
    await page.waitForFunction(
      (t) => [...document.querySelectorAll("g.vflow-node")].some((g) => g.querySelector('[data-testid="node-notes"]') && g.getAttribute("transform") === t),
      translate,
      { timeout: PATIENCE },
    );
  }
  step("ada dragged a node and undid the move; both pages show it back");
  await ada.click('[data-testid="redo"]');
  await serverShows((f) => {
    const p = f.nodes.find((n) => n.id === "notes").position;
    return p.x === at.x && p.y === at.y;
  }, "the move redone");
  step("and redid it");

  // Cancel: a long delay node, run, cancel while it runs.
  const wait = await add(ada, "delay");
  await ada.locator('aside input[type="number"]').fill("60000");
  await ada.locator('aside input[type="number"]').press("Enter");
  await serverShows((f) => f.nodes.find((n) => n.id === wait)?.data.ms === 60000, "the delay set");
  await ada.click('[data-testid="run"]');
  await bob.waitForSelector(`[data-testid="node-${wait}"][data-status="running"]`, { timeout: PATIENCE });
  await ada.click('[data-testid="cancel"]');
  for (const page of [ada, bob]) {
    await page.waitForSelector('[data-testid="run-status"][data-status="cancelled"]', { timeout: PATIENCE });
  }
  step("a run with a long delay node, cancelled from ada's page: cancelled in both");

  // A conflict shows on the node it concerns: the agent moves the LLM node from a stale version.
  await assert.rejects(agent.sendOp({ type: "node.move", id: model, position: { x: 0, y: 0 }, base_version: 1 }), /version_mismatch|changed/);
  for (const page of [ada, bob]) {
    await node(page, model).locator('[data-testid="conflict"]', { hasText: "version_mismatch" }).waitFor({ timeout: PATIENCE });
  }
  step("an agent's stale move was refused; both pages show the conflict on that node");

  // Delete: bob selects the notes and deletes them; gone from both pages.
  await bob.click('[data-testid="node-notes"] header');
  await bob.click('[data-testid="delete"]');
  await serverShows((f) => !f.nodes.some((n) => n.id === "notes"), "the notes deleted");
  for (const page of [ada, bob]) await node(page, "notes").waitFor({ state: "detached", timeout: PATIENCE });
  step("bob deleted a node; gone from both pages");

  assert.deepEqual(errors, [], "no page errors");
  const shots = join(REPO, "target");
  mkdirSync(shots, { recursive: true });
  await ada.screenshot({ path: join(shots, "editor-ada.png") });
  await bob.screenshot({ path: join(shots, "editor-bob.png") });
  step(`passed; screenshots in ${shots}/editor-{ada,bob}.png`);
  agent.close();
} finally {
  await browser.close();
  await system.stop();
  await llm.close();
}
