// @flowsync/client: the browser and Node SDK of flowsync (DESIGN §3).
export { Canvas, CanvasMismatch, parsePointer, type CanvasState } from "./canvas.js";
export type { Logger } from "./emitter.js";
export { ClosedError, ConflictError, HttpError, OpTimeoutError } from "./errors.js";
export { FlowsyncClient, type ClientOptions, type EventsUrlOptions, type TokenSource } from "./http.js";
export {
  FlowSession,
  newOpId,
  type Applied,
  type ChangeOf,
  type ExecutionState,
  type LogChunk,
  type NodeRunState,
  type PresenceState,
  type SessionEvents,
  type SessionOptions,
} from "./session.js";
export {
  EventStream,
  type EventSourceConstructor,
  type EventSourceLike,
  type StreamHandlers,
  type StreamOptions,
  type StreamStatus,
} from "./stream.js";
export * from "./protocol.js";
