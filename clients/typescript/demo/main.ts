// The demo page the one binary serves at `/demo/`: the canvas, drag to move, execution status
// colours, the log panel and presence — all through the SDK. `?flow=<id>&name=<you>&token=<jwt>`.

import {
  ConflictError,
  FlowSession,
  FlowsyncClient,
  HttpError,
  type CanvasState,
  type ExecutionState,
  type FlowEvent,
  type Node,
  type OpInput,
  type Position,
} from "../src/index.js";

const NODE_W = 170;
const NODE_H = 56;
const SVG = "http://www.w3.org/2000/svg";

const params = new URLSearchParams(location.search);
const flowId = params.get("flow") ?? "demo";
const me = params.get("name") ?? `guest-${Math.floor(Math.random() * 1000)}`;
const client = new FlowsyncClient({ baseUrl: "", token: params.get("token") ?? undefined });

const $ = <T extends Element = HTMLElement>(selector: string) => document.querySelector(selector) as T;

/** Seen by the end-to-end test: delivery order as this page observed it. */
const stats = { events: 0, gaps: 0, duplicates: 0, lastSeq: undefined as number | undefined, resumed: 0 };

interface Drag {
  id: string;
  /** The node's version when the drag began: the move is refused if someone changed it since. */
  base: number;
  grab: Position;
  at: Position;
}
let drag: Drag | undefined;
/** Moves sent and not yet answered: shown where they were dropped. */
const moving = new Map<string, Position>();
let currentRun: string | undefined;
const nodeViews = new Map<string, { g: SVGGElement; title: SVGTextElement; sub: SVGTextElement }>();

async function ensureFlow(): Promise<void> {
  try {
    await client.flow(flowId);
  } catch (e) {
    if (!(e instanceof HttpError) || e.status !== 404) throw e;
    try {
      await client.createFlow({ id: flowId, name: flowId });
    } catch (c) {
      if (!(c instanceof HttpError) || c.code !== "flow_exists") throw c;
      return; // another page created it first
    }
    await seed();
  }
}

/** A first flow to play with. */
async function seed(): Promise<void> {
  const session = await FlowSession.open(client, flowId);
  await Promise.all(
    session.sendOps([
      { type: "node.add", node: { id: "greet", type: "template", position: { x: 60, y: 80 }, data: { template: "Hello" } } },
      { type: "node.add", node: { id: "wait", type: "delay", position: { x: 300, y: 80 }, data: { ms: 800 } } },
      { type: "node.add", node: { id: "answer", type: "template", position: { x: 540, y: 80 }, data: { template: "{{greet}}, world" } } },
      { type: "node.add", node: { id: "note", type: "note", position: { x: 300, y: 240 }, data: { text: "Drag me" } } },
      { type: "edge.add", edge: { id: "e1", source: "greet", target: "wait" } },
      { type: "edge.add", edge: { id: "e2", source: "wait", target: "answer" } },
    ]),
  );
  session.close();
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", attrs: Record<string, string> = {}): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.textContent = text;
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function shownAt(node: Node): Position {
  if (drag?.id === node.id) return drag.at;
  return moving.get(node.id) ?? node.position;
}

function summary(node: Node): string {
  const d = node.data;
  const text = d.template ?? d.prompt ?? d.text ?? d.url ?? (d.ms !== undefined ? `${String(d.ms)} ms` : "");
  const s = typeof text === "string" ? text : JSON.stringify(text);
  return s.length > 26 ? `${s.slice(0, 25)}…` : s;
}

function renderCanvas(state: CanvasState, run: ExecutionState | undefined): void {
  $("#version").textContent = String(state.version);
  const byId = new Map(state.nodes.map((n) => [n.id, n]));
  const edges = $<SVGGElement>("#edges");
  edges.replaceChildren(
    ...state.edges.flatMap((e) => {
      const s = byId.get(e.source);
      const t = byId.get(e.target);
      if (!s || !t) return [];
      const a = shownAt(s);
      const b = shownAt(t);
      return [svg("line", { x1: a.x + NODE_W, y1: a.y + NODE_H / 2, x2: b.x, y2: b.y + NODE_H / 2, "data-id": e.id })];
    }),
  );
  // Keyed: a node keeps its element (and a drag its pointer capture) across renders.
  const layer = $<SVGGElement>("#nodes");
  for (const [id, view] of nodeViews) {
    if (!byId.has(id)) {
      view.g.remove();
      nodeViews.delete(id);
    }
  }
  for (const n of state.nodes) {
    let view = nodeViews.get(n.id);
    if (!view) {
      view = { g: svg("g"), title: svg("text", { class: "title", x: 10, y: 22 }), sub: svg("text", { class: "sub", x: 10, y: 42 }) };
      view.g.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }), view.title, view.sub);
      const id = n.id;
      view.g.addEventListener("pointerdown", (e) => startDrag(e, id));
      nodeViews.set(id, view);
    }
    layer.append(view.g); // in canvas order
    const at = shownAt(n);
    const attrs = {
      class: drag?.id === n.id ? "node dragging" : "node",
      transform: `translate(${at.x},${at.y})`,
      "data-id": n.id,
      "data-x": n.position.x,
      "data-y": n.position.y,
      "data-version": n.version,
      "data-status": run?.nodes[n.id]?.status ?? "idle",
    };
    for (const [k, v] of Object.entries(attrs)) view.g.setAttribute(k, String(v));
    view.title.textContent = `${n.id} · ${n.type}`;
    view.sub.textContent = summary(n);
  }
}

