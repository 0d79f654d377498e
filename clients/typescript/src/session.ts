// FlowSession: one flow kept in sync, ops sent with their results as promises, executions,
// logs and presence. Mirrors the Rust client's FlowSession (docs/decisions.md "Client").

import { Canvas, CanvasMismatch, type CanvasState } from "./canvas.js";
import { Emitter, type Logger } from "./emitter.js";
import { ClosedError, ConflictError, HttpError, OpTimeoutError } from "./errors.js";
import type { FlowsyncClient } from "./http.js";
import type {
  Actor,
  Change,
  Conflict,
  EventOf,
  Execution,
  ExecutionStatus,
  ExecutionUpdate,
  FlowEvent,
  Json,
  LogStream,
  NodeStatus,
  Op,
  OpInput,
  Presence,
  SyncCanvas,
} from "./protocol.js";
import { EventStream, type StreamOptions, type StreamStatus } from "./stream.js";

export interface SessionOptions extends StreamOptions {
  /** This client's id, echoed in `SYNC_CANVAS` and `CONFLICT` (default: a random one). */
  clientId?: string;
  /** How long an op waits for its result before it is sent again, same op id (default 10 s). */
  opTimeoutMs?: number;
  /** Sends of an op before it fails with {@link OpTimeoutError} (default 3). */
  opAttempts?: number;
  /** How long a `SYNC_CANVAS` ahead of its predecessor waits before `/history` fills the gap (default 250 ms). */
  gapWaitMs?: number;
  /** At most one presence update per this many ms; the latest state wins (default 100). */
  presenceThrottleMs?: number;
  /** Executions kept in {@link FlowSession.executions}: past it the oldest finished ones go (default 100). */
  maxRuns?: number;
  /** Gives up opening (the stream keeps trying while the server is unreachable). */
  signal?: AbortSignal;
  /** Where recoveries (reloads, failed presence updates) are reported; default `console`. */
  logger?: Logger;
}

/** An op's result when it applied. */
export interface Applied {
  opId: string;
  /** The flow version this op produced. */
  version: number;
}

/** One node's part of an execution, as far as this session knows it. */
export interface NodeRunState {
  readonly status: NodeStatus;
  readonly output?: Json;
  readonly error?: string;
  readonly progress?: number;
  /**
   * The node's streamed text: whole, however late the session joined — what the server stored
   * (a chunk is stored before it is published), then the live `LOG_STREAM` chunks past it.
   */
  readonly log: string;
  /** Chunks in `log`: the index the next chunk must have. */
  readonly chunks: number;
}

export interface ExecutionState {
  readonly id: string;
  readonly status: ExecutionStatus;
  readonly error?: string;
  readonly nodes: Readonly<Record<string, NodeRunState>>;
}

/** A connection of the flow and its ephemeral state. */
export interface PresenceState {
  readonly connectionId: string;
  readonly actor: Actor;
  readonly state?: Json;
  /** This session's own connection. */
  readonly self: boolean;
}

export interface LogChunk {
  executionId: string;
  nodeId: string;
  chunk: string;
  /** The node's text so far. */
  text: string;
  done: boolean;
}

export interface SessionEvents extends Record<string, unknown> {
  /**
   * The canvas after it changed (applied ops, gap fills, reloads): once the session has
   * taken in every event it had received, so a burst (a resume's replay) is one emission.
   */
  canvas: CanvasState;
  /** Every event, after it took effect. */
  event: FlowEvent;
  /**
   * Each op as the canvas takes it in: in version order, each once, whether it came live,
   * held until its predecessor came, or from `/history` filling a gap. What a view that
   * follows one field keystroke by keystroke (a text editor) reads.
   */
  change: ChangeOf;
  /**
   * The canvas was replaced by a fresh copy from the server (a gap it could not fill, a
   * `RESYNC`, a change that did not fit): what happened since the last `change` is not told
   * op by op.
   */
  reload: CanvasState;
  /** Every refused op (anyone's). */
  conflict: Conflict;
  /** An execution after each change. */
  execution: ExecutionState;
  log: LogChunk;
  presence: readonly PresenceState[];
  status: StreamStatus;
  /** The session ended: why. */
  closed: string;
}

