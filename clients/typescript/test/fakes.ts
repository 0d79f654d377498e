// Test doubles for what lies outside the SDK in unit tests: an EventSource the test drives,
// and a fetch that answers from an in-memory flow. (The server itself is tested for real in
// server.test.ts and the end-to-end test.)

import type { Change, EventSourceLike, EventType, Execution, Flow, FlowSession, HistoryEntry, Json, Op, SessionEvents } from "../src/index.js";

export class FakeSource implements EventSourceLike {
  readyState = 0;
  onerror: ((event: Event) => unknown) | null = null;
  onopen: ((event: Event) => unknown) | null = null;
  private readonly listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  private lastId = "";

  constructor(readonly url: string) {}

  addEventListener(type: string, listener: (e: MessageEvent) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.readyState = 2;
  }

  get closed(): boolean {
    return this.readyState === 2;
  }

  /** Delivers an event as the gateway frames it (`seq` → `id: ep-<seq>`). */
  send(type: EventType | "PING", data: unknown, seq?: number): void {
    this.deliver(type, frame(type, data, seq), seq);
  }

  /** Delivers an already framed event (`frame`): what a benchmark feeds. */
  deliver(type: EventType | "PING", json: string, seq?: number): void {
    if (seq !== undefined) this.lastId = `ep-${seq}`;
    const event = { data: json, lastEventId: this.lastId } as MessageEvent;
    for (const l of this.listeners.get(type) ?? []) l(event);
  }

  ready(seq = 0, version = 0, resumed = false): void {
    this.readyState = 1;
    this.onopen?.({} as Event);
    this.send("READY", { connection_id: `c${seq}`, epoch: "ep", seq, resumed, version });
  }

  fail(gaveUp: boolean): void {
    this.readyState = gaveUp ? 2 : 0;
    this.onerror?.({} as Event);
  }
}

/** An event's `data:` line as the gateway sends it. */
export function frame(type: EventType | "PING", data: unknown, seq?: number): string {
  const body = type === "PING" ? {} : { type, flow_id: "f", seq, ts: "", actor: { id: "u", kind: "user", name: "u" }, data };
  return JSON.stringify(body);
}

/** Every FakeSource a session made, and a way to wait for the next one. */
export class Sources {
  readonly all: FakeSource[] = [];
  private waiters: ((s: FakeSource) => void)[] = [];
  readonly ctor;

  constructor() {
    const sources = this;
    this.ctor = class extends FakeSource {
      constructor(url: string) {
        super(url);
        sources.all.push(this);
        for (const w of sources.waiters.splice(0)) w(this);
      }
    };
  }

  get last(): FakeSource {
    return this.all.at(-1)!;
  }

  /** The `n`th source (0-based), once it exists. */
  nth(n: number): Promise<FakeSource> {
    if (this.all[n]) return Promise.resolve(this.all[n]);
    return new Promise((resolve) => {
      const check = () => (this.all[n] ? resolve(this.all[n]) : this.waiters.push(check));
      this.waiters.push(check);
    });
  }
}

/** A flow's state, its history and what was posted: answers the SDK's requests. */
export class FakeApi {
  flow: Flow = { id: "f", name: "f", version: 0, nodes: [], edges: [], meta: {}, created_at: "", updated_at: "" };
  history: HistoryEntry[] = [];
  /** Executions served by `GET …/executions/{id}`. */
  readonly executions = new Map<string, Execution>();
  readonly posts: Op[][] = [];
  readonly requests: string[] = [];
  private postWaiters: ((ops: Op[]) => void)[] = [];
  readonly presencePosts: { connection_id: string; state: Json }[] = [];
  private presenceWaiters: ((update: { connection_id: string; state: Json }) => void)[] = [];

  readonly fetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const url = new URL(String(input));
    const method = init?.method ?? "GET";
    this.requests.push(`${method} ${url.pathname}${url.search}`);
    const json = (body: unknown, status = 200) =>
      new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (method === "GET" && url.pathname === "/v1/flows/f") return json(this.flow);
    if (method === "GET" && url.pathname === "/v1/flows/f/history") {
      const after = Number(url.searchParams.get("after"));
      return json(this.history.filter((h) => h.version > after));
    }
    if (method === "GET" && url.pathname.endsWith("/executions")) return json({ executions: [] });
    const execution = url.pathname.match(/^\/v1\/flows\/f\/executions\/([^/]+)$/);
    if (method === "GET" && execution) {
      const found = this.executions.get(execution[1]!);
      if (found) return json(found);
    }
    if (method === "GET" && url.pathname.endsWith("/presence")) return json({ connections: [] });
    if (method === "POST" && url.pathname.endsWith("/presence")) {
      const update = JSON.parse(String(init!.body)) as { connection_id: string; state: Json };
      this.presencePosts.push(update);
      for (const w of this.presenceWaiters.splice(0)) w(update);
      return new Response(null, { status: 202 });
    }
    if (method === "POST" && url.pathname.endsWith("/ops")) {
      const ops = (JSON.parse(String(init!.body)) as { ops: Op[] }).ops;
      this.posts.push(ops);
      for (const w of this.postWaiters.splice(0)) w(ops);
      return new Response(null, { status: 202 });
    }
    return json({ error: { code: "route_not_found", message: "no" } }, 404);
  };

  /** The next presence update posted. */
  nextPresence(): Promise<{ connection_id: string; state: Json }> {
    return new Promise((resolve) => this.presenceWaiters.push(resolve));
  }

  /** The ops of the next POST. */
  nextPost(): Promise<Op[]> {
    return new Promise((resolve) => this.postWaiters.push(resolve));
  }

  /** Records an applied op (history and state) and returns its SYNC_CANVAS data. */
  commit(opId: string, changes: Change[]) {
    const version = this.flow.version + 1;
    this.history.push({ version, op_id: opId, actor: { id: "u", kind: "user", name: "u" }, ts: "", op: { type: "redo", op_id: opId }, changes });
    this.flow = applyToFlow(this.flow, changes, version);
    return { prev_version: version - 1, version, client_id: "other", ops: [{ op_id: opId, type: "node.add", version, changes }] };
  }
}

function applyToFlow(flow: Flow, changes: Change[], version: number): Flow {
  let nodes = [...flow.nodes];
  for (const c of changes) {
    if (c.kind === "node.upsert") nodes = [...nodes.filter((n) => n.id !== c.node.id), c.node];
    if (c.kind === "node.delete") nodes = nodes.filter((n) => n.id !== c.id);
  }
  return { ...flow, nodes, version };
}

export function nodeAt(id: string, x: number, version: number) {
  return { kind: "node.upsert" as const, node: { id, type: "note", position: { x, y: 0 }, data: { text: "" }, version } };
}

/** The session's next `type` event for which `pred` holds. */
export function next<K extends keyof SessionEvents>(
  session: FlowSession,
  type: K,
  pred: (v: SessionEvents[K]) => boolean = () => true,
): Promise<SessionEvents[K]> {
  return new Promise((resolve) => {
    const off = session.on(type, (v) => {
      if (pred(v)) {
        off();
        resolve(v);
      }
    });
  });
}
