// The canvas as a client holds it: the dumb reducer. Every change carries the entity's full
// new state (or a splice of one string), so applying needs no domain logic.

import type { Change, Edge, Flow, Json, JsonObject, Node } from "./protocol.js";

/** A change that does not fit this copy of the canvas: the copy is wrong, reload it. */
export class CanvasMismatch extends Error {
  override readonly name = "CanvasMismatch";
}

/** An immutable view of the canvas at one version. */
export interface CanvasState {
  readonly id: string;
  readonly name: string;
  readonly version: number;
  readonly meta: JsonObject;
  readonly nodes: readonly Node[];
  readonly edges: readonly Edge[];
}

/**
 * One flow's nodes and edges at a version. Entities are never mutated: a change replaces the
 * changed node or edge with a new object, so views can compare by reference.
 */
export class Canvas {
  private constructor(
    readonly id: string,
    private _name: string,
    private _version: number,
    private _meta: JsonObject,
    private readonly nodes: Map<string, Node>,
    private readonly edges: Map<string, Edge>,
    private view: CanvasState | undefined = undefined,
  ) {}

  static fromFlow(flow: Flow): Canvas {
    return new Canvas(
      flow.id,
      flow.name,
      flow.version,
      flow.meta ?? {},
      new Map(flow.nodes.map((n) => [n.id, n])),
      new Map(flow.edges.map((e) => [e.id, e])),
    );
  }

  get version(): number {
    return this._version;
  }

  get name(): string {
    return this._name;
  }

  node(id: string): Node | undefined {
    return this.nodes.get(id);
  }

  edge(id: string): Edge | undefined {
    return this.edges.get(id);
  }

  /** The string at `path` (a JSON pointer into the node's `data`), if both exist. */
  text(nodeId: string, path: string): string | undefined {
    const value = lookup(this.nodes.get(nodeId)?.data, parsePointer(path));
    return typeof value === "string" ? value : undefined;
  }

  /** The canvas as an immutable value; the same object until the next change. */
  state(): CanvasState {
    this.view ??= Object.freeze({
      id: this.id,
      name: this._name,
      version: this._version,
      meta: this._meta,
      nodes: Object.freeze([...this.nodes.values()]),
      edges: Object.freeze([...this.edges.values()]),
    });
    return this.view;
  }

  /**
   * Applies the changes of the op that made `version`; false when the canvas already holds
   * it. All or nothing: a change that does not fit throws {@link CanvasMismatch} and leaves
   * the canvas as it was.
   */
  apply(version: number, changes: readonly Change[]): boolean {
    if (version <= this._version) return false; // already contained
    const nodes = new Map<string, Node | undefined>();
    const edges = new Map<string, Edge | undefined>();
    let flow: { name: string; meta: JsonObject } | undefined;
    const node = (id: string) => (nodes.has(id) ? nodes.get(id) : this.nodes.get(id));
    for (const change of changes) {
      switch (change.kind) {
        case "node.upsert":
          nodes.set(change.node.id, change.node);
          break;
        case "node.delete":
          nodes.set(change.id, undefined);
          break;
        case "edge.upsert":
          edges.set(change.edge.id, change.edge);
          break;
        case "edge.delete":
          edges.set(change.id, undefined);
          break;
        case "flow.update":
          flow = { name: change.name, meta: change.meta };
          break;
        case "node.splice": {
          const current = node(change.id);
          if (!current) throw new CanvasMismatch(`splice of missing node ${change.id}`);
          nodes.set(change.id, {
            ...current,
            data: splice(current.data, change.path, change.at, change.delete, change.insert),
            version: change.version,
          });
          break;
        }
        default:
          throw new CanvasMismatch(`unknown change ${(change as { kind: string }).kind}`);
      }
    }
    for (const [id, n] of nodes) n ? this.nodes.set(id, n) : this.nodes.delete(id);
    for (const [id, e] of edges) e ? this.edges.set(id, e) : this.edges.delete(id);
    if (flow) {
      this._name = flow.name;
      this._meta = flow.meta;
    }
    this._version = version;
    this.view = undefined;
    return true;
  }
}

/** RFC 6901: `/a/b~1c` → `["a", "b/c"]`. */
export function parsePointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw new CanvasMismatch(`bad JSON pointer ${JSON.stringify(path)}`);
  return path
    .slice(1)
    .split("/")
    .map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
}

function lookup(data: Json | undefined, tokens: readonly string[]): Json | undefined {
  let at: Json | undefined = data;
  for (const t of tokens) {
    if (at === null || typeof at !== "object") return undefined;
    at = Array.isArray(at) ? at[Number(t)] : at[t];
  }
  return at;
}

/** A copy of `data` with the string at `path` spliced; offsets in UTF-16 code units. */
function splice(data: JsonObject, path: string, at: number, del: number, insert: string): JsonObject {
  const tokens = parsePointer(path);
  if (tokens.length === 0) throw new CanvasMismatch("splice of the whole data object");
  const rebuild = (value: Json | undefined, depth: number): Json => {
    if (depth === tokens.length) {
      if (typeof value !== "string" || at + del > value.length) {
        throw new CanvasMismatch(`splice ${at}+${del} does not fit ${path}`);
      }
      return value.slice(0, at) + insert + value.slice(at + del);
    }
    const key = tokens[depth]!;
    if (value === null || typeof value !== "object") throw new CanvasMismatch(`no ${path} to splice`);
    if (Array.isArray(value)) {
      const i = Number(key);
      if (!Number.isInteger(i) || i < 0 || i >= value.length) throw new CanvasMismatch(`no ${path} to splice`);
      const copy = [...value];
      copy[i] = rebuild(value[i], depth + 1);
      return copy;
    }
    return { ...value, [key]: rebuild(value[key], depth + 1) };
  };
  return rebuild(data, 0) as JsonObject;
}
