import { TextField, apply, diff, mapPosition, rebase, type Splice } from './text-field';

describe('diff', () => {
  it('finds the one splice between two texts, never inside a surrogate pair', () => {
    expect(diff('hello', 'hello')).toBeUndefined();
    expect(diff('hello', 'help')).toEqual({ at: 3, del: 2, ins: 'p' });
    expect(diff('ab', 'aXb')).toEqual({ at: 1, del: 0, ins: 'X' });
    // 👋 and 👍 share their high surrogate: the splice takes the whole pair.
    expect(diff('a👋', 'a👍')).toEqual({ at: 1, del: 2, ins: '👍' });
    for (const [a, b] of [['', 'x'], ['x', ''], ['über', 'uber'], ['👋👋', '👋']]) {
      expect(apply(a, diff(a, b)!)).toBe(b);
    }
  });
});

describe('rebase', () => {
  const base = 'the quick fox';
  const cases: [string, Splice, Splice, string][] = [
    ['apart, theirs before', { at: 10, del: 0, ins: 'red ' }, { at: 0, del: 4, ins: '' }, 'quick red fox'],
    ['apart, theirs after', { at: 0, del: 0, ins: '> ' }, { at: 13, del: 0, ins: '!' }, '> the quick fox!'],
    ['one place: theirs first', { at: 4, del: 0, ins: 'B' }, { at: 4, del: 0, ins: 'A' }, 'the ABquick fox'],
    ['both deleted the same', { at: 4, del: 6, ins: '' }, { at: 4, del: 6, ins: '' }, 'the fox'],
    ['their edit inside my deletion stays', { at: 3, del: 7, ins: ' slow ' }, { at: 5, del: 1, ins: 'U' }, 'the slow Uick fox'],
  ];
  for (const [name, mine, theirs, want] of cases) {
    it(name, () => {
      expect(apply(apply(base, theirs), rebase(mine, theirs))).toBe(want);
    });
  }

  it('carries a caret past text inserted before it', () => {
    expect(mapPosition(5, { at: 2, del: 0, ins: 'abc' })).toBe(8);
    expect(mapPosition(1, { at: 2, del: 0, ins: 'abc' })).toBe(1);
    expect(mapPosition(3, { at: 2, del: 4, ins: '' })).toBe(2);
  });
});

/** The server's side of one text field: applies a batch only on the text it was made on. */
class Server {
  constructor(public text = '') {}
  version = 0;
  /** Every outcome, in order, as each page's stream carries them. */
  readonly log: ({ opId: string; splice: Splice } | { opId: string; refused: true })[] = [];

  receive(batch: { opId: string; splice: Splice }[], baseVersion: number): void {
    if (baseVersion < this.version) {
      for (const { opId } of batch) this.log.push({ opId, refused: true });
      return;
    }
    for (const { opId, splice } of batch) {
      this.text = apply(this.text, splice);
      this.version++;
      this.log.push({ opId, splice });
    }
  }
}

/** A page: its field, what it has read of the server's stream, and the node version it saw. */
class Page {
  readonly field: TextField;
  read = 0;
  version = 0;
  private ops = 0;
  constructor(
    readonly name: string,
    private readonly server: Server,
  ) {
    this.field = new TextField(server.text);
  }

  type(at: (text: string) => number, ch: string): void {
    const text = this.field.local;
    const i = at(text);
    this.field.typed(text.slice(0, i) + ch + text.slice(i));
  }

  send(): boolean {
    const batch = this.field.next(() => `${this.name}-${++this.ops}`);
    if (batch.length === 0) return false;
    this.server.receive(batch, this.version);
    return true;
  }

  readOne(): boolean {
    const outcome = this.server.log[this.read];
    if (!outcome) return false;
    this.read++;
    if ('refused' in outcome) {
      this.field.refused(outcome.opId, true);
      return true;
    }
    this.version++;
    if (this.field.isMine(outcome.opId)) this.field.applied(outcome.opId);
    else this.field.theirs(outcome.splice);
    return true;
  }

  settle(): void {
    while (this.readOne() || this.send()) {
      // until everything typed is on the server and every outcome read
    }
  }
}

describe('TextField', () => {
  it('two people typing at once into one field both land, each where they typed', () => {
    // One before the seed text, one after it (in an empty field both would type at 0).
    const server = new Server('|');
    const a = new Page('a', server);
    const b = new Page('b', server);
    const atEnd = (t: string) => t.length;
    const atStart = () => 0;
    // Interleaved: each types, sends, and reads the stream at its own pace.
    const steps = 'abab aab bba abba ab'.split('');
    let i = 0;
    for (const step of steps) {
      i++;
      if (step === 'a') a.type(atEnd, 'xyz'[i % 3]!);
      if (step === 'b') b.type(atStart, 'XYZ'[i % 3]!);
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

  it('pages typing anywhere at random converge, with every typed character present', () => {
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    for (let trial = 0; trial < 50; trial++) {
      const server = new Server();
      const pages = [new Page('a', server), new Page('b', server), new Page('c', server)];
      const typed: string[] = [];
      for (let n = 0; n < 60; n++) {
        const page = pages[Math.floor(random() * pages.length)]!;
        const r = random();
        if (r < 0.5) {
          const ch = String.fromCharCode(97 + (n % 26));
          typed.push(ch);
          page.type((t) => Math.floor(random() * (t.length + 1)), ch);
        } else if (r < 0.75) page.send();
        else page.readOne();
      }
      for (let round = 0; round < 4; round++) for (const p of pages) p.settle();
      for (const p of pages) expect(p.field.local).toBe(server.text);
      expect([...server.text].sort().join('')).toBe(typed.sort().join(''));
    }
  });
});
