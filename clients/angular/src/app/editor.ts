// One open flow as the editor sees it: the SDK's signals, plus what this page adds — its
// selection, the run it follows, conflicts by node, the fields being typed into — and every
// action as ops.

import { DestroyRef, Injectable, computed, inject, signal } from '@angular/core';
import {
  ConflictError,
  type Conflict,
  type ExecutionState,
  type FlowEvent,
  type JsonObject,
  type Node,
  type OpInput,
  type Position,
  newOpId,
} from '@flowsync/client';
import { FlowsyncService, type FlowConnection } from '@flowsync/client/angular';
import { Subject } from 'rxjs';

import { TextField, replaceOp } from './text-field';

/** The node kinds of the palette: the runner's, and `note` for the canvas only. */
export const KINDS = {
  template: { label: 'Template', field: 'template', initial: 'Hello' },
  llm: { label: 'LLM', field: 'prompt', initial: '' },
  delay: { label: 'Delay', field: undefined, initial: '' },
  http: { label: 'HTTP', field: 'url', initial: 'https://example.com' },
  note: { label: 'Note', field: 'text', initial: '' },
} as const;
export type Kind = keyof typeof KINDS;

/** The text field a kind edits (`/prompt`, …), if any. */
export function textPath(kind: string): string | undefined {
  const field = (KINDS as Record<string, { field: string | undefined }>)[kind]?.field;
  return field && `/${field}`;
}

/** What this page tells the others about itself (PRESENCE `state`). */
export interface Presence {
  name: string;
  cursor?: Position;
  selected?: string;
}

/** A conflict shown on the node it concerns, for a while. */
export interface Shown {
  readonly conflict: Conflict;
  readonly at: number;
}

const CONFLICT_SHOWN_MS = 6000;

@Injectable()
export class Editor {
  private readonly flowsync = inject(FlowsyncService);
  private readonly conn = signal<FlowConnection | undefined>(undefined);
  private readonly fields = new Map<string, TextField>();
  /**
   * A field's text changed under the page (someone else's edit, a reload): called at once,
   * so a view shows it before the next keystroke is read against it.
   */
  readonly fieldChanged = new Subject<void>();

  readonly me = signal<Presence>({ name: 'guest' });
  readonly error = signal<string | undefined>(undefined);
  readonly selected = signal<string | undefined>(undefined);
  readonly conflicts = signal<readonly Shown[]>([]);
  /** The run shown: the latest started by anyone. */
  readonly runId = signal<string | undefined>(undefined);

  readonly canvas = computed(() => this.conn()?.canvas());
  readonly presence = computed(() => this.conn()?.presence() ?? []);
  readonly status = computed(() => {
    const s = this.conn()?.status();
    return s === 'open' ? 'live' : s === 'offline' ? 'resuming' : s === 'closed' ? 'closed' : 'connecting';
  });
  readonly resyncs = signal(0);
  readonly run = computed<ExecutionState | undefined>(() => {
    const id = this.runId();
    return id === undefined ? undefined : this.conn()?.executions().get(id);
  });
  readonly selectedNode = computed(() => this.canvas()?.nodes.find((n) => n.id === this.selected()));
  /** Conflicts by the node they concern. */
  readonly conflictsByNode = computed(() => {
    const by = new Map<string, Conflict>();
    for (const { conflict } of this.conflicts()) {
      if (conflict.entity?.kind === 'node') by.set(conflict.entity.id, conflict);
    }
    return by;
  });
  /** Who else has selected each node. */
  readonly selectedBy = computed(() => {
    const by = new Map<string, string[]>();
    for (const p of this.presence()) {
      const state = p.state as Presence | undefined;
      if (p.self || !state?.selected) continue;
      by.set(state.selected, [...(by.get(state.selected) ?? []), state.name ?? p.actor.name]);
    }
    return by;
  });

  constructor() {
    inject(DestroyRef).onDestroy(() => this.conn()?.close());
  }

