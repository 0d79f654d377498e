// End to end: the one binary serves the demo page (at /demo/); two pages of it in headless Chromium
// (Debian's, driven by playwright-core) edit the same flow. A node moved in one page moves
// in the other; two people dragging the same node make a conflict; an execution streams LLM
// text into both log panels; a dropped stream restores with nothing missed; a third page
// opened mid-run shows the text streamed before it joined. A screenshot of
// the page is saved as target/demo-e2e.png.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium, type Page } from "playwright-core";

import { FlowsyncClient, type Flow } from "../src/index.js";
import { chatStub, REPO, startSystem } from "../test/support.js";

// A guard against a hang, never a timing assertion.
setTimeout(() => {
  console.error("e2e: no end after 5 minutes");
  process.exit(1);
}, 300_000).unref();

const TOKENS = ["Stream", "ing ", "tokens ", "live", " ✨"];
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PATIENCE = 30_000;

const llm = await chatStub(TOKENS);
const system = await startSystem({ FLOWSYNC_RUNNER__LLM__BASE_URL: llm.url });
const api = new FlowsyncClient({ baseUrl: system.url });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

function step(name: string): void {
  console.log(`e2e: ${name}`);
}

/** The node's position as a page shows it (its `data-x/y`, the server position it applied). */
async function position(page: Page, id: string): Promise<[number, number]> {
  const g = page.locator(`#nodes g[data-id="${id}"]`);
  return [Number(await g.getAttribute("data-x")), Number(await g.getAttribute("data-y"))];
}

/** Waits until the page shows the node at the server's position. */
async function showsServerPosition(page: Page, flow: Flow, id: string): Promise<void> {
  const node = flow.nodes.find((n) => n.id === id)!;
  await page.waitForSelector(`#nodes g[data-id="${id}"][data-x="${node.position.x}"][data-y="${node.position.y}"]`, { timeout: PATIENCE });
}

/** Presses on a node's centre, relative to the page. */
async function centre(page: Page, id: string): Promise<{ x: number; y: number }> {
  const box = (await page.locator(`#nodes g[data-id="${id}"] rect`).boundingBox())!;
  return { x: box.x + box.width / 2, y: box.y + box.height / 2 };
}

async function dragBy(page: Page, id: string, dx: number, dy: number): Promise<void> {
  const from = await centre(page, id);
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move(from.x + dx / 2, from.y + dy / 2, { steps: 4 });
  await page.mouse.move(from.x + dx, from.y + dy, { steps: 4 });
  await page.mouse.up();
}

