// One text field of a node edited by several people at once. Each keystroke is kept as an
// edit (an insertion or a deletion) of the text before it; the pending edits go out as one
// request of `text.insert` / `text.delete` ops, the first guarded by the node's version so
// the batch applies to exactly the text it was made on or is refused whole; and whatever
// the server applied first is transformed under them (operational transformation of
// insertions and deletions). So people typing into one prompt at once all land, each where
// they typed, and nobody's keystrokes are lost, doubled or moved.
//
// Offsets are UTF-16 code units, like JavaScript strings and the server's text ops.

import type { OpInput } from '@flowsync/client';

/** Replace `del` code units at `at` with `ins`. */
export interface Splice {
  readonly at: number;
  readonly del: number;
  readonly ins: string;
}

const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** The one splice that turns `before` into `after` (common prefix and suffix kept); none when equal. */
export function diff(before: string, after: string): Splice | undefined {
  if (before === after) return undefined;
  let start = 0;
  const shorter = Math.min(before.length, after.length);
  while (start < shorter && before.charCodeAt(start) === after.charCodeAt(start)) start++;
  // Never split a surrogate pair.
  if (start > 0 && isHigh(before.charCodeAt(start - 1))) start--;
  let end = 0;
  while (
    end < shorter - start &&
    before.charCodeAt(before.length - 1 - end) === after.charCodeAt(after.length - 1 - end)
  ) {
    end++;
  }
  if (end > 0 && isLow(before.charCodeAt(before.length - end))) end--;
  return { at: start, del: before.length - start - end, ins: after.slice(start, after.length - end) };
}

export function apply(text: string, s: Splice): string {
  return text.slice(0, s.at) + s.ins + text.slice(s.at + s.del);
}

/** `ins` inserted at `at`. */
export interface Insert {
  readonly at: number;
  readonly ins: string;
}

/** `del` code units deleted at `at`. */
export interface Delete {
  readonly at: number;
  readonly del: number;
}

/** One primitive edit. */
export type Edit = Insert | Delete;

const isIns = (e: Edit): e is Insert => 'ins' in e;

/** A splice as edits: its deletion, then its insertion. */
export function edits(s: Splice): Edit[] {
  const out: Edit[] = [];
  if (s.del > 0) out.push({ at: s.at, del: s.del });
  if (s.ins.length > 0) out.push({ at: s.at, ins: s.ins });
  return out;
}

function applyEdit(text: string, e: Edit): string {
  return isIns(e) ? text.slice(0, e.at) + e.ins + text.slice(e.at) : text.slice(0, e.at) + text.slice(e.at + e.del);
}

export const applyAll = (text: string, all: readonly Edit[]): string => all.reduce(applyEdit, text);

const moved = (e: Edit, by: number): Edit => ({ ...e, at: e.at + by });

/** What is left of deletion `d` once deletion `o` (on the same text) was applied. */
function rest(d: Delete, o: Delete): Edit[] {
  const [end, oEnd] = [d.at + d.del, o.at + o.del];
  const before = Math.max(0, Math.min(end, o.at) - d.at);
  const after = Math.max(0, end - Math.max(d.at, oEnd));
  const at = d.at < o.at ? d.at : d.at >= oEnd ? d.at - o.del : o.at;
  return before + after > 0 ? [{ at, del: before + after }] : [];
}

/** Two edits made on one text, each made to apply after the other. At one place, `a` goes first when `aFirst`. */
function pair(a: Edit, b: Edit, aFirst: boolean): [Edit[], Edit[]] {
  if (isIns(a) && isIns(b)) {
    return a.at < b.at || (a.at === b.at && aFirst) ? [[a], [moved(b, a.ins.length)]] : [[moved(a, b.ins.length)], [b]];
  }
  if (isIns(a) && !isIns(b)) {
    // An insertion at either end of a deletion stays outside it; one inside splits it.
    if (a.at <= b.at) return [[a], [moved(b, a.ins.length)]];
    if (a.at >= b.at + b.del) return [[moved(a, -b.del)], [b]];
    return [
      [{ at: b.at, ins: a.ins }],
      [
        { at: b.at, del: a.at - b.at },
        { at: b.at + a.ins.length, del: b.at + b.del - a.at },
      ],
    ];
  }
  if (!isIns(a) && isIns(b)) {
    const [b2, a2] = pair(b, a, !aFirst);
    return [a2, b2];
  }
  return [rest(a as Delete, b as Delete), rest(b as Delete, a as Delete)];
}

