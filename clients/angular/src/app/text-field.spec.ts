import { type Edit, type Splice, TextField, apply, applyAll, diff, mapPosition, transform } from './text-field';

describe('diff', () => {
  it('finds the one splice between two texts, never inside a surrogate pair', () => {
    expect(diff('hello', 'hello')).toBeUndefined();
    expect(diff('hello', 'help')).toEqual({ at: 3, del: 2, ins: 'p' });
    expect(diff('ab', 'aXb')).toEqual({ at: 1, del: 0, ins: 'X' });
    // 👋 and 👍 share their high surrogate: the splice takes the whole pair.
    expect(diff('a👋', 'a👍')).toEqual({ at: 1, del: 2, ins: '👍' });
    for (const [a, b] of [['', 'x'], ['x', ''], ['über', 'uber'], ['👋👋', '👋']]) {
      expect(apply(a!, diff(a!, b!)!)).toBe(b);
    }
  });
});

/** A small deterministic random source. */
function randomFrom(seed: number): () => number {
  return () => (seed = (seed * 16807) % 2147483647) / 2147483647;
}

function randomEdits(text: string, random: () => number, count: number): Edit[] {
  const out: Edit[] = [];
  let t = text;
  for (let i = 0; i < count; i++) {
    const at = Math.floor(random() * (t.length + 1));
    const e: Edit =
      random() < 0.5 || t.length === at
        ? { at, ins: 'xyz'.slice(0, 1 + Math.floor(random() * 3)) }
        : { at, del: 1 + Math.floor(random() * Math.min(3, t.length - at)) };
    out.push(e);
    t = applyAll(t, [e]);
  }
  return out;
}

describe('transform', () => {
  it('converges: b then a′ is a then b′, for any insertions and deletions', () => {
    const random = randomFrom(11);
    for (let trial = 0; trial < 5000; trial++) {
      const text = 'abcdefghij'.slice(0, Math.floor(random() * 11));
      const a = randomEdits(text, random, 1 + Math.floor(random() * 3));
      const b = randomEdits(text, random, 1 + Math.floor(random() * 3));
      const [a2, b2] = transform(a, b, false);
      expect(applyAll(applyAll(text, b), a2)).toBe(applyAll(applyAll(text, a), b2));
    }
  });

  it('at one place, the first side first; an insertion at a deletion’s edge stays outside it', () => {
    const [mine] = transform([{ at: 4, ins: 'B' }], [{ at: 4, ins: 'A' }], false);
    expect(applyAll(applyAll('the quick', [{ at: 4, ins: 'A' }]), mine)).toBe('the ABquick');
    const [first] = transform([{ at: 4, ins: 'B' }], [{ at: 4, ins: 'A' }], true);
    expect(applyAll(applyAll('the quick', [{ at: 4, ins: 'A' }]), first)).toBe('the BAquick');
    const [kept] = transform([{ at: 4, ins: 'new ' }], [{ at: 4, del: 6 }], false);
    expect(applyAll('the quick fox', [{ at: 4, del: 6 }, ...kept])).toBe('the new fox');
  });

  it('carries a caret past text inserted before it, not past text inserted at it', () => {
    expect(mapPosition(5, [{ at: 2, ins: 'abc' }])).toBe(8);
    expect(mapPosition(1, [{ at: 2, ins: 'abc' }])).toBe(1);
    expect(mapPosition(2, [{ at: 2, ins: 'abc' }])).toBe(2);
    expect(mapPosition(3, [{ at: 2, del: 4 }])).toBe(2);
  });
});