  async open(flowId: string, name: string): Promise<void> {
    const conn = await this.flowsync.connect(flowId);
    this.me.set({ name });
    conn.setPresence(asJson(this.me()));
    conn.events$.subscribe((e) => this.event(e));
    conn.conflicts$.subscribe((c) => this.conflict(c));
    conn.canvas$.subscribe(() => this.reconcile());
    // The run shown is the newest (a page opened mid-run shows that run), and the next one
    // anybody starts. The session keeps runs in the order it learnt of them.
    let newest: string | undefined;
    conn.executions$.subscribe((all) => {
      const last = [...all.keys()].pop();
      if (last !== newest || !all.has(this.runId() ?? '')) this.runId.set(last);
      newest = last;
    });
    this.conn.set(conn);
  }

  private get connection(): FlowConnection {
    const c = this.conn();
    if (!c) throw new Error('not connected');
    return c;
  }

  /** Sends ops; a refusal shows as a conflict (everyone's conflicts come over the stream). */
  private send(ops: OpInput[]): void {
    for (const p of this.connection.sendOps(ops)) p.catch((e: unknown) => this.failed(e));
  }

  /** A failure shown in the banner (a refusal shows on its node instead). */
  private failed(e: unknown): void {
    if (e instanceof Error && !(e instanceof ConflictError)) this.error.set(e.message);
  }

  addNode(kind: Kind, position: Position): string {
    const id = `${kind}-${shortId()}`;
    const spec = KINDS[kind];
    const data: Record<string, string | number> = spec.field ? { [spec.field]: spec.initial } : { ms: 1000 };
    data['title'] = `${spec.label}`;
    this.send([{ type: 'node.add', node: { id, type: kind, position, data } }]);
    this.select(id);
    return id;
  }

  update(id: string, patch: Record<string, number | string>): void {
    this.send([{ type: 'node.update', id, patch }]);
  }

  /** Moves a node; with `baseVersion`, refused (a conflict on the node) if someone changed it since. */
  move(node: Node, position: Position, baseVersion?: number): void {
    if (node.position.x === position.x && node.position.y === position.y) return;
    this.send([{ type: 'node.move', id: node.id, position, base_version: baseVersion }]);
  }

  connect(source: string, target: string): void {
    if (source === target) return;
    const exists = this.canvas()?.edges.some((e) => e.source === source && e.target === target);
    if (exists) return;
    this.send([{ type: 'edge.add', edge: { id: `e-${shortId()}`, source, target } }]);
  }

  deleteSelected(): void {
    const id = this.selected();
    if (!id) return;
    if (this.canvas()?.nodes.some((n) => n.id === id)) this.send([{ type: 'node.delete', id }]);
    else if (this.canvas()?.edges.some((e) => e.id === id)) this.send([{ type: 'edge.delete', id }]);
    this.select(undefined);
  }

  undo(): void {
    this.send([{ type: 'undo' }]);
  }

  redo(): void {
    this.send([{ type: 'redo' }]);
  }

  async start(): Promise<void> {
    try {
      this.runId.set(await this.connection.startExecution());
    } catch (e) {
      this.failed(e);
    }
  }

  async cancel(): Promise<void> {
    const id = this.runId();
    if (id === undefined) return;
    try {
      await this.connection.cancelExecution(id);
    } catch (e) {
      this.failed(e);
    }
  }

  select(id: string | undefined): void {
    this.selected.set(id);
    this.share({ selected: id });
  }

  pointer(cursor: Position): void {
    this.share({ cursor });
  }

  private share(change: Partial<Presence>): void {
    this.me.update((m) => ({ ...m, ...change }));
    this.conn()?.setPresence(asJson(this.me()));
  }

  // --- Text fields ---------------------------------------------------------------------

  /** The field of `node` at `path`, made on first use from the canvas's text. */
  field(node: Node, path: string): TextField {
    const key = `${node.id}\u0000${path}`;
    let field = this.fields.get(key);
    if (!field) {
      // From the session's canvas, which the field's events continue (the signal may lag a burst).
      field = new TextField(this.conn()?.session.text(node.id, path) ?? textAt(node, path) ?? '');
      this.fields.set(key, field);
    }
    return field;
  }