/**
 * Edits `a` and `b`, each a sequence made on one text, transformed to apply after each
 * other: applying `b` then `a'` gives what applying `a` then `b'` gives. Where both insert
 * at one place, `a`'s text goes first when `aFirst`.
 */
export function transform(a: readonly Edit[], b: readonly Edit[], aFirst: boolean): [Edit[], Edit[]] {
  if (a.length === 0 || b.length === 0) return [[...a], [...b]];
  if (a.length === 1 && b.length === 1) return pair(a[0]!, b[0]!, aFirst);
  if (a.length > 1) {
    const [a1, b1] = transform(a.slice(0, 1), b, aFirst);
    const [a2, b2] = transform(a.slice(1), b1, aFirst);
    return [[...a1, ...a2], b2];
  }
  const [a1, b1] = transform(a, b.slice(0, 1), aFirst);
  const [a2, b2] = transform(a1, b.slice(1), aFirst);
  return [a2, [...b1, ...b2]];
}

/** Where position `p` is once `theirs` was applied; text inserted right at it goes after it unless `after`. */
export function mapPosition(p: number, theirs: readonly Edit[], after = false): number {
  let at = p;
  for (const e of theirs) {
    if (isIns(e)) {
      if (e.at < at || (e.at === at && after)) at += e.ins.length;
    } else if (e.at < at) {
      at -= Math.min(e.del, at - e.at);
    }
  }
  return at;
}

/** The op that makes edit `e` of `path` in node `id`; guarded when `baseVersion` is given. */
export function editOp(id: string, path: string, e: Edit, baseVersion?: number): OpInput {
  const op: OpInput = isIns(e)
    ? { type: 'text.insert', id, path, at: e.at, text: e.ins }
    : { type: 'text.delete', id, path, at: e.at, len: e.del };
  return baseVersion === undefined ? op : { ...op, base_version: baseVersion };
}

/** A batch of edits sent as one request: op ids in order, and how many of them applied. */
interface Batch {
  readonly ids: readonly string[];
  applied: number;
  /** The node changed before any of it applied: it will be refused whole. */
  doomed: boolean;
}

/**
 * One field's state on this page: `server` is the text as the server has it (as far as this
 * page knows, at node version `version`), `local` what the field shows: `server` with this
 * page's edits not yet applied, in the order typed.
 *
 * The server's changes come in order, each once (the session's `change` feed): this page's
 * own edits are taken in as they apply ([`mine`]), anyone else's are transformed under the
 * pending edits ([`theirs`]; where both insert at one place, the pending text stays first). One batch is in flight at a time ([`next`]); once all its
 * results are in ([`settled`]) the next one is made from what is pending then.
 */
export class TextField {
  private serverText: string;
  private nodeVersion: number;
  private pendingEdits: Edit[] = [];
  private batch: Batch | undefined;
  /** The canvas was reloaded while a batch was in flight: the text to take in once it settles. */
  private reloadWaiting = false;

  constructor(initial: string, version: number) {
    this.serverText = initial;
    this.nodeVersion = version;
  }

  get server(): string {
    return this.serverText;
  }

  /** The node version the server text is at: what the next batch is guarded with. */
  get version(): number {
    return this.nodeVersion;
  }

  get local(): string {
    return applyAll(this.serverText, this.pendingEdits);
  }

  /** Typed and not yet on the server. */
  get pending(): boolean {
    return this.pendingEdits.length > 0;
  }

  /** A batch is in flight. */
  get busy(): boolean {
    return this.batch !== undefined;
  }

  /** The person typed: the field now shows `text`. */
  typed(text: string): void {
    const change = diff(this.local, text);
    if (!change) return;
    for (const e of edits(change)) this.push(e);
  }

  /** Adds an edit, merged into the last one not yet sent when it continues it (typing on, backspacing). */
  private push(e: Edit): void {
    const sent = this.batch && !this.batch.doomed ? this.batch.ids.length - this.batch.applied : 0;
    const last = this.pendingEdits.length > sent ? this.pendingEdits[this.pendingEdits.length - 1] : undefined;
    const merged = last && merge(last, e);
    if (merged === undefined) this.pendingEdits.push(e);
    else if (merged === null) this.pendingEdits.pop();
    else this.pendingEdits[this.pendingEdits.length - 1] = merged;
  }

