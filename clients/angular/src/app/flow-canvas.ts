// The canvas: the flow's nodes and edges in ngx-vflow, kept in step with the server's canvas.
// Node objects keep their identity across updates (their `point` and `data` are signals set
// in place), so a remote change never re-creates a node under someone's pointer.

import {
  ChangeDetectionStrategy,
  Component,
  computed,
  effect,
  inject,
  signal,
  untracked,
  viewChild,
  type WritableSignal,
} from '@angular/core';
import type { Node as FlowNode } from '@flowsync/client';
import {
  type Connection,
  type Edge,
  type EdgeChange,
  type Node,
  type NodeDragEndEvent,
  Vflow,
  VflowComponent,
} from 'ngx-vflow';

import { Editor, textAt, textPath } from './editor';

/** What a node's template shows. */
interface View {
  node: FlowNode;
}

interface CanvasNode {
  id: string;
  type: 'html-template';
  point: WritableSignal<{ x: number; y: number }>;
  data: WritableSignal<View>;
}

/** How long a dropped node waits for the server's position before it follows the server again. */
const DROP_WAIT_MS = 5000;

@Component({
  selector: 'app-flow-canvas',
  imports: [Vflow],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="surface" (pointermove)="pointer($event)" data-testid="canvas">
      <vflow
        #flow
        view="auto"
        [nodes]="nodes()"
        [edges]="edges()"
        (connect)="connect($event)"
        (nodeDragStart)="dragging.set($event.node.id)"
        (nodeDragEnd)="dropped($event)"
        (edgesChanges.select)="selectEdge($event)"
      >
        <ng-template let-ctx nodeHtml>
          @let node = ctx.data().node;
          @let run = editor.run()?.nodes?.[node.id];
          @let conflict = editor.conflictsByNode().get(node.id);
          <div
            class="node"
            [attr.data-testid]="'node-' + node.id"
            [attr.data-status]="run?.status ?? 'idle'"
            [class.selected]="editor.selected() === node.id"
            [class.conflict]="conflict !== undefined"
            (pointerdown)="editor.select(node.id)"
          >
            <handle type="target" position="left" />
            <header>
              <span class="kind">{{ node.type }}</span>
              <span class="title">{{ node.data['title'] ?? node.id }}</span>
              @if (run) {
                <span class="status">{{ run.status }}</span>
              }
            </header>
            @if (preview(node); as text) {
              <p class="field">{{ text }}</p>
            }
            @if (run?.log) {
              <pre class="output" data-testid="output">{{ run!.log }}</pre>
            }
            @if (run?.error) {
              <p class="error">{{ run!.error }}</p>
            }
            @for (who of editor.selectedBy().get(node.id) ?? []; track who) {
              <span class="by">{{ who }}</span>
            }
            @if (conflict) {
              <p class="refused" data-testid="conflict">{{ conflict.reason }}: {{ conflict.message }}</p>
            }
            <handle type="source" position="right" />
          </div>
        </ng-template>
      </vflow>
      @for (p of cursors(); track p.id) {
        <div class="cursor" [style.left.px]="p.x" [style.top.px]="p.y">{{ p.name }}</div>
      }
    </div>
  `,
})
export class FlowCanvas {
  protected readonly editor = inject(Editor);
  /** The node being dragged here: the server's moves of it wait for the drop. */
  protected readonly dragging = signal<string | undefined>(undefined);
  private readonly cache = new Map<string, CanvasNode>();
  /** Nodes dropped here whose move the server has not shown yet: where they were dropped. */
  private readonly dropping = new Map<string, { x: number; y: number }>();

  /** The canvas's nodes as ngx-vflow's: a new array only when nodes come or go. */
  protected readonly nodes = signal<Node[]>([]);

  constructor() {
    // An effect, not a computed: it updates the cached nodes' signals in place.
    effect(() => {
      const [nodes, dragging] = [this.editor.canvas()?.nodes ?? [], this.dragging()];
      untracked(() => this.follow(nodes, dragging));
    });
  }

  private follow(nodes: readonly FlowNode[], dragging: string | undefined): void {
    const seen = new Set<string>();
    let changedSet = false;
    for (const node of nodes) {
      seen.add(node.id);
      const known = this.cache.get(node.id);
      if (!known) {
        changedSet = true;
        this.cache.set(node.id, {
          id: node.id,
          type: 'html-template',
          point: signal({ ...node.position }),
          data: signal({ node }),
        });
        continue;
      }
      if (known.data().node !== node) known.data.set({ node });
      const dropped = this.dropping.get(node.id);
      if (dropped && dropped.x === node.position.x && dropped.y === node.position.y) this.dropping.delete(node.id);
      const p = known.point();
      const held = dragging === node.id || this.dropping.has(node.id);
      if (!held && (p.x !== node.position.x || p.y !== node.position.y)) {
        known.point.set({ ...node.position });
      }
    }
    for (const id of [...this.cache.keys()]) {
      if (!seen.has(id)) {
        this.cache.delete(id);
        changedSet = true;
      }
    }
    if (changedSet) this.nodes.set([...this.cache.values()]);
  }

  /** The canvas's edges as ngx-vflow's, each object kept while its ends stay (ngx-vflow matches by identity). */
  protected readonly edges = computed<Edge[]>(() => {
    const edges = this.editor.canvas()?.edges ?? [];
    const next = new Map<string, Edge>();
    for (const e of edges) {
      const known = this.edgeCache.get(e.id);
      next.set(e.id, known && known.source === e.source && known.target === e.target ? known : { id: e.id, source: e.source, target: e.target });
    }
    this.edgeCache = next;
    return [...next.values()];
  });
  private edgeCache = new Map<string, Edge>();

  private readonly flow = viewChild<VflowComponent>('flow');

  /** Others' cursors, sent in flow coordinates, shown where that point is in this page's view. */
  protected readonly cursors = computed(() => {
    const view = this.flow()?.viewport() ?? { x: 0, y: 0, zoom: 1 };
    return this.editor.presence().flatMap((p) => {
      const state = p.state as { name?: string; cursor?: { x: number; y: number } } | undefined;
      if (p.self || !state?.cursor) return [];
      const { x, y } = state.cursor;
      return [{ id: p.connectionId, name: state.name ?? p.actor.name, x: x * view.zoom + view.x, y: y * view.zoom + view.y }];
    });
  });

  protected preview(node: FlowNode): string | undefined {
    const path = textPath(node.type);
    const text = path && textAt(node, path);
    if (node.type === 'delay') return `${String(node.data['ms'] ?? 0)} ms`;
    return text || undefined;
  }

  protected connect(c: Connection): void {
    this.editor.connect(c.source, c.target);
  }

  protected dropped(e: NodeDragEndEvent): void {
    const node = this.editor.canvas()?.nodes.find((n) => n.id === e.node.id);
    const at = { ...e.node.point() };
    if (node) {
      // Shown where dropped until the server's position comes (or the move is given up).
      this.dropping.set(node.id, at);
      setTimeout(() => this.dropping.delete(node.id), DROP_WAIT_MS);
      this.editor.move(node, at);
    }
    this.dragging.set(undefined);
  }

  protected selectEdge(changes: EdgeChange[]): void {
    for (const c of changes) if (c.type === 'select' && c.selected) this.editor.select(c.id);
  }

  protected pointer(e: PointerEvent): void {
    const flow = this.flow();
    if (!flow) return;
    const at = flow.documentPointToFlowPoint({ x: e.clientX, y: e.clientY });
    this.editor.pointer({ x: Math.round(at.x), y: Math.round(at.y) });
  }
}
