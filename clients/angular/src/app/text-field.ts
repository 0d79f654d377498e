// One text field of a node edited by several people at once: each keystroke is kept as a
// splice of the text before it, sent as `text.replace` ops (the first guarded by the node's
// version, so the batch applies to exactly the text it was made on), and transformed past
// whatever the server applied first. So two people typing into one prompt both land, each
// where they typed, and nobody's keystrokes overwrite anybody's.
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

/**
 * Where position `p` of a text is once `theirs` was applied to it. A position at their
 * insertion point goes after it when `after` (their text came first).
 */
export function mapPosition(p: number, theirs: Splice, after = true): number {
  const end = theirs.at + theirs.del;
  if (p < theirs.at || (p === theirs.at && !after && theirs.del === 0)) return p;
  if (p >= end && !(p === theirs.at && theirs.del > 0)) return p + theirs.ins.length - theirs.del;
  return theirs.at + theirs.ins.length;
}

/**
 * `mine`, made on the same text as `theirs`, made to apply after `theirs`: what I deleted
 * that they deleted too is gone already; what they inserted is kept. Where both insert at
 * one place, `after` puts mine after theirs (theirs reached the server first) or before.
 * Where their edit sits inside the range I deleted, the part of my deletion past it is
 * dropped: their text stays.
 */
export function rebase(mine: Splice, theirs: Splice, after = true): Splice {
  const at = mapPosition(mine.at, theirs, after);
  const mineEnd = mine.at + mine.del;
  const theirsEnd = theirs.at + theirs.del;
  let del: number;
  if (mineEnd <= theirs.at || mine.at >= theirsEnd) {
    del = mine.del; // apart
  } else if (mine.at < theirs.at) {
    del = theirs.at - mine.at; // up to their edit
  } else {
    del = Math.max(0, mineEnd - theirsEnd); // what is left past their deletion
  }
  return { at, del, ins: mine.ins };
}

/** `text.replace` of a splice of `path` in node `id`; guarded when `baseVersion` is given. */
export function replaceOp(id: string, path: string, s: Splice, baseVersion?: number): OpInput {
  const op: OpInput = { type: 'text.replace', id, path, target: { range: [s.at, s.del] }, text: s.ins };
  return baseVersion === undefined ? op : { ...op, base_version: baseVersion };
}

/**
 * One field's state on this page: `server` is the text as the server has it (as far as this
 * page knows), `local` what the field shows: `server` with this page's edits, in the order
 * typed. The edits go out in batches, one batch in flight at a time; its first op is guarded
 * by the node's version and the rest follow it in the same request, so a batch applies
 * whole to the text it was made on or not at all.
 *
 * The server's changes come in order from `SYNC_CANVAS`: this page's own edits are taken in
 * ([`applied`]), anyone else's are transformed under the edits not yet applied ([`theirs`]).
 */
export class TextField {
  private serverText: string;
  private localText: string;
  /** This page's edits not yet on the server, each on the text the ones before it made. */
  private edits: Splice[] = [];
  /** The op ids of the batch in flight: the first `inFlight.length` edits. */
  private inFlight: string[] = [];
  /** Own edits already taken in, so one seen twice (its result, then its event) counts once. */
  private readonly taken = new Set<string>();

  constructor(initial: string) {
    this.serverText = initial;
    this.localText = initial;
  }

  get local(): string {
    return this.localText;
  }

  get server(): string {
    return this.serverText;
  }

  /** Typed and not yet on the server. */
  get pending(): boolean {
    return this.edits.length > 0;
  }

  /** The person typed: the field now shows `text`. */
  typed(text: string): void {
    const edit = diff(this.localText, text);
    if (!edit) return;
    this.localText = text;
    // Typing on at the end of the last edit not yet sent extends it.
    const last = this.edits.length > this.inFlight.length ? this.edits[this.edits.length - 1] : undefined;
    if (last && edit.del === 0 && edit.at === last.at + last.ins.length) {
      this.edits[this.edits.length - 1] = { ...last, ins: last.ins + edit.ins };
    } else {
      this.edits.push(edit);
    }
  }

  /** Whether op `opId` is this field's own edit. */
  isMine(opId: string): boolean {
    return this.inFlight.includes(opId) || this.taken.has(opId);
  }

  /** Someone else's edit applied on the server: this page's edits move past it. */
  theirs(splice: Splice): void {
    let t = splice;
    this.edits = this.edits.map((mine) => {
      const moved = rebase(mine, t, true);
      t = rebase(t, mine, false);
      return moved;
    });
    this.serverText = apply(this.serverText, splice);
    this.localText = this.edits.reduce(apply, this.serverText);
  }

  /** The server's text is now `text` however it got there (a reload, an undo). */
  serverIs(text: string): boolean {
    const change = diff(this.serverText, text);
    if (change) this.theirs(change);
    return change !== undefined;
  }

  /** Own edit `opId` applied (its event or its result, whichever comes first). */
  applied(opId: string): void {
    if (this.inFlight[0] !== opId) return;
    this.inFlight.shift();
    this.serverText = apply(this.serverText, this.edits.shift()!);
    this.taken.add(opId);
    if (this.taken.size > 256) this.taken.delete(this.taken.values().next().value!);
  }

  /**
   * Own edit `opId` refused: the batch's rest was skipped. After a `version_mismatch` (someone
   * changed the node first) or a skip the edits are sent again, moved past what came first;
   * any other refusal (the text too long, the node gone) drops every edit not yet applied:
   * the field shows the server's text again.
   */
  refused(opId: string, retry: boolean): void {
    if (!this.inFlight.includes(opId)) return;
    this.inFlight = [];
    if (!retry) {
      this.edits = [];
      this.localText = this.serverText;
    }
  }

  /** The next batch to send, each edit with an op id from `opId` (marked in flight); none while one is in flight. */
  next(opId: () => string): { opId: string; splice: Splice }[] {
    if (this.inFlight.length > 0) return [];
    const batch = this.edits.map((splice) => ({ opId: opId(), splice }));
    this.inFlight = batch.map((b) => b.opId);
    return batch;
  }
}