/** An op the canvas took in (the `change` event). */
export interface ChangeOf {
  readonly opId: string;
  /** The flow version it made. */
  readonly version: number;
  readonly changes: readonly Change[];
}

interface PendingOp {
  op: Op;
  /** The op ids of the request it was sent in, in order (a refusal makes the rest `skipped`). */
  request: readonly string[];
  resolve(applied: Applied): void;
  reject(error: Error): void;
  sends: number;
  timer?: ReturnType<typeof setTimeout>;
}

const TERMINAL_NODE: readonly NodeStatus[] = ["succeeded", "failed", "skipped", "cancelled"];
const TERMINAL_RUN: readonly ExecutionStatus[] = ["succeeded", "failed", "cancelled"];

/** `SYNC_CANVAS` events buffered ahead of a missing one before the session reloads instead. */
const MAX_EARLY = 1000;
/** Events of one run held while it is read, at most (then it is read once more). */
const MAX_HELD = 10_000;

/** An event of a run being read, applied after the read. */
type Held = { chunk: LogStream } | { update: ExecutionUpdate };

/** A fresh op id. */
export function newOpId(): string {
  return `op-${randomHex(16)}`;
}

/** `bytes` random bytes as hex (`crypto.randomUUID` exists only in secure contexts). */
function randomHex(bytes: number): string {
  const buf = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(buf, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One flow kept in sync with the server.
 *
 * It subscribes first and loads second, so nothing falls between the two; applies
 * `SYNC_CANVAS` in version order (an event ahead of its predecessor waits `gapWaitMs`, then
 * `/history` fills the gap); reloads on `RESYNC`; and matches every op's result to its
 * promise by op id.
 */
export class FlowSession {
  private readonly emitter: Emitter<SessionEvents>;
  private readonly log: Logger;
  private readonly options: Required<Omit<SessionOptions, keyof StreamOptions | "signal" | "logger">>;
  private canvasCopy: Canvas | undefined;
  private readonly pending = new Map<string, PendingOp>();
  /** `SYNC_CANVAS` events that came before their predecessor, by `prev_version`. */
  private readonly early = new Map<number, SyncCanvas>();
  private gapTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly runs = new Map<string, ExecutionState>();
  /** Runs being read: their events meanwhile, in order. */
  private readonly held = new Map<string, Held[]>();
  /** Runs whose held events overflowed: read again after the read under way. */
  private readonly readAgain = new Set<string>();
  private readonly people = new Map<string, PresenceState>();
  private connection: string | undefined;
  private chain: Promise<void> = Promise.resolve();
  /** Tasks queued on `chain` and not finished. */
  private queued = 0;
  /** The canvas changed since the last `canvas` emission. */
  private canvasChanged = false;
  private closedWhy: string | undefined;
  private presenceState: { value: Json; timer?: ReturnType<typeof setTimeout>; last: number } | undefined;
  private started: { resolve(): void; reject(e: Error): void } | undefined;
  /** The stream underneath: `drop()` / `restore()` it to try a network loss. */
  readonly stream: EventStream;

  private constructor(
    readonly client: FlowsyncClient,
    readonly flowId: string,
    options: SessionOptions,
    ready: { resolve(): void; reject(e: Error): void },
  ) {
    this.log = options.logger ?? console;
    this.emitter = new Emitter(this.log);
    this.options = {
      clientId: options.clientId ?? `ts-${randomHex(6)}`,
      opTimeoutMs: options.opTimeoutMs ?? 10_000,
      opAttempts: options.opAttempts ?? 3,
      gapWaitMs: options.gapWaitMs ?? 250,
      presenceThrottleMs: options.presenceThrottleMs ?? 100,
      maxRuns: options.maxRuns ?? 100,
    };
    this.started = ready;
    this.stream = new EventStream(
      client,
      flowId,
      {
        event: (event) => this.serially(() => this.handle(event)),
        fatal: (error) => this.serially(() => this.close(`${error.code}: ${error.message}`, error)),
        status: (status) => this.emitter.emit("status", status),
      },
      options,
    );
  }

  /** Subscribes to the flow, loads it, and keeps it in sync until {@link close}. */
  static open(client: FlowsyncClient, flowId: string, options: SessionOptions = {}): Promise<FlowSession> {
    return new Promise((resolve, reject) => {
      const { signal } = options;
      const abort = () => session.close(`opening aborted: ${String(signal?.reason)}`);
      const session: FlowSession = new FlowSession(client, flowId, options, {
        resolve: () => {
          signal?.removeEventListener("abort", abort);
          resolve(session);
        },
        reject,
      });
      if (signal?.aborted) abort();
      else signal?.addEventListener("abort", abort, { once: true });
    });
  }

  get clientId(): string {
    return this.options.clientId;
  }

  /** The canvas as this session knows it now. */
  get canvas(): CanvasState {
    return this.copy().state();
  }

  get version(): number {
    return this.copy().version;
  }

  /** A string field of a node (`path` a JSON pointer into its `data`), if both exist. */
  text(nodeId: string, path: string): string | undefined {
    return this.copy().text(nodeId, path);
  }

  /** This session's connection (from its stream's `READY`). */
  get connectionId(): string | undefined {
    return this.connection;
  }

  get executions(): ReadonlyMap<string, ExecutionState> {
    return this.runs;
  }

  /** Who is connected, oldest first. */
  get presence(): readonly PresenceState[] {
    return [...this.people.values()];
  }

  get closed(): string | undefined {
    return this.closedWhy;
  }

  /** Listens; returns the function that stops listening. */
  on<K extends keyof SessionEvents>(type: K, listener: (value: SessionEvents[K]) => void): () => void {
    return this.emitter.on(type, listener);
  }

  /**
   * Sends ops as one request: one promise per op, resolved by its `SYNC_CANVAS`, rejected
   * with {@link ConflictError} by its `CONFLICT` (the first refusal makes the rest `skipped`).
   * Ops without a result after `opTimeoutMs`, or after a `RESYNC`, are sent again with the
   * same op ids — an op that applied is never applied twice.
   *
   * The promises are marked handled: a refusal nobody awaits is also a `conflict` event.
   */
  sendOps(inputs: readonly OpInput[]): Promise<Applied>[] {
    const ops = inputs.map((o) => ({ ...o, op_id: o.op_id ?? newOpId() }) as Op);
    const request = ops.map((op) => op.op_id);
    const promises = ops.map(
      (op) =>
        new Promise<Applied>((resolve, reject) => {
          if (this.closedWhy !== undefined) return reject(new ClosedError(this.closedWhy));
          if (this.pending.has(op.op_id)) return reject(new Error(`op ${op.op_id} is already being sent`));
          this.pending.set(op.op_id, { op, request, resolve, reject, sends: 0 });
        }),
    );
    for (const p of promises) p.catch(() => {});
    // Registered before the POST: a result can arrive before the 202.
    const mine = ops.filter((op) => this.pending.get(op.op_id)?.sends === 0);
    if (mine.length) void this.post(mine);
    return promises;
  }

  /** Sends one op; its promise as {@link sendOps} makes it. */
  sendOp(op: OpInput): Promise<Applied> {
    return this.sendOps([op])[0]!;
  }

  /** Starts an execution of the flow as it is now. */
  async startExecution(): Promise<string> {
    const id = await this.client.startExecution(this.flowId);
    if (!this.runs.has(id)) this.putRun({ id, status: "queued", nodes: {} });
    return id;
  }

  cancelExecution(executionId: string): Promise<void> {
    return this.client.cancelExecution(this.flowId, executionId);
  }

  /**
   * Announces this connection's ephemeral state (cursor, selection) to everyone. Throttled:
   * at most one update per `presenceThrottleMs`, the latest state wins.
   */
  setPresence(state: Json): void {
    const p = (this.presenceState ??= { value: state, last: 0 });
    p.value = state;
    if (p.timer !== undefined) return;
    const wait = Math.max(0, p.last + this.options.presenceThrottleMs - Date.now());
    p.timer = setTimeout(() => {
      p.timer = undefined;
      p.last = Date.now();
      if (this.connection === undefined || this.closedWhy !== undefined) return;
      this.client.setPresence(this.flowId, this.connection, p.value).catch((e: unknown) => {
        this.log.warn("flowsync: presence update failed", e);
      });
    }, wait);
  }

  /** Reloads the flow from the server (`GET`); the stream goes on from there. */
  reload(): Promise<void> {
    return this.serially(() => this.reloadNow());
  }

  /** Closes the stream; waiting ops fail with {@link ClosedError}. */
  close(reason = "closed by the client", error?: Error): void {
    if (this.closedWhy !== undefined) return;
    this.closedWhy = reason;
    this.stream.close();
    clearTimeout(this.gapTimer);
    clearTimeout(this.presenceState?.timer);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ClosedError(reason));
    }
    this.pending.clear();
    this.started?.reject(error ?? new ClosedError(reason));
    this.started = undefined;
    this.emitter.emit("closed", reason);
    this.emitter.clear();
  }

  private copy(): Canvas {
    if (!this.canvasCopy) throw new ClosedError(this.closedWhy ?? "not loaded yet");
    return this.canvasCopy;
  }

  /** Runs `task` after every task queued before it: events take effect one at a time, in order. */
  private serially(task: () => Promise<void> | void): Promise<void> {
    this.queued++;
    const run = this.chain.then(task);
    this.chain = run
      .catch((e: unknown) => this.log.error("flowsync: session task failed", e))
      .finally(() => {
        if (--this.queued === 0) this.announceCanvas();
      });
    return run;
  }

  /**
   * Emits `canvas` when it changed and nothing more is queued. Building the view costs one
   * pass over the nodes: done once per burst, and only for listeners.
   */
  private announceCanvas(): void {
    if (!this.canvasChanged || this.closedWhy !== undefined || !this.canvasCopy) return;
    this.canvasChanged = false;
    if (this.emitter.has("canvas")) this.emitter.emit("canvas", this.canvasCopy.state());
  }

  private async post(ops: Op[]): Promise<void> {
    for (const op of ops) this.pending.get(op.op_id)!.sends++;
    try {
      await this.client.postOps(this.flowId, this.options.clientId, ops);
    } catch (e) {
      for (const op of ops) this.settle(op.op_id, (p) => p.reject(e as Error));
      return;
    }
    // Results may have come before the 202.
    const waiting = ops.filter((op) => this.pending.has(op.op_id));
    if (waiting.length === 0) return;
    const timer = setTimeout(() => this.expire(waiting, timer), this.options.opTimeoutMs);
    for (const op of waiting) this.pending.get(op.op_id)!.timer = timer;
  }

  /** `ops` got no result in time: sent again, or failed after the last attempt. */
  private expire(ops: Op[], timer: ReturnType<typeof setTimeout>): void {
    const waiting = ops.filter((op) => this.pending.get(op.op_id)?.timer === timer);
    this.resend(waiting);
  }

  private resend(ops: Op[]): void {
    const again: Op[] = [];
    for (const op of ops) {
      const p = this.pending.get(op.op_id)!;
      clearTimeout(p.timer);
      p.timer = undefined;
      if (p.sends >= this.options.opAttempts) {
        this.settle(op.op_id, (q) => q.reject(new OpTimeoutError(op.op_id, q.sends)));
      } else {
        again.push(op);
      }
    }
    if (again.length) void this.post(again);
  }

  private settle(opId: string, how: (p: PendingOp) => void): void {
    const p = this.pending.get(opId);
    if (!p) return;
    this.pending.delete(opId);
    clearTimeout(p.timer);
    how(p);
  }

  private async handle(event: FlowEvent): Promise<void> {
    if (this.closedWhy !== undefined) return;
    switch (event.type) {
      case "READY":
        await this.ready(event);
        break;
      case "SYNC_CANVAS":
        await this.sync(event.data);
        // An op held until its predecessor comes is resolved when the canvas takes it in
        // (`took`), so a result never comes before the change it made.
        for (const op of event.data.ops) if (op.version <= this.version) this.applied(op.op_id, op.version);
        break;
      case "CONFLICT":
        this.refused(event.data);
        this.emitter.emit("conflict", event.data);
        break;
      case "EXECUTION_UPDATE":
        this.executionUpdate(event.data);
        break;
      case "LOG_STREAM":
        this.logChunk(event.data);
        break;
      case "PRESENCE":
        this.presenceEvent(event.data);
        break;
      case "RESYNC":
        // Results announced in the gap are gone: reload, then send what still waits again.
        await this.reloadNow();
        await this.loadExecutions();
        this.resend([...this.pending.values()].filter((p) => p.timer !== undefined).map((p) => p.op));
        break;
      case "FLOW_DELETED":
        this.emitter.emit("event", event);
        this.close("the flow was deleted");
        return;
    }
    this.emitter.emit("event", event);
  }

  private async ready(event: EventOf<"READY">): Promise<void> {
    this.connection = event.data.connection_id;
    if (!this.canvasCopy) {
      try {
        this.canvasCopy = Canvas.fromFlow(await this.client.flow(this.flowId));
        await this.loadExecutions();
      } catch (e) {
        this.close(e instanceof HttpError ? `${e.code}: ${e.message}` : String(e), e as Error);
        return;
      }
      this.started?.resolve();
      this.started = undefined;
      this.canvasChanged = true;
    } else if (!event.data.resumed) {
      // A stream that could not resume: what happened meanwhile is unknown.
      await this.reloadNow();
      await this.loadExecutions();
    }
    await this.loadPresence();
    if (this.presenceState && this.presenceState.timer === undefined) {
      this.setPresence(this.presenceState.value); // the new connection's state
    }
  }

  /** Applies `sync` when it fits; buffers it when its predecessor is missing. */
  private async sync(sync: SyncCanvas): Promise<void> {
    const fit = this.apply(sync);
    if (fit === "early") {
      this.early.set(sync.prev_version, sync);
      // Far ahead of what history fills in one wait: reload now rather than buffer more.
      if (this.early.size > MAX_EARLY) {
        await this.reloadNow(); // resolves the held ops it covers
        this.early.clear(); // the rest: announced again when sent again
        return;
      }
      this.gapTimer ??= setTimeout(() => this.serially(() => this.fillGap()), this.options.gapWaitMs);
      return;
    }
    if (fit === "mismatch") await this.reloadNow();
    await this.drain();
  }

  private apply(sync: SyncCanvas): "applied" | "early" | "mismatch" {
    const canvas = this.copy();
    if (sync.prev_version > canvas.version) return "early";
    const before = canvas.version;
    try {
      for (const op of sync.ops) this.took(op.op_id, op.version, op.changes);
    } catch (e) {
      if (!(e instanceof CanvasMismatch)) throw e;
      this.log.warn(`flowsync: ${e.message}; reloading`);
      return "mismatch";
    }
    if (canvas.version !== before) this.canvasChanged = true;
    return "applied";
  }

  /** Applies one op to the canvas and tells `change` listeners, unless the canvas has it; then its result. */
  private took(opId: string, version: number, changes: readonly Change[]): void {
    if (this.copy().apply(version, changes) && this.emitter.has("change")) {
      this.emitter.emit("change", { opId, version, changes });
    }
    this.applied(opId, version);
  }

  private applied(opId: string, version: number): void {
    this.settle(opId, (p) => p.resolve({ opId, version }));
  }

  /**
   * An op refused: its promise rejects, and so do the ops after it in its request that still
   * wait (the server skips them; their own `skipped` may be lost in a gap, and sent again
   * without the op before them they would apply unguarded).
   */
  private refused(conflict: Conflict): void {
    const request = this.pending.get(conflict.op_id)?.request ?? [];
    this.settle(conflict.op_id, (p) => p.reject(new ConflictError(conflict)));
    for (const opId of request.slice(request.indexOf(conflict.op_id) + 1)) {
      const skipped: Conflict = {
        op_id: opId,
        client_id: conflict.client_id,
        reason: "skipped",
        message: `after ${conflict.op_id} was refused in the same request`,
        current_version: conflict.current_version,
      };
      this.settle(opId, (p) => p.reject(new ConflictError(skipped)));
    }
  }

  /** Applies every buffered event that now fits. */
  private async drain(): Promise<void> {
    for (;;) {
      const next = [...this.early.keys()].sort((a, b) => a - b)[0];
      if (next === undefined || next > this.copy().version) break;
      const sync = this.early.get(next)!;
      this.early.delete(next);
      if (this.apply(sync) === "mismatch") await this.reloadNow();
    }
    if (this.early.size === 0) {
      clearTimeout(this.gapTimer);
      this.gapTimer = undefined;
    }
  }

  /** The predecessor did not come: reads the missing versions from `/history`. */
  private async fillGap(): Promise<void> {
    this.gapTimer = undefined;
    if (this.closedWhy !== undefined || this.early.size === 0) return;
    const want = Math.min(...this.early.keys());
    const canvas = this.copy();
    try {
      while (canvas.version < want) {
        const before = canvas.version;
        for (const entry of await this.client.history(this.flowId, before, 500)) {
          if (entry.version !== canvas.version + 1) break;
          this.took(entry.op_id, entry.version, entry.changes);
        }
        if (canvas.version === before) break; // no progress: reload below
        this.canvasChanged = true;
      }
    } catch (e) {
      if (!(e instanceof CanvasMismatch) && !(e instanceof HttpError)) throw e;
      this.log.warn("flowsync: filling a gap from history failed", e);
    }
    if (canvas.version < want) await this.reloadNow();
    await this.drain();
  }

  private async reloadNow(): Promise<void> {
    let fresh: Canvas;
    try {
      fresh = Canvas.fromFlow(await this.client.flow(this.flowId));
    } catch (e) {
      if (e instanceof HttpError && e.status === 404) return this.close("the flow was deleted", e);
      this.log.warn("flowsync: reload failed", e);
      return;
    }
    if (this.canvasCopy && fresh.version < this.canvasCopy.version) return;
    this.canvasCopy = fresh;
    for (const [prev, sync] of this.early) {
      if (sync.version > fresh.version) continue;
      this.early.delete(prev);
      for (const op of sync.ops) this.applied(op.op_id, op.version);
    }
    this.canvasChanged = true;
    this.emitter.emit("reload", fresh.state());
    await this.drain();
  }

  // ---- executions ----

  /** The flow's executions as the server has them: on open, and after a gap in the stream. */
  private async loadExecutions(): Promise<void> {
    let list: Execution[];
    try {
      list = await this.client.executions(this.flowId);
    } catch (e) {
      this.log.warn("flowsync: loading executions failed", e);
      return;
    }
    for (const run of list.slice(0, 20).reverse()) {
      this.putRun(fromServer(run, this.runs.get(run.id)));
    }
  }

  private putRun(run: ExecutionState): void {
    this.runs.set(run.id, run);
    // A long session sees many runs: the oldest finished ones go (running ones stay).
    for (const [id, old] of this.runs) {
      if (this.runs.size <= this.options.maxRuns) break;
      if (id !== run.id && TERMINAL_RUN.includes(old.status)) this.runs.delete(id);
    }
    this.emitter.emit("execution", run);
  }

  private run(id: string): ExecutionState {
    return this.runs.get(id) ?? { id, status: "queued", nodes: {} };
  }

  private executionUpdate(u: ExecutionUpdate): void {
    if (this.hold(u.execution_id, { update: u })) return;
    // A node of a run this session has not seen start (it was not among the runs loaded,
    // or their load failed): what it streamed so far is on the server.
    const unknown = !this.runs.has(u.execution_id) && u.node_id !== undefined;
    const run = this.run(u.execution_id);
    let nodes = run.nodes;
    if (u.node_id !== undefined) {
      const node = nodes[u.node_id] ?? emptyNode();
      const next: NodeRunState = {
        ...node,
        status: later(node.status, u.node_status),
        output: u.output ?? node.output,
        error: u.error ?? node.error,
        progress: u.progress ?? node.progress,
      };
      nodes = { ...nodes, [u.node_id]: next };
      // A large output comes by reference (a preview and its size): read it whole.
      if (u.output_bytes !== undefined) this.readRun(run.id);
    }
    const error = u.node_id === undefined ? (u.error ?? run.error) : run.error;
    this.putRun({ ...run, status: laterRun(run.status, u.status), error, nodes });
    if (unknown) this.readRun(run.id);
  }

  /** `afterRead`: the run was just read, so chunks missing before this one are lost for good. */
  private logChunk(l: LogStream, afterRead = false): void {
    if (this.hold(l.execution_id, { chunk: l })) return;
    const run = this.run(l.execution_id);
    const node = run.nodes[l.node_id] ?? emptyNode();
    if (l.index < node.chunks) return; // already in the text
    if (l.index > node.chunks && afterRead) {
      // The server did not store them (it was down as they streamed): show what comes.
      this.log.warn(`flowsync: chunks ${node.chunks}..${l.index} of node ${l.node_id} are lost`);
    } else if (l.index > node.chunks) {
      // The chunks before it are not here (the session joined mid-run, or the stream had a
      // gap). The server stored them before this one was published, so a read made now holds
      // them; this chunk and what follows wait for it.
      this.hold(l.execution_id, { chunk: l }, true);
      return;
    }
    const next: NodeRunState = {
      ...node,
      status: node.status === "pending" ? "running" : node.status,
      log: node.log + l.chunk,
      chunks: l.index + 1,
    };
    this.putRun({ ...run, nodes: { ...run.nodes, [l.node_id]: next } });
    this.emitter.emit("log", { executionId: l.execution_id, nodeId: l.node_id, chunk: l.chunk, text: next.log, done: l.done });
  }

  /**
   * Holds an event of a run being read (or, with `read`, starts reading it): it is applied
   * once the read is in, after it. False when the run is not being read.
   */
  private hold(id: string, event: Held, read = false): boolean {
    if (!this.held.has(id)) {
      if (!read) return false;
      this.readRun(id);
    }
    const held = this.held.get(id)!;
    // Bounded: past it, what is held is dropped and the run read once more after this read.
    if (held.length >= MAX_HELD) {
      held.length = 0;
      this.readAgain.add(id);
    }
    held.push(event);
    return true;
  }

  /**
   * Reads a run whole; its events meanwhile are held and applied after the read. A read asked
   * for while one is under way follows it (the first may have been served too early).
   */
  private readRun(id: string): void {
    if (this.closedWhy !== undefined) return;
    if (this.held.has(id)) {
      this.readAgain.add(id);
      return;
    }
    this.held.set(id, []);
    void this.client.execution(this.flowId, id).then(
      (run) => this.serially(() => this.readIn(id, run)),
      (e: unknown) => {
        // Held a second, then applied (a gap among them reads again): no busy retry loop.
        this.log.warn("flowsync: reading an execution failed", e);
        setTimeout(() => void this.serially(() => this.readIn(id, undefined)), 1000);
      },
    );
  }

  private readIn(id: string, run: Execution | undefined): void {
    const held = this.held.get(id) ?? [];
    this.held.delete(id);
    if (this.closedWhy !== undefined) return;
    if (run) this.putRun(fromServer(run, this.runs.get(id)));
    if (this.readAgain.delete(id)) {
      this.readRun(id);
      this.held.get(id)!.push(...held); // applied after that read, which holds what was dropped
      return;
    }
    for (const event of held) {
      if ("chunk" in event) this.logChunk(event.chunk, run !== undefined);
      else this.executionUpdate(event.update);
    }
  }

  // ---- presence ----

  private async loadPresence(): Promise<void> {
    let list;
    try {
      list = await this.client.presence(this.flowId);
    } catch (e) {
      this.log.warn("flowsync: loading presence failed", e);
      return;
    }
    const states = new Map([...this.people].map(([id, p]) => [id, p.state]));
    this.people.clear();
    for (const entry of list) {
      this.people.set(entry.connection_id, {
        connectionId: entry.connection_id,
        actor: entry.actor,
        state: states.get(entry.connection_id),
        self: entry.connection_id === this.connection,
      });
    }
    this.emitter.emit("presence", this.presence);
  }

  private presenceEvent(p: Presence): void {
    if (p.action === "leave") {
      this.people.delete(p.connection_id);
    } else {
      const before = this.people.get(p.connection_id);
      this.people.set(p.connection_id, {
        connectionId: p.connection_id,
        actor: p.actor,
        state: p.action === "update" ? p.state : before?.state,
        self: p.connection_id === this.connection,
      });
      // States are not kept by the server: someone who just joined learns ours from us.
      if (p.action === "join" && p.connection_id !== this.connection && this.presenceState) {
        this.setPresence(this.presenceState.value);
      }
    }
    this.emitter.emit("presence", this.presence);
  }
}

