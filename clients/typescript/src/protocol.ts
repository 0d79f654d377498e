// The wire protocol v1 (DESIGN §3) as TypeScript types. Ids are strings, times RFC 3339.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object. */
export type JsonObject = { [key: string]: Json };

export interface Position {
  x: number;
  y: number;
}

export interface Size {
  w: number;
  h: number;
}

export interface Node {
  id: string;
  type: string;
  position: Position;
  size?: Size;
  data: JsonObject;
  /** The flow version at which this node last changed. */
  version: number;
}

export interface Edge {
  id: string;
  source: string;
  target: string;
  source_handle?: string;
  target_handle?: string;
  data: JsonObject;
  version: number;
}

export interface Flow {
  id: string;
  name: string;
  /** Applied ops so far. */
  version: number;
  nodes: Node[];
  edges: Edge[];
  meta: JsonObject;
  created_at: string;
  updated_at: string;
}

export type ActorKind = "user" | "agent" | "worker" | "system";

export interface Actor {
  id: string;
  kind: ActorKind;
  name: string;
}

/** A node as `node.add` takes it: the server makes an id when none is given. */
export type NewNode = Omit<Node, "id" | "version" | "data"> & { id?: string; data?: JsonObject };
/** An edge as `edge.add` takes it. */
export type NewEdge = Omit<Edge, "id" | "version" | "data"> & { id?: string; data?: JsonObject };

/** A target of `text.replace`. */
export type TextTarget = { range: [number, number] } | { regex: string; all?: boolean } | { heading: string };

/** An op's body, without `op_id` / `base_version`. */
export type OpBody =
  | { type: "node.add"; node: NewNode }
  | { type: "node.update"; id: string; patch?: JsonObject; /** A new node type. */ node_type?: string }
  | { type: "node.move"; id: string; position: Position }
  | { type: "node.resize"; id: string; size: Size }
  | { type: "node.delete"; id: string }
  | { type: "edge.add"; edge: NewEdge }
  | { type: "edge.update"; id: string; patch: JsonObject }
  | { type: "edge.delete"; id: string }
  | { type: "flow.update"; name?: string; meta_patch?: JsonObject }
  | { type: "text.append"; id: string; path: string; text: string }
  | { type: "text.insert"; id: string; path: string; at: number; text: string }
  | { type: "text.delete"; id: string; path: string; at: number; len: number }
  | { type: "text.replace"; id: string; path: string; target: TextTarget; text: string }
  | { type: "undo"; version?: number }
  | { type: "redo" };

/** An op as `POST …/ops` takes it. */
export type Op = OpBody & {
  /** Client-made, ≤ 128 chars; a retried op id is applied at most once. */
  op_id: string;
  /** The flow version the client saw: refused with `version_mismatch` when the target changed since. */
  base_version?: number;
};

/** An op to send: the SDK makes an op id when none is given. */
export type OpInput = OpBody & { op_id?: string; base_version?: number };

/** The body of `POST …/ops`. */
export interface OpsRequest {
  client_id: string;
  ops: readonly Op[];
}

/** One entity's new state (or a text splice) in a `SYNC_CANVAS` or history entry. */
export type Change =
  | { kind: "node.upsert"; node: Node }
  | { kind: "node.delete"; id: string }
  | { kind: "edge.upsert"; edge: Edge }
  | { kind: "edge.delete"; id: string }
  | { kind: "flow.update"; name: string; meta: JsonObject }
  | {
      kind: "node.splice";
      id: string;
      /** A JSON pointer into the node's `data`. */
      path: string;
      /** UTF-16 code units, as JavaScript strings count. */
      at: number;
      delete: number;
      insert: string;
      version: number;
    };

export interface AppliedOp {
  op_id: string;
  type: string;
  version: number;
  changes: Change[];
}

export interface Ready {
  connection_id: string;
  epoch: string;
  seq: number;
  resumed: boolean;
  version: number;
}

