// One open flow as the editor sees it: the SDK's signals, plus what this page adds — its
// selection, the run it follows, conflicts by node, the fields being typed into — and every
// action as ops.

import { DestroyRef, Injectable, computed, inject, signal } from '@angular/core';
import {
  type CanvasState,
  type ChangeOf,
  ClosedError,
  ConflictError,
  HttpError,
  type Conflict,
  type ExecutionState,
  type JsonObject,
  type Node,
  type OpInput,
  type Position,
  newOpId,
} from '@flowsync/client';
import { FlowsyncService, type FlowConnection } from '@flowsync/client/angular';
import { Subject } from 'rxjs';

import { TextField, editOp } from './text-field';

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
  /** The text fields typed into, by node id, then path. */
  private readonly fields = new Map<string, Map<string, TextField>>();
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
    conn.events$.subscribe((e) => {
      if (e.type === 'RESYNC') this.resyncs.update((n) => n + 1);
    });
    conn.conflicts$.subscribe((c) => this.conflict(c));
    conn.changes$.subscribe((c) => this.change(c));
    conn.reloads$.subscribe((c) => this.reloaded(c));
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

  /**
   * Moves a node. Without a base version: the last move wins. (A node's version moves with
   * every change of it, a keystroke in its prompt too, so a guarded move would be refused
   * whenever someone types in the node being dragged.)
   */
  move(node: Node, position: Position): void {
    if (node.position.x === position.x && node.position.y === position.y) return;
    this.send([{ type: 'node.move', id: node.id, position }]);
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

  /** The field of `node` at `path`, made on first use from the session's text. */
  field(node: Node, path: string): TextField {
    let ofNode = this.fields.get(node.id);
    if (!ofNode) this.fields.set(node.id, (ofNode = new Map()));
    let field = ofNode.get(path);
    if (!field) {
      // The session's canvas, which the change feed continues (the canvas signal may lag a burst).
      const now = this.sessionNode(node.id) ?? node;
      field = new TextField(textAt(now, path) ?? '', now.version);
      ofNode.set(path, field);
    }
    return field;
  }

  /** The person typed into `node`'s field: sends the edit unless a batch is in flight. */
  typed(node: Node, path: string, text: string): void {
    this.field(node, path).typed(text);
    this.flush(node.id, path);
  }

  private sessionNode(id: string): Node | undefined {
    return this.conn()?.session.canvas.nodes.find((n) => n.id === id);
  }

  /** Sends what was typed into a field: one batch in flight at a time, the first op guarded. */
  private flush(id: string, path: string): void {
    const field = this.fields.get(id)?.get(path);
    const node = this.sessionNode(id);
    const batch = node && field?.next(textOpId);
    if (!field || !batch) return;
    // A field the node does not have yet is made by its first text, guarded like the rest.
    const create = textAt(node, path) === undefined;
    const ops = batch.edits.map(({ opId, edit }, i): OpInput => {
      const base = i === 0 ? batch.baseVersion : undefined;
      const op: OpInput =
        i === 0 && create && 'ins' in edit
          ? { type: 'node.update', id, patch: { [path.slice(1)]: edit.ins }, base_version: base }
          : editOp(id, path, edit, base);
      return { ...op, op_id: opId };
    });
    this.sendBatch(field, id, path, ops, batch.baseVersion, 0);
  }

  /**
   * Sends a batch and takes in its results. A batch whose fate is unknown (the network, a
   * server error) is sent again as it was, same op ids, so it applies once; a refused one is
   * made anew once the field has seen what came first; one that cannot land is dropped.
   */
  private sendBatch(field: TextField, id: string, path: string, ops: OpInput[], base: number, attempt: number): void {
    let unknown = false;
    const results = this.connection.sendOps(ops).map((result, i) =>
      result.then(
        () => field.resultApplied(ops[i]!.op_id!),
        (e: unknown) => {
          if (e instanceof ConflictError) {
            if (RETRIED.includes(e.reason)) return;
            field.dropPending(); // the node is gone, the text too long, …: it cannot land
            this.fieldChanged.next();
          } else if (e instanceof HttpError && DROPPED_STATUS.includes(e.status)) {
            field.dropPending();
            this.fieldChanged.next();
          } else if (!(e instanceof ClosedError)) {
            unknown = true; // the network, the server, a token to renew: sent again as it was
          }
          this.failed(e);
        },
      ),
    );
    void Promise.all(results).then(() => {
      if (this.conn()?.session.closed !== undefined) return;
      if (unknown) {
        const wait = Math.min(5000, 250 * 2 ** attempt);
        setTimeout(() => this.sendBatch(field, id, path, ops, base, attempt + 1), wait);
        return;
      }
      const node = this.sessionNode(id);
      field.settled(node ? (textAt(node, path) ?? '') : field.server, node?.version ?? field.version);
      // Refused before this page saw the change that came first: sent again when it comes.
      if (field.version > base || !field.pending) this.flush(id, path);
      else setTimeout(() => this.flush(id, path), 1000); // in case that change never comes
      this.fieldChanged.next();
    });
  }

  /** The server's changes to the fields, op by op in version order (the session's change feed). */
  private change(c: ChangeOf): void {
    let moved = false;
    const touched = new Set<string>();
    for (const change of c.changes) {
      if (change.kind === 'node.splice') {
        touched.add(change.id);
        const field = this.fields.get(change.id)?.get(change.path);
        if (!field) continue;
        const splice = { at: change.at, del: change.delete, ins: change.insert };
        if (field.isMine(c.opId)) field.mine(c.opId, splice, c.version);
        else field.theirs(splice, c.version);
        moved = true;
      } else if (change.kind === 'node.upsert') {
        touched.add(change.node.id);
        for (const [path, field] of this.fields.get(change.node.id) ?? []) {
          const text = textAt(change.node, path) ?? '';
          if (field.isMine(c.opId)) field.mine(c.opId, text, c.version);
          else field.serverIs(text, c.version);
          moved = true;
        }
      } else if (change.kind === 'node.delete') {
        this.fields.delete(change.id);
      }
    }
    // The node's other fields: its version moved on.
    for (const id of touched) {
      for (const [path, field] of this.fields.get(id) ?? []) {
        if (field.version < c.version) field.nodeChanged(c.version);
        if (field.pending && !field.busy) this.flush(id, path);
      }
    }
    if (moved) this.fieldChanged.next();
  }

  /** The canvas was reloaded: each field takes in its text (after its batch in flight, if any). */
  private reloaded(canvas: CanvasState): void {
    for (const [id, ofNode] of [...this.fields]) {
      const node = canvas.nodes.find((n) => n.id === id);
      if (!node) {
        this.fields.delete(id);
        continue;
      }
      for (const [path, field] of ofNode) field.reloaded(textAt(node, path) ?? '', node.version);
    }
    this.fieldChanged.next();
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
/** HTTP answers that say the batch cannot land as it is (any other: sent again as it was, later). */
const DROPPED_STATUS: readonly number[] = [400, 404, 413, 422];
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