function emptyNode(): NodeRunState {
  return { status: "pending", log: "", chunks: 0 };
}

/** A node's status after an update: never back from an end to a start (an older update). */
function later(now: NodeStatus, update: NodeStatus | undefined): NodeStatus {
  if (update === undefined) return now;
  return TERMINAL_NODE.includes(now) && !TERMINAL_NODE.includes(update) ? now : update;
}

function laterRun(now: ExecutionStatus, update: ExecutionStatus | undefined): ExecutionStatus {
  if (update === undefined) return now;
  return TERMINAL_RUN.includes(now) && !TERMINAL_RUN.includes(update) ? now : update;
}

/**
 * An execution as the server has it, merged with what the session knew: per node the longer
 * text (the server's stored text and its `log_index`, or the live chunks past it), and the
 * server's status unless the session already saw the node or run end.
 */
function fromServer(run: Execution, known: ExecutionState | undefined): ExecutionState {
  const nodes: Record<string, NodeRunState> = {};
  for (const n of run.nodes) {
    const live = known?.nodes[n.node_id];
    const stored = n.log_index ?? 0;
    const mine = live !== undefined && live.chunks > stored;
    nodes[n.node_id] = {
      status: live ? later(live.status, n.status) : n.status,
      output: n.output ?? live?.output,
      error: n.error ?? live?.error,
      progress: live?.progress,
      log: mine ? live.log : n.log,
      chunks: mine ? live.chunks : stored,
    };
  }
  const status = known ? laterRun(known.status, run.status) : run.status;
  return { id: run.id, status, error: run.error ?? known?.error, nodes };
}
