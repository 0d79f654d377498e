import type { Conflict, JsonObject } from "./protocol.js";

/** The server refused a request (`{"error":{code,message,details}}`), or could not be reached. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    /** The HTTP status; 0 when no answer came (network down, timeout). */
    readonly status: number,
    /** The error's `code` (`flow_not_found`, `rate_limited`, …), or `network` / `timeout`. */
    readonly code: string,
    message: string,
    readonly details?: JsonObject,
  ) {
    super(message);
  }
}

/** An op was refused: its `CONFLICT` event. The op applied nothing. */
export class ConflictError extends Error {
  override readonly name = "ConflictError";
  constructor(readonly conflict: Conflict) {
    super(`op ${conflict.op_id} refused (${conflict.reason}): ${conflict.message}`);
  }

  get reason(): string {
    return this.conflict.reason;
  }
}

/** No result arrived for an op after every attempt (each sent with the same op id). */
export class OpTimeoutError extends Error {
  override readonly name = "OpTimeoutError";
  constructor(
    readonly opId: string,
    readonly attempts: number,
  ) {
    super(`no result for op ${opId} after ${attempts} attempts`);
  }
}

/** The session ended (closed, flow deleted, access lost) before the result came. */
export class ClosedError extends Error {
  override readonly name = "ClosedError";
  constructor(readonly reason: string) {
    super(`session closed: ${reason}`);
  }
}