export interface SyncCanvas {
  prev_version: number;
  version: number;
  client_id: string;
  ops: AppliedOp[];
}

export type ConflictReason =
  | "version_mismatch"
  | "not_found"
  | "duplicate"
  | "invalid"
  | "undo_conflict"
  | "skipped"
  | (string & {});

/** What kind of entity an `EntityRef` names. */
export type EntityKind = "node" | "edge" | "flow";

/** The entity a conflict is about. */
export interface EntityRef {
  kind: EntityKind;
  id: string;
  /** Its current version, when it exists. */
  version?: number;
}

export interface Conflict {
  op_id: string;
  client_id: string;
  reason: ConflictReason;
  message: string;
  current_version: number;
  /** The entity in the way, when there is one. */
  entity?: EntityRef;
}

export type ExecutionStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export type NodeStatus = "pending" | "running" | "succeeded" | "failed" | "skipped" | "cancelled";

export interface ExecutionUpdate {
  execution_id: string;
  status?: ExecutionStatus;
  node_id?: string;
  node_status?: NodeStatus;
  progress?: number;
  output?: Json;
  /**
   * Set when the output was too large to travel in events: its size in bytes; `output` is then a
   * preview (the start of its text) and the execution's `GET` serves it whole.
   */
  output_bytes?: number;
  error?: string;
}

export interface LogStream {
  execution_id: string;
  node_id: string;
  index: number;
  chunk: string;
  done: boolean;
}

export interface Presence {
  action: "join" | "leave" | "update";
  connection_id: string;
  actor: Actor;
  state?: Json;
}

export interface Resync {
  reason: string;
}

/** Event type → its `data`. */
export interface EventData {
  READY: Ready;
  SYNC_CANVAS: SyncCanvas;
  CONFLICT: Conflict;
  EXECUTION_UPDATE: ExecutionUpdate;
  LOG_STREAM: LogStream;
  PRESENCE: Presence;
  RESYNC: Resync;
  FLOW_DELETED: Record<string, never>;
}

export type EventType = keyof EventData;
export const EVENT_TYPES: readonly EventType[] = [
  "READY",
  "SYNC_CANVAS",
  "CONFLICT",
  "EXECUTION_UPDATE",
  "LOG_STREAM",
  "PRESENCE",
  "RESYNC",
  "FLOW_DELETED",
];

/** One event as the stream carries it. */
export type FlowEvent = {
  [T in EventType]: {
    type: T;
    flow_id: string;
    /** The flow's delivery sequence; absent on `READY`, `RESYNC`, `PRESENCE`. */
    seq?: number;
    ts: string;
    actor: Actor;
    /** The W3C `traceparent` of the request that caused it, when traced. */
    traceparent?: string;
    data: EventData[T];
  };
}[EventType];

/** An event of one type. */
export type EventOf<T extends EventType> = Extract<FlowEvent, { type: T }>;

/** One applied op of the audit log (`GET …/history`). */
export interface HistoryEntry {
  version: number;
  op_id: string;
  actor: Actor;
  ts: string;
  op: Op;
  changes: Change[];
}

export interface NodeRun {
  node_id: string;
  status: NodeStatus;
  output?: Json;
  error?: string;
  /** Streamed text so far: stored as it streams (a chunk before it is published). */
  log: string;
  /**
   * The chunks `log` holds: the index of the node's next `LOG_STREAM` chunk. A client that reads
   * the execution mid-run shows `log`, then appends the chunks from this index on.
   */
  log_index: number;
}

export interface Execution {
  id: string;
  flow_id: string;
  flow_version: number;
  status: ExecutionStatus;
  error?: string;
  created_at: string;
  updated_at: string;
  nodes: NodeRun[];
}

/** A connection of a flow (`GET …/presence`). */
export interface PresenceEntry {
  connection_id: string;
  actor: Actor;
  since: string;
}

/** The body of every HTTP error. */
export interface ErrorBody {
  error: { code: string; message: string; details?: JsonObject };
}