function renderRun(run: ExecutionState | undefined): void {
  $("#run-id").textContent = run ? run.id.slice(0, 8) : "";
  $("#run-status").textContent = run?.status ?? "";
  $("#run-status").dataset.status = run?.status ?? "";
  ($("#cancel") as HTMLButtonElement).disabled = !run || ["succeeded", "failed", "cancelled"].includes(run.status);
  $("#log").replaceChildren(
    ...Object.entries(run?.nodes ?? {}).map(([id, n]) => {
      const section = el("section", "", { class: "run-node", "data-node": id, "data-status": n.status });
      // The streamed text; for nodes that stream nothing, their output.
      const output = n.output === undefined ? "" : typeof n.output === "string" ? n.output : JSON.stringify(n.output);
      section.append(el("h3", `${id} — ${n.status}${n.error ? `: ${n.error}` : ""}`), el("pre", n.log || output));
      return section;
    }),
  );
}

function renderPresence(session: FlowSession): void {
  const people = session.presence;
  $("#presence").replaceChildren(
    ...people.map((p) => {
      const state = (p.state ?? {}) as { name?: string };
      const li = el("li", `${state.name ?? p.actor.name} (${p.actor.kind})${p.self ? " — you" : ""}`, { "data-connection": p.connectionId });
      if (p.self) li.className = "self";
      return li;
    }),
  );
  $<SVGGElement>("#cursors").replaceChildren(
    ...people.flatMap((p) => {
      const state = (p.state ?? {}) as { name?: string; cursor?: Position };
      if (p.self || !state.cursor) return [];
      const g = svg("g", { class: "cursor", transform: `translate(${state.cursor.x},${state.cursor.y})` });
      const label = svg("text", { x: 8, y: 4 });
      label.textContent = state.name ?? p.actor.name;
      g.append(svg("circle", { r: 4 }), label);
      return [g];
    }),
  );
}

let session: FlowSession;
let frame = 0;
function render(): void {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const run = currentRun ? session.executions.get(currentRun) : undefined;
    renderCanvas(session.canvas, run);
    renderRun(run);
    renderPresence(session);
  });
}

function pointer(e: PointerEvent): Position {
  const box = $<SVGSVGElement>("#canvas").getBoundingClientRect();
  return { x: Math.round(e.clientX - box.left), y: Math.round(e.clientY - box.top) };
}

function startDrag(e: PointerEvent, id: string): void {
  const node = session.canvas.nodes.find((n) => n.id === id);
  if (!node) return;
  const p = pointer(e);
  const at = shownAt(node);
  drag = { id: node.id, base: node.version, grab: { x: p.x - at.x, y: p.y - at.y }, at };
  (e.currentTarget as Element).setPointerCapture?.(e.pointerId);
  render();
}