/** The flow once the server has reached `version` (polled: the API has no long poll). */
async function flowAt(id: string, atLeast: number): Promise<Flow> {
  const deadline = Date.now() + PATIENCE;
  for (;;) {
    const flow = await api.flow(id);
    if (flow.version >= atLeast) return flow;
    if (Date.now() > deadline) throw new Error(`flow ${id} stayed at version ${flow.version}, wanted ${atLeast}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function version(page: Page): Promise<number> {
  return Number(await page.locator("#version").textContent());
}

try {
  const flowId = "e2e";
  await api.createFlow({ id: flowId, name: "End to end" });
  const seed = [
    { type: "node.add", op_id: "s1", node: { id: "ask", type: "template", position: { x: 40, y: 60 }, data: { template: "Say something" } } },
    { type: "node.add", op_id: "s2", node: { id: "model", type: "llm", position: { x: 300, y: 60 }, data: { prompt: "{{ask}}" } } },
    { type: "node.add", op_id: "s3", node: { id: "note", type: "note", position: { x: 160, y: 220 }, data: { text: "Drag me" } } },
    { type: "edge.add", op_id: "s4", edge: { id: "e1", source: "ask", target: "model" } },
  ] as const;
  await api.postOps(flowId, "seed", seed);
  await flowAt(flowId, 4);

  // Two people: two browser contexts, each its own visible window.
  const page = async () => (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
  const [ada, bob] = [await page(), await page()];
  for (const page of [ada, bob]) page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await ada.goto(`${system.url}/demo/?flow=${flowId}&name=Ada`);
  await bob.goto(`${system.url}/demo/?flow=${flowId}&name=Bob`);
  for (const page of [ada, bob]) {
    await page.waitForSelector('#status[data-status="open"]', { timeout: PATIENCE });
    await page.waitForSelector('#nodes g[data-id="note"]', { timeout: PATIENCE });
    await page.waitForFunction(() => document.querySelectorAll("#presence li").length === 2, undefined, { timeout: PATIENCE });
  }
  assert.match((await ada.locator("#presence li.self").textContent())!, /Ada/);
  await ada.waitForSelector('#presence li:has-text("Bob")', { timeout: PATIENCE });

  step("move a node in one page, see it move in the other");
  const before = await position(bob, "note");
  await dragBy(ada, "note", 150, 80);
  let server = await flowAt(flowId, 5);
  await showsServerPosition(ada, server, "note");
  const moved = server.nodes.find((n) => n.id === "note")!.position;
  assert.deepEqual([moved.x - before[0], moved.y - before[1]], [150, 80]);
  await showsServerPosition(bob, server, "note");

  step("two people drag the same node: one move applies, the other is refused");
  const grab = await centre(bob, "ask");
  await bob.mouse.move(grab.x, grab.y);
  await bob.mouse.down(); // Bob holds the node at its current version…
  await bob.mouse.move(grab.x + 20, grab.y + 200, { steps: 3 });
  await dragBy(ada, "ask", 0, 120); // …while Ada moves it
  server = await flowAt(flowId, 6);
  await bob.waitForFunction((v) => Number(document.querySelector("#version")!.textContent) >= v, 6, { timeout: PATIENCE });
  await bob.mouse.up();
  await bob.waitForSelector('#conflicts li[data-reason="version_mismatch"]', { timeout: PATIENCE });
  server = await api.flow(flowId);
  assert.equal(server.version, 6, "the refused move applied nothing");
  await showsServerPosition(bob, server, "ask");
  assert.equal(await ada.locator("#conflicts li").count(), 0, "Ada's move applied");

  step("run the flow: status colours and streamed LLM text in both pages");
  await ada.click("#run");
  for (const page of [ada, bob]) {
    await page.waitForSelector('#log section[data-node="model"][data-status="succeeded"]', { timeout: PATIENCE });
    assert.equal(await page.locator('#log section[data-node="model"] pre').textContent(), TOKENS.join(""));
    await page.waitForSelector('#nodes g[data-id="model"][data-status="succeeded"]', { timeout: PATIENCE });
    await page.waitForSelector('#nodes g[data-id="ask"][data-status="succeeded"]', { timeout: PATIENCE });
  }

  step("drop Bob's stream, change things meanwhile, restore: nothing missed");
  await bob.click("#drop");
  await bob.waitForSelector('#status[data-status="offline"]', { timeout: PATIENCE });
  const offlineAt = await version(bob);
  for (const dx of [30, 30, 30]) {
    const v = await version(ada);
    await dragBy(ada, "note", dx, 0);
    await ada.waitForFunction((w) => Number(document.querySelector("#version")!.textContent) > w, v, { timeout: PATIENCE });
  }
  await ada.click("#run"); // a second run, with its log, while Bob is away
  await ada.waitForSelector('#run-status[data-status="succeeded"]', { timeout: PATIENCE });
  assert.equal(await version(bob), offlineAt, "the dropped page saw nothing");
  await bob.click("#drop"); // restore
  server = await api.flow(flowId);
  await bob.waitForFunction((v) => Number(document.querySelector("#version")!.textContent) === v, server.version, { timeout: PATIENCE });
  await showsServerPosition(bob, server, "note");
  await bob.waitForSelector('#run-status[data-status="succeeded"]', { timeout: PATIENCE });
  const stats = await bob.evaluate(() => (window as unknown as { flowsyncDemo: { stats: { gaps: number; duplicates: number; resumed: number } } }).flowsyncDemo.stats);
  assert.deepEqual([stats.gaps, stats.duplicates, stats.resumed], [0, 0, 1], "resumed once, no gap, no duplicate");
  assert.equal(await bob.locator('#log section[data-node="model"] pre').textContent(), TOKENS.join(""));
  const adaRun = await ada.locator("#run-id").textContent();
  assert.equal(await bob.locator("#run-id").textContent(), adaRun, "Bob shows the run that happened while away");

  step("a third page opens in the middle of a run: the text streamed before it joined, then the rest");
  const hold = llm.holdNext(2);
  const firstTwo = TOKENS.slice(0, 2).join("");
  const shownLog = (page: Page, text: string) =>
    page.waitForFunction((t) => document.querySelector('#log section[data-node="model"] pre')?.textContent === t, text, { timeout: PATIENCE });
  await ada.click("#run");
  await hold.reached;
  await shownLog(ada, firstTwo);
  const carol = await page();
  carol.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await carol.goto(`${system.url}/demo/?flow=${flowId}&name=Carol`);
  await carol.waitForSelector('#status[data-status="open"]', { timeout: PATIENCE });
  await shownLog(carol, firstTwo);
  hold.release();
  for (const page of [ada, bob, carol]) {
    await page.waitForSelector('#log section[data-node="model"][data-status="succeeded"]', { timeout: PATIENCE });
    assert.equal(await page.locator('#log section[data-node="model"] pre').textContent(), TOKENS.join(""));
  }
  assert.equal(await carol.locator("#run-id").textContent(), await ada.locator("#run-id").textContent());

  const shots = join(REPO, "target");
  mkdirSync(shots, { recursive: true });
  await ada.screenshot({ path: join(shots, "demo-e2e.png") });
  step(`passed; screenshot in ${join(shots, "demo-e2e.png")}`);
} finally {
  await browser.close();
  await system.stop();
  await llm.close();
}
