// The editor: toolbar (connection, run, undo), palette, canvas, inspector, people and the
// run's log. `?flow=<id>&name=<you>&token=<jwt>`.

import { ChangeDetectionStrategy, Component, computed, inject, signal } from '@angular/core';
import { HttpError } from '@flowsync/client';
import { FlowsyncService } from '@flowsync/client/angular';

import { Editor, KINDS, type Kind } from './editor';
import { FlowCanvas } from './flow-canvas';
import { Inspector } from './inspector';

@Component({
  selector: 'app-root',
  imports: [FlowCanvas, Inspector],
  providers: [Editor],
  changeDetection: ChangeDetectionStrategy.OnPush,
  host: { '(document:keydown)': 'key($event)' },
  templateUrl: './app.html',
})
export class App {
  protected readonly editor = inject(Editor);
  private readonly flowsync = inject(FlowsyncService);
  protected readonly kinds = Object.entries(KINDS) as [Kind, (typeof KINDS)[Kind]][];
  protected readonly flowId: string;
  protected readonly ready = signal(false);
  protected readonly running = computed(() => {
    const s = this.editor.run()?.status;
    return s === 'queued' || s === 'running';
  });
  /** The run's nodes in canvas order, with their state. */
  protected readonly runNodes = computed(() => {
    const run = this.editor.run();
    if (!run) return [];
    return Object.entries(run.nodes).map(([id, state]) => ({ id, ...state }));
  });
  private added = 0;

  constructor() {
    const params = new URLSearchParams(location.search);
    this.flowId = params.get('flow') ?? 'demo';
    const name = params.get('name') ?? `guest-${Math.floor(Math.random() * 1000)}`;
    void this.open(name);
  }

  private async open(name: string): Promise<void> {
    try {
      await this.ensureFlow();
      await this.editor.open(this.flowId, name);
      this.ready.set(true);
    } catch (e) {
      this.editor.error.set(e instanceof Error ? e.message : String(e));
    }
  }

  private async ensureFlow(): Promise<void> {
    const client = this.flowsync.client;
    try {
      await client.flow(this.flowId);
    } catch (e) {
      if (!(e instanceof HttpError) || e.status !== 404) throw e;
      try {
        await client.createFlow({ id: this.flowId, name: this.flowId });
      } catch (c) {
        if (!(c instanceof HttpError) || c.code !== 'flow_exists') throw c;
      }
    }
  }

  protected add(kind: Kind): void {
    const n = this.added++;
    this.editor.addNode(kind, { x: 40 + (n % 4) * 220, y: 40 + Math.floor(n / 4) * 160 + (n % 2) * 30 });
  }

  protected key(e: KeyboardEvent): void {
    const target = e.target as HTMLElement | null;
    if (target && (target.tagName === 'TEXTAREA' || target.tagName === 'INPUT')) return;
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === 'z') {
      e.preventDefault();
      if (e.shiftKey) this.editor.redo();
      else this.editor.undo();
    } else if (e.key === 'Delete' || e.key === 'Backspace') {
      this.editor.deleteSelected();
    }
  }
}