  /** The person typed into `node`'s field: sends the edit unless one is in flight. */
  typed(node: Node, path: string, text: string): void {
    this.field(node, path).typed(text);
    this.flush(node.id, path);
  }

  /** Sends what was typed into a field, one batch in flight at a time. */
  private flush(id: string, path: string): void {
    const field = this.fields.get(`${id}\u0000${path}`);
    // The session's own canvas: the version its events have reached, like the field's text.
    const node = this.conn()?.session.canvas.nodes.find((n) => n.id === id);
    if (!field || !node) return;
    const batch = field.next(textOpId);
    if (batch.length === 0) return;
    const ops = batch.map(({ opId, splice }, i) => ({
      ...replaceOp(id, path, splice, i === 0 ? node.version : undefined),
      op_id: opId,
    }));
    const results = this.connection.sendOps(ops).map((result, i) =>
      result.then(
        () => field.applied(batch[i]!.opId),
        (e: unknown) => {
          const again = e instanceof ConflictError && RETRIED.includes(e.reason);
          field.refused(batch[i]!.opId, again);
          if (!again) {
            this.failed(e);
            this.fieldChanged.next();
          }
        },
      ),
    );
    void Promise.all(results).then(() => this.flush(id, path));
  }

  /** Takes in the server's changes to fields in order, each op as mine or theirs. */
  private event(e: FlowEvent): void {
    if (e.type === 'RESYNC') this.resyncs.update((n) => n + 1);
    if (e.type !== 'SYNC_CANVAS') return;
    let moved = false;
    for (const op of e.data.ops) {
      for (const change of op.changes) {
        if (change.kind !== 'node.splice') continue;
        const field = this.fields.get(`${change.id}\u0000${change.path}`);
        if (!field) continue;
        if (field.isMine(op.op_id)) field.applied(op.op_id);
        else field.theirs({ at: change.at, del: change.delete, ins: change.insert });
        moved = true;
      }
    }
    if (moved) this.fieldChanged.next();
  }

  /** After a canvas change the events did not spell out (a reload, an undo, a new value): fields follow the canvas. */
  private reconcile(): void {
    const canvas = this.canvas();
    if (!canvas) return;
    let moved = false;
    for (const [key, field] of this.fields) {
      const [id, path] = key.split('\u0000') as [string, string];
      const node = canvas.nodes.find((n) => n.id === id);
      if (!node) {
        this.fields.delete(key);
        continue;
      }
      if (field.serverIs(textAt(node, path) ?? '')) moved = true;
    }
    if (moved) this.fieldChanged.next();
  }

  private conflict(conflict: Conflict): void {
    // A text edit that lost the race is sent again by its page: routine, not shown.
    if (conflict.op_id.startsWith(TEXT_OP) && RETRIED.includes(conflict.reason)) return;
    const now = Date.now();
    this.conflicts.update((all) => [...all.filter((s) => now - s.at < CONFLICT_SHOWN_MS), { conflict, at: now }]);
    setTimeout(() => this.conflicts.update((all) => all.filter((s) => Date.now() - s.at < CONFLICT_SHOWN_MS)), CONFLICT_SHOWN_MS);
  }
}

/**
 * Text edits' op ids start with this, so every page can tell a text edit that lost the
 * race (and is sent again by its page) from a conflict worth showing.
 */
const TEXT_OP = 'txt-';
const RETRIED: readonly string[] = ['version_mismatch', 'skipped'];
const textOpId = () => TEXT_OP + newOpId();

/** This page's presence as JSON (the fields it has). */
function asJson(p: Presence): JsonObject {
  const json: JsonObject = { name: p.name };
  if (p.cursor) json['cursor'] = { x: p.cursor.x, y: p.cursor.y };
  if (p.selected) json['selected'] = p.selected;
  return json;
}

/** A fresh id for a node or an edge: short enough to read, random enough not to collide. */
function shortId(): string {
  return crypto.randomUUID().slice(0, 8);
}

/** The string at `path` (`/prompt`) in a node's data. */
export function textAt(node: Node, path: string): string | undefined {
  const value = node.data[path.slice(1)];
  return typeof value === 'string' ? value : undefined;
}
