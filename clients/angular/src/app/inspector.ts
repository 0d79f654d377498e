// The selected node's fields. Its text field is a `TextField`: typing sends text edits, and
// what others type arrives in place, the caret carried along.

import { ChangeDetectionStrategy, Component, type ElementRef, computed, effect, inject, untracked, viewChild } from '@angular/core';
import { takeUntilDestroyed } from '@angular/core/rxjs-interop';

import { Editor, textAt, textPath } from './editor';
import { applyAll, diff, edits, mapPosition, transform } from './text-field';

@Component({
  selector: 'app-inspector',
  changeDetection: ChangeDetectionStrategy.OnPush,
  template: `
    @if (editor.selectedNode(); as node) {
      <h2>{{ node.type }} <small>{{ node.id }}</small></h2>
      @if (path(); as path) {
        <label>
          {{ path.slice(1) }}
          <textarea
            #text
            rows="6"
            data-testid="field"
            [attr.data-path]="path"
            [readOnly]="windowsBreaks()"
            (input)="typed(text.value)"
            (compositionstart)="composeFrom = text.value"
            (compositionend)="composed(text.value)"
          ></textarea>
        </label>
        @if (windowsBreaks()) {
          <p class="hint">This text has Windows line breaks (\r\n), which a text box cannot keep: edit it through the API.</p>
        }
      }
      @if (node.type === 'delay') {
        <label>
          ms
          <input type="number" min="0" [value]="node.data['ms']" (change)="delay($any($event.target).value)" />
        </label>
      }
      <button type="button" data-testid="delete" (click)="editor.deleteSelected()">Delete node</button>
    } @else if (editor.selected()) {
      <p>Edge {{ editor.selected() }}</p>
      <button type="button" data-testid="delete" (click)="editor.deleteSelected()">Delete edge</button>
    } @else {
      <p class="hint">Select a node to edit it. Drag from a node's right port to another's left port to connect them.</p>
    }
  `,
})
export class Inspector {
  protected readonly editor = inject(Editor);
  /**
   * While an input method composes: what the field showed when it began. Its text is taken
   * when it is done, and others' text waits until then (setting the value would end it).
   */
  protected composeFrom: string | undefined;
  private readonly text = viewChild<ElementRef<HTMLTextAreaElement>>('text');
  protected readonly path = computed(() => {
    const node = this.editor.selectedNode();
    return node && textPath(node.type);
  });
  /** A text box reports every line break as `\n`: a text with `\r` would be rewritten by the first keystroke. */
  protected readonly windowsBreaks = computed(() => {
    const [node, path] = [this.editor.selectedNode(), this.path()];
    return node !== undefined && path !== undefined && (textAt(node, path) ?? '').includes('\r');
  });

  constructor() {
    // What the field shows follows the page's TextField: when another node is selected…
    effect(() => {
      this.text();
      this.editor.selected();
      untracked(() => this.show());
    });
    // …and at once when others typed, before the next keystroke is read against it.
    this.editor.fieldChanged.pipe(takeUntilDestroyed()).subscribe(() => this.show());
  }

  /** Shows the field's text, the caret carried past what others inserted before it. */
  private show(): void {
    const el = this.text()?.nativeElement;
    const node = this.editor.selectedNode();
    const path = this.path();
    if (!el || !node || !path || this.composeFrom !== undefined) return;
    const want = this.editor.field(node, path).local;
    const moved = diff(el.value, want);
    if (!moved) return;
    const focused = document.activeElement === el;
    const [start, end] = [el.selectionStart, el.selectionEnd];
    el.value = want;
    const theirs = edits(moved);
    if (focused) el.setSelectionRange(mapPosition(start, theirs), mapPosition(end, theirs));
  }

  protected typed(value: string): void {
    const node = this.editor.selectedNode();
    const path = this.path();
    if (this.composeFrom !== undefined || !node || !path || this.windowsBreaks()) return;
    this.editor.typed(node, path, value);
  }

  /** A composition ended: its text, made on what was shown, goes past what others typed meanwhile. */
  protected composed(value: string): void {
    const from = this.composeFrom;
    this.composeFrom = undefined;
    const node = this.editor.selectedNode();
    const path = this.path();
    if (from === undefined || !node || !path || this.windowsBreaks()) return;
    const field = this.editor.field(node, path);
    const mine = diff(from, value);
    const theirs = diff(from, field.local);
    const [moved] = transform(mine ? edits(mine) : [], theirs ? edits(theirs) : [], true);
    this.editor.typed(node, path, applyAll(field.local, moved));
    this.show();
  }

  protected delay(ms: string): void {
    const node = this.editor.selectedNode();
    const value = Number(ms);
    if (node && Number.isFinite(value)) this.editor.update(node.id, { ms: value });
  }
}
