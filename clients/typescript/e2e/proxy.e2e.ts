// End to end through the distributed install: the pages served through docker-compose's
// proxy (nginx → an API container) in headless Chromium, with a dev token, their streams
// through the proxy to a gateway container. In the demo page (/demo/) the canvas loads and
// a node moved by an API client moves on the page; the editor (the UI at /) shows the same
// flow live. Run by tests/containers/run, which brings the deployment up and passes
// FLOWSYNC_TEST_PROXY and FLOWSYNC_TEST_SECRET. Screenshots are saved as
// target/proxy-e2e.png and target/proxy-editor.png.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

import { chromium } from "playwright-core";

import { FlowsyncClient } from "../src/index.js";
import { REPO } from "../test/support.js";

// A guard against a hang, never a timing assertion.
setTimeout(() => {
  console.error("proxy e2e: no end after 3 minutes");
  process.exit(1);
}, 180_000).unref();

const PROXY = process.env.FLOWSYNC_TEST_PROXY;
const SECRET = process.env.FLOWSYNC_TEST_SECRET;
if (!PROXY || !SECRET) throw new Error("FLOWSYNC_TEST_PROXY and FLOWSYNC_TEST_SECRET are set by tests/containers/run");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PATIENCE = 30_000;

/** An HS256 token for every flow and scope, as deploy/dev-token.sh makes one. */
function devToken(sub: string): string {
  const b64 = (value: string | Buffer) => Buffer.from(value).toString("base64url");
  const header = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const claims = b64(JSON.stringify({ sub, name: sub, kind: "user", flows: ["*"], scope: "read write execute publish", exp }));
  const signature = createHmac("sha256", SECRET!).update(`${header}.${claims}`).digest("base64url");
  return `${header}.${claims}.${signature}`;
}

const token = devToken("browser");
const api = new FlowsyncClient({ baseUrl: PROXY, token: devToken("agent") });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

try {
  const flowId = `proxy-${Date.now().toString(36)}`;
  await api.createFlow({ id: flowId, name: "Through the proxy" });
  await api.postOps(flowId, "seed", [
    { type: "node.add", op_id: "s1", node: { id: "note", type: "note", position: { x: 40, y: 60 }, data: { text: "Hello" } } },
  ]);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(`${PROXY}/demo/?flow=${flowId}&name=Ada&token=${token}`);
  await page.waitForSelector('#status[data-status="open"]', { timeout: PATIENCE });
  await page.waitForSelector('#nodes g[data-id="note"][data-x="40"][data-y="60"]', { timeout: PATIENCE });

  console.log("proxy e2e: a move made by an API client appears on the page");
  await api.postOps(flowId, "agent", [{ type: "node.move", op_id: "m1", id: "note", position: { x: 420, y: 260 } }]);
  await page.waitForSelector('#nodes g[data-id="note"][data-x="420"][data-y="260"]', { timeout: PATIENCE });
  assert.equal(Number(await page.locator("#version").textContent()), 2);

  const shots = join(REPO, "target");
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, "proxy-e2e.png") });

  console.log("proxy e2e: the editor, the UI at /, shows the flow live");
  const editor = await (await browser.newContext({ viewport: { width: 1280, height: 720 } })).newPage();
  editor.on("pageerror", (e) => console.error(`editor page error: ${e.message}`));
  await editor.goto(`${PROXY}/?flow=${flowId}&name=Bob&token=${token}`);
  assert.equal(new URL(editor.url()).pathname, "/editor/");
  await editor.waitForSelector('[data-testid="status"][data-state="live"]', { timeout: PATIENCE });
  await editor.waitForSelector('g.vflow-node[transform="translate(420, 260)"] [data-testid="node-note"]', { timeout: PATIENCE });
  await api.postOps(flowId, "agent", [{ type: "node.move", op_id: "m2", id: "note", position: { x: 200, y: 100 } }]);
  await editor.waitForSelector('g.vflow-node[transform="translate(200, 100)"] [data-testid="node-note"]', { timeout: PATIENCE });
  await editor.screenshot({ path: join(shots, "proxy-editor.png") });
  console.log(`proxy e2e: passed; screenshots in ${shots}/proxy-{e2e,editor}.png`);
} finally {
  await browser.close();
}