describe('TextField, against one other page', () => {
  it('a keystroke after a batch was sent, and their replacement over both', () => {
    const field = new TextField('a cat!', 1);
    field.typed('a big cat!');
    const batch = field.next(() => 'mine-1')!;
    expect(batch.baseVersion).toBe(1);
    field.typed('a big at!'); // the c deleted while the batch is in flight
    field.theirs({ at: 2, del: 3, ins: 'dog' }, 2); // they replaced "cat" first
    expect(field.local).toBe('a big dog!');
    field.settled(field.server, 2); // the batch was refused: its edits are pending again
    const again = field.next(() => 'mine-2')!;
    expect(again.baseVersion).toBe(2);
    expect(applyAll(field.server, again.edits.map((e) => e.edit))).toBe('a big dog!');
  });

  it('their insertion inside what I deleted stays; text nobody deleted stays', () => {
    const field = new TextField('abcdefgh', 1);
    field.typed('adefgh'); // delete "bc"
    field.next(() => 'mine-1');
    field.typed('adefh'); // delete "g"
    field.theirs({ at: 2, del: 0, ins: 'XYZ' }, 2); // between b and c
    expect(field.local).toBe('aXYZdefh');
  });

  it('own ops taken in as they apply; typing on extends the edit not yet sent', () => {
    const field = new TextField('', 0);
    field.typed('ab');
    const batch = field.next(() => 'o1')!;
    field.typed('abc');
    field.typed('abcd');
    field.mine('o1', { at: 0, del: 0, ins: 'ab' }, 3);
    field.settled(field.server, 3);
    expect([field.server, field.version, field.local]).toEqual(['ab', 3, 'abcd']);
    expect(field.next(() => 'o2')!.edits.map((e) => e.edit)).toEqual([{ at: 2, ins: 'cd' }]);
    void batch;
  });

  it('a reload while a batch is in flight is taken in once the batch settled, the batch counted once', () => {
    const field = new TextField('x', 1);
    field.typed('xy');
    field.next(() => 'o1');
    field.reloaded('Axy', 5); // the reload held my "y" and someone's "A"
    field.resultApplied('o1'); // told by its result only: the canvas already had it
    field.settled('Axy', 5);
    expect([field.server, field.local, field.version, field.pending]).toEqual(['Axy', 'Axy', 5, false]);
  });

  it('after a reload in flight, live changes wait for the batch to settle, then the diff takes them in once', () => {
    const field = new TextField('ab', 5);
    field.typed('abX');
    field.next(() => 'o1');
    field.reloaded('abX', 6); // the reload holds my X
    field.theirs({ at: 0, del: 0, ins: 'Y' }, 7); // on the reloaded text: not on this one
    field.resultApplied('o1');
    field.settled('YabX', 7);
    expect([field.server, field.local, field.version, field.pending]).toEqual(['YabX', 'YabX', 7, false]);
  });

  it('a later op of a batch reported applied first takes in the ones before it', () => {
    const field = new TextField('', 0);
    field.typed('a');
    field.typed('ba'); // not a continuation: a second edit
    const batch = field.next(() => `o${Math.random()}`)!;
    expect(batch.edits).toHaveLength(2);
    field.resultApplied(batch.edits[1]!.opId);
    field.resultApplied(batch.edits[0]!.opId);
    field.settled(field.server, 2);
    expect([field.server, field.pending]).toEqual(['ba', false]);
  });
});

/** The server's side of one text field: applies a batch only on the node version it was made on. */
class Server {
  version = 0;
  /** Every outcome, in order, as each page's stream carries them. */
  readonly log: ({ opId: string; splice: Splice; version: number } | { opId: string; refused: true })[] = [];
  constructor(public text = '') {}

  receive(batch: { opId: string; edit: Edit }[], baseVersion: number): void {
    if (baseVersion < this.version) {
      for (const { opId } of batch) this.log.push({ opId, refused: true });
      return;
    }
    for (const { opId, edit } of batch) {
      const before = this.text;
      this.text = applyAll(this.text, [edit]);
      this.version++;
      this.log.push({ opId, splice: diffAt(before, edit), version: this.version });
    }
  }
}

/** The splice the server reports for an edit. */
function diffAt(text: string, e: Edit): Splice {
  return 'ins' in e ? { at: e.at, del: 0, ins: e.ins } : { at: e.at, del: e.del, ins: '' };
}

