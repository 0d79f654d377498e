// The canvas: the flow's nodes and edges in ngx-vflow, kept in step with the server's canvas.
// Node objects keep their identity across updates (their `point` and `data` are signals set
// in place), so a remote change never re-creates a node under someone's pointer.

import { ChangeDetectionStrategy, Component, computed, effect, inject, signal, untracked, type WritableSignal } from '@angular/core';
import type { Node as FlowNode } from '@flowsync/client';
import { type Connection, type Edge, type EdgeChange, type Node, type NodeDragEndEvent, Vflow } from 'ngx-vflow';

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

@Component({
  selector: 'app-flow-canvas',
  imports: [Vflow],
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    <div class="surface" (pointermove)="pointer($event)" data-testid="canvas">
      <vflow
        view="auto"
        [nodes]="nodes()"
        [edges]="edges()"
        (connect)="connect($event)"
        (nodeDragStart)="dragStart($event.node.id)"
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
      const p = known.point();
      if (dragging !== node.id && (p.x !== node.position.x || p.y !== node.position.y)) {
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

  protected readonly edges = computed<Edge[]>(() =>
    (this.editor.canvas()?.edges ?? []).map((e) => ({ id: e.id, source: e.source, target: e.target })),
  );

  protected readonly cursors = computed(() =>
    this.editor.presence().flatMap((p) => {
      const state = p.state as { name?: string; cursor?: { x: number; y: number } } | undefined;
      if (p.self || !state?.cursor) return [];
      return [{ id: p.connectionId, name: state.name ?? p.actor.name, ...state.cursor }];
    }),
  );

  protected preview(node: FlowNode): string | undefined {
    const path = textPath(node.type);
    const text = path && textAt(node, path);
    if (node.type === 'delay') return `${String(node.data['ms'] ?? 0)} ms`;
    return text || undefined;
  }

  protected connect(c: Connection): void {
    this.editor.connect(c.source, c.target);
  }

  /** The dragged node's version when the drag began: the move is refused if someone changed it since. */
  private dragBase: number | undefined;

  protected dragStart(id: string): void {
    this.dragging.set(id);
    this.dragBase = this.editor.canvas()?.nodes.find((n) => n.id === id)?.version;
  }

  protected dropped(e: NodeDragEndEvent): void {
    this.dragging.set(undefined);
    const node = this.editor.canvas()?.nodes.find((n) => n.id === e.node.id);
    if (node) this.editor.move(node, { ...e.node.point() }, this.dragBase);
  }

  protected selectEdge(changes: EdgeChange[]): void {
    for (const c of changes) if (c.type === 'select' && c.selected) this.editor.select(c.id);
  }

  protected pointer(e: PointerEvent): void {
    const box = (e.currentTarget as HTMLElement).getBoundingClientRect();
    this.editor.pointer({ x: Math.round(e.clientX - box.left), y: Math.round(e.clientY - box.top) });
  }
}