  /** Whether op `opId` is one of this field's edits in flight. */
  isMine(opId: string): boolean {
    return this.batch?.ids.includes(opId) ?? false;
  }

  /**
   * Own op `opId` applied at `version`, as the server reports it: a splice of the field, or
   * its whole new text (a `node.update` that created it).
   */
  mine(opId: string, now: Splice | string, version: number): void {
    const b = this.batch;
    if (!b || b.doomed || b.ids[b.applied] !== opId) return;
    b.applied++;
    this.pendingEdits.shift();
    this.serverText = typeof now === 'string' ? now : apply(this.serverText, now);
    this.nodeVersion = version;
  }

  /** Someone else's edit of this field applied at `version`: the pending edits move past it. */
  theirs(splice: Splice, version: number): void {
    // After a reload the server text here is not the one their edit was made on: the diff
    // taken once the batch settles carries it.
    if (this.reloadWaiting) return;
    const theirs = edits(splice);
    // Where both insert at one place, mine stays first: it is next to what I was editing.
    [this.pendingEdits] = transform(this.pendingEdits, theirs, true);
    this.serverText = applyAll(this.serverText, theirs);
    this.nodeChanged(version);
  }

  /** The server's text is now `text`, at `version`, however it got there (an undo, a patch). */
  serverIs(text: string, version: number): void {
    if (this.reloadWaiting) return;
    const change = diff(this.serverText, text);
    if (change) this.theirs(change, version);
    else this.nodeChanged(version);
  }

  /** The node changed at `version` (this field or not): a batch in flight will be refused. */
  nodeChanged(version: number): void {
    if (this.reloadWaiting) return;
    this.nodeVersion = version;
    if (this.batch && this.batch.applied < this.batch.ids.length) this.batch.doomed = true;
  }

  /**
   * The canvas was reloaded: its text is `text` at `version`. With a batch in flight the
   * reload may or may not hold it, so the text is taken in once the batch settles.
   */
  reloaded(text: string, version: number): void {
    if (this.batch) this.reloadWaiting = true;
    else this.serverIs(text, version);
  }

  /**
   * An op's result came: applied. When the canvas did not tell it (a reload that held it),
   * the server has the edit as it was sent (its guard held).
   */
  resultApplied(opId: string): void {
    const b = this.batch;
    const k = b && !b.doomed ? b.ids.indexOf(opId) : -1;
    // A request applies in order: op k applied means every op before it did too.
    while (b && k >= b.applied && this.pendingEdits.length > 0) {
      b.applied++;
      this.serverText = applyEdit(this.serverText, this.pendingEdits.shift()!);
    }
  }

  /** Edits the server refused for good (the node gone, the text too long): they cannot land. */
  dropPending(): void {
    this.pendingEdits = [];
    if (this.batch) this.batch.doomed = true;
  }

  /** The next batch: each pending edit with an op id from `newId`, the guard version; none while one is in flight. */
  next(newId: () => string): { edits: { opId: string; edit: Edit }[]; baseVersion: number } | undefined {
    if (this.batch || this.pendingEdits.length === 0) return undefined;
    const out = this.pendingEdits.map((edit) => ({ opId: newId(), edit }));
    this.batch = { ids: out.map((o) => o.opId), applied: 0, doomed: false };
    return { edits: out, baseVersion: this.nodeVersion };
  }

  /** Every result of the batch is in; `text` and `version` are the session's now (taken in after a reload). */
  settled(text: string, version: number): void {
    this.batch = undefined;
    if (this.reloadWaiting) {
      this.reloadWaiting = false;
      this.serverIs(text, version);
    }
  }
}

/** `last` then `e` as one edit (typing on, backspacing, deleting forward); `null` when they cancel out. */
function merge(last: Edit, e: Edit): Edit | null | undefined {
  if (isIns(last) && isIns(e) && e.at === last.at + last.ins.length) return { at: last.at, ins: last.ins + e.ins };
  if (isIns(last) && !isIns(e) && e.at >= last.at && e.at + e.del === last.at + last.ins.length) {
    const ins = last.ins.slice(0, e.at - last.at);
    return ins.length > 0 ? { at: last.at, ins } : null;
  }
  if (!isIns(last) && !isIns(e)) {
    if (e.at === last.at) return { at: last.at, del: last.del + e.del }; // deleting forward
    if (e.at + e.del === last.at) return { at: e.at, del: last.del + e.del }; // backspacing
  }
  return undefined;
}