/** A page: its field, what it has read of the server's stream, its batch's outstanding results. */
class Page {
  readonly field: TextField;
  read = 0;
  private ops = 0;
  private outstanding = new Set<string>();
  constructor(
    readonly name: string,
    private readonly server: Server,
  ) {
    this.field = new TextField(server.text, server.version);
  }

  type(at: (text: string) => number, text: string): void {
    const local = this.field.local;
    const i = at(local);
    this.field.typed(local.slice(0, i) + text + local.slice(i));
  }

  erase(at: (text: string) => number, len: number): void {
    const local = this.field.local;
    const i = at(local);
    this.field.typed(local.slice(0, i) + local.slice(i + len));
  }

  send(): boolean {
    const batch = this.field.next(() => `${this.name}-${++this.ops}`);
    if (!batch) return false;
    for (const e of batch.edits) this.outstanding.add(e.opId);
    this.server.receive(batch.edits, batch.baseVersion);
    return true;
  }

  readOne(): boolean {
    const outcome = this.server.log[this.read];
    if (!outcome) return false;
    this.read++;
    if ('splice' in outcome) {
      if (this.field.isMine(outcome.opId)) this.field.mine(outcome.opId, outcome.splice, outcome.version);
      else this.field.theirs(outcome.splice, outcome.version);
    }
    if (this.outstanding.delete(outcome.opId) && this.outstanding.size === 0) {
      this.field.settled(this.field.server, this.field.version);
    }
    return true;
  }

  settle(): void {
    while (this.readOne() || this.send()) {
      // until everything typed is on the server and every outcome read
    }
  }
}

describe('TextField, pages at once', () => {
  it('two people typing at once into one field both land, each where they typed', () => {
    // One before the seed text, one after it (in an empty field both would type at 0).
    const server = new Server('|');
    const a = new Page('a', server);
    const b = new Page('b', server);
    const steps = 'abab aab bba abba ab'.split('');
    let i = 0;
    for (const step of steps) {
      i++;
      if (step === 'a') a.type((t) => t.length, 'xyz'[i % 3]!);
      if (step === 'b') b.type(() => 0, 'XYZ'[i % 3]!);
      if (i % 2 === 0) a.send();
      if (i % 3 === 0) b.send();
      if (i % 4 === 0) a.readOne();
      if (i % 5 === 0) b.readOne();
    }
    for (let round = 0; round < 3; round++) {
      a.settle();
      b.settle();
    }
    const typedByA = steps.map((s, n) => (s === 'a' ? 'xyz'[(n + 1) % 3] : '')).join('');
    const typedByB = steps.map((s, n) => (s === 'b' ? 'XYZ'[(n + 1) % 3] : '')).join('');
    expect(server.text).toBe([...typedByB].reverse().join('') + '|' + typedByA);
    expect(a.field.local).toBe(server.text);
    expect(b.field.local).toBe(server.text);
    expect(server.log.some((o) => 'refused' in o)).toBe(true); // the guard was exercised
  });

  it('pages typing and deleting anywhere converge; every typed letter lands once or was deleted', () => {
    const random = randomFrom(7);
    for (let trial = 0; trial < 300; trial++) {
      const server = new Server('0123456789');
      const pages = [new Page('a', server), new Page('b', server), new Page('c', server)];
      let letter = 0;
      for (let n = 0; n < 60; n++) {
        const page = pages[Math.floor(random() * pages.length)]!;
        const r = random();
        if (r < 0.4) {
          // Each letter typed once in all: a letter twice on the server is a doubled keystroke.
          const ch = String.fromCharCode(0x4e00 + letter++);
          page.type((t) => Math.floor(random() * (t.length + 1)), ch);
        } else if (r < 0.55) {
          page.erase((t) => Math.floor(random() * t.length), 1 + Math.floor(random() * 2));
        } else if (r < 0.8) page.send();
        else page.readOne();
      }
      for (let round = 0; round < 4; round++) for (const p of pages) p.settle();
      for (const p of pages) expect(p.field.local).toBe(server.text);
      // Every character, seed or typed, was written once: none may be there twice.
      expect(new Set(server.text).size).toBe(server.text.length);
    }
  });
});