function moveDrag(e: PointerEvent): void {
  const p = pointer(e);
  session.setPresence({ name: me, cursor: { x: p.x, y: p.y } });
  if (!drag) return;
  drag.at = { x: p.x - drag.grab.x, y: p.y - drag.grab.y };
  render();
}

function endDrag(): void {
  if (!drag) return;
  const { id, base, at } = drag;
  drag = undefined;
  const node = session.canvas.nodes.find((n) => n.id === id);
  if (!node || (node.position.x === at.x && node.position.y === at.y)) return render();
  moving.set(id, at);
  send({ type: "node.move", id, position: at, base_version: base }, `Move of ${id}`).finally(() => {
    if (moving.get(id) === at) moving.delete(id);
    render();
  });
}

/** Sends an op; a refusal is listed with its reason. */
async function send(op: OpInput, what: string): Promise<void> {
  try {
    await session.sendOp(op);
  } catch (e) {
    const reason = e instanceof ConflictError ? e.reason : e instanceof HttpError ? e.code : String(e);
    const detail = e instanceof ConflictError ? e.conflict.message : (e as Error).message;
    $("#conflicts").prepend(el("li", `${what} refused: ${reason} — ${detail}`, { "data-reason": reason }));
  }
}

function track(event: FlowEvent): void {
  stats.events++;
  if (event.type === "READY" && event.data.resumed) stats.resumed++;
  if (event.type === "RESYNC") stats.lastSeq = undefined;
  if (event.seq === undefined) return;
  if (stats.lastSeq !== undefined) {
    if (event.seq <= stats.lastSeq) stats.duplicates++;
    else if (event.seq > stats.lastSeq + 1) stats.gaps++;
  }
  stats.lastSeq = Math.max(event.seq, stats.lastSeq ?? 0);
  $("#stats").textContent = `events ${stats.events} · last seq ${stats.lastSeq} · gaps ${stats.gaps} · duplicates ${stats.duplicates} · resumed ${stats.resumed}×`;
}

async function main(): Promise<void> {
  $("#flow").textContent = flowId;
  await ensureFlow();
  session = await FlowSession.open(client, flowId);
  (window as unknown as { flowsyncDemo: unknown }).flowsyncDemo = { session, stats };
  const latest = [...session.executions.values()].at(-1);
  currentRun = latest?.id;
  session.on("canvas", render);
  session.on("presence", render);
  session.on("event", track);
  session.on("execution", (run) => {
    currentRun ??= run.id;
    if (run.id === currentRun || run.status === "queued" || run.status === "running") currentRun = run.id;
    render();
  });
  session.on("status", (s) => {
    $("#status").textContent = s;
    $("#status").dataset.status = s;
  });
  session.on("closed", (why) => {
    $("#status").textContent = `closed: ${why}`;
    $("#status").dataset.status = "closed";
  });
  $("#status").textContent = session.stream.status;
  $("#status").dataset.status = session.stream.status;
  session.setPresence({ name: me });

  const canvas = $<SVGSVGElement>("#canvas");
  canvas.addEventListener("pointermove", moveDrag);
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  $("#add").addEventListener("click", () => {
    const id = `note-${Math.random().toString(36).slice(2, 7)}`;
    const position = { x: 40 + Math.round(Math.random() * 500), y: 180 + Math.round(Math.random() * 200) };
    void send({ type: "node.add", node: { id, type: "note", position, data: { text: `by ${me}` } } }, `Add ${id}`);
  });
  $("#run").addEventListener("click", async () => {
    try {
      currentRun = await session.startExecution();
      render();
    } catch (e) {
      $("#conflicts").prepend(el("li", `Run refused: ${(e as Error).message}`, { "data-reason": "run" }));
    }
  });
  $("#cancel").addEventListener("click", () => {
    if (currentRun) void session.cancelExecution(currentRun);
  });
  $("#drop").addEventListener("click", () => {
    const button = $("#drop");
    if (session.stream.status === "offline") {
      session.stream.restore();
      button.textContent = "Drop stream";
    } else {
      session.stream.drop();
      button.textContent = "Restore stream";
    }
  });
  render();
}

main().catch((e: unknown) => {
  $("#status").textContent = `error: ${(e as Error).message}`;
  $("#status").dataset.status = "closed";
  console.error(e);
});
