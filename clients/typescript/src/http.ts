// The HTTP half of the protocol: every API endpoint, with retries only where repeating is
// harmless (reads, ops by op id, cancel, presence).

import { backoffDelay, sleep } from "./backoff.js";
import { HttpError } from "./errors.js";
import type {
  ErrorBody,
  EventType,
  Execution,
  Flow,
  HistoryEntry,
  Json,
  JsonObject,
  Op,
  OpsRequest,
  PresenceEntry,
} from "./protocol.js";

/** A bearer token, or a function that returns the current one (refreshed tokens). */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** The API's origin and path prefix, e.g. `http://127.0.0.1:8080`; `""` for this page's origin. */
  baseUrl: string;
  /** Where event streams are served when the gateway is apart from the API (default `baseUrl`). */
  eventsUrl?: string;
  token?: TokenSource;
  /** Sends a request; defaults to the global `fetch`. */
  fetch?: typeof fetch;
  /** Tries of a safe request before its error is returned (default 4). */
  attempts?: number;
  /** First retry delay, doubled per retry with jitter (default 100 ms). */
  backoffMs?: number;
  /** Longest retry delay (default 5 s). */
  maxBackoffMs?: number;
  /** A request without an answer for this long fails (default 10 s). */
  requestTimeoutMs?: number;
}

/** Whether a failed request may be sent again. */
const enum Repeat {
  Safe,
  Once,
}

export interface EventsUrlOptions {
  /** Resume after this event (`<epoch>-<seq>`), for a fresh `EventSource` that cannot set headers. */
  lastEventId?: string;
  types?: readonly EventType[];
  /** `event`: heartbeats as `PING` events, which an `EventSource` can see (comments it cannot). */
  heartbeat?: "comment" | "event";
}

/** Every HTTP endpoint of the API. */
export class FlowsyncClient {
  readonly options: Required<Omit<ClientOptions, "token" | "eventsUrl">> &
    Pick<ClientOptions, "token" | "eventsUrl">;

  constructor(options: ClientOptions) {
    const fetchFn = options.fetch ?? globalThis.fetch;
    this.options = {
      attempts: 4,
      backoffMs: 100,
      maxBackoffMs: 5000,
      requestTimeoutMs: 10_000,
      ...options,
      baseUrl: options.baseUrl.replace(/\/+$/, ""),
      // Called unbound: a browser's fetch refuses a `this` other than the window.
      fetch: (input, init) => fetchFn(input, init),
    };
  }

  createFlow(flow: { id?: string; name: string; meta?: JsonObject }): Promise<Flow> {
    return this.call(Repeat.Once, "POST", "/v1/flows", flow);
  }

  /** The flow's state; `at` reads it as it was at that version. */
  flow(id: string, at?: number): Promise<Flow> {
    const query = at === undefined ? "" : `?at=${at}`;
    return this.call(Repeat.Safe, "GET", `${flowPath(id)}${query}`);
  }

  deleteFlow(id: string): Promise<void> {
    return this.call(Repeat.Safe, "DELETE", flowPath(id));
  }

  /** Applied ops after `after`, oldest first, at most `limit`. */
  history(id: string, after: number, limit = 500): Promise<HistoryEntry[]> {
    return this.call(Repeat.Safe, "GET", `${flowPath(id)}/history?after=${after}&limit=${limit}`);
  }

  /** Posts ops (`202`); their results come over the stream. Safe to repeat: op ids apply once. */
  postOps(id: string, clientId: string, ops: readonly Op[], ifMatch?: number): Promise<void> {
    const headers = ifMatch === undefined ? undefined : { "if-match": `W/"${ifMatch}"` };
    const body: OpsRequest = { client_id: clientId, ops };
    return this.call(Repeat.Safe, "POST", `${flowPath(id)}/ops`, body, headers);
  }

  /** Starts an execution of the flow as it is now. Sent once: a repeat would start another. */
  async startExecution(id: string): Promise<string> {
    const answer: { execution_id: string } = await this.call(Repeat.Once, "POST", `${flowPath(id)}/executions`);
    return answer.execution_id;
  }

  execution(id: string, executionId: string): Promise<Execution> {
    return this.call(Repeat.Safe, "GET", `${flowPath(id)}/executions/${encodeURIComponent(executionId)}`);
  }

  /** The flow's executions, newest first. */
  async executions(id: string): Promise<Execution[]> {
    const answer: { executions: Execution[] } = await this.call(Repeat.Safe, "GET", `${flowPath(id)}/executions`);
    return answer.executions;
  }

  cancelExecution(id: string, executionId: string): Promise<void> {
    const path = `${flowPath(id)}/executions/${encodeURIComponent(executionId)}/cancel`;
    return this.call(Repeat.Safe, "POST", path);
  }

  /** The flow's open connections, oldest first. */
  async presence(id: string): Promise<PresenceEntry[]> {
    const answer: { connections: PresenceEntry[] } = await this.call(Repeat.Safe, "GET", `${flowPath(id)}/presence`);
    return answer.connections;
  }

  /** Announces a connection's ephemeral state (cursor, selection) as `PRESENCE update`. */
  setPresence(id: string, connectionId: string, state: Json): Promise<void> {
    return this.call(Repeat.Safe, "POST", `${flowPath(id)}/presence`, { connection_id: connectionId, state });
  }

  /** The URL of the flow's event stream (the token rides as `access_token`: EventSource sets no headers). */
  async eventsUrl(id: string, options: EventsUrlOptions = {}): Promise<string> {
    const base = (this.options.eventsUrl ?? this.options.baseUrl).replace(/\/+$/, "");
    const query = new URLSearchParams();
    if (options.types?.length) query.set("types", options.types.join(","));
    if (options.heartbeat) query.set("heartbeat", options.heartbeat);
    if (options.lastEventId) query.set("last_event_id", options.lastEventId);
    const token = await this.token();
    if (token) query.set("access_token", token);
    const q = query.toString();
    return `${base}${flowPath(id)}/events${q ? `?${q}` : ""}`;
  }

  private async token(): Promise<string | undefined> {
    const t = this.options.token;
    return typeof t === "function" ? await t() : t;
  }

  private async call<T>(
    repeat: Repeat,
    method: string,
    path: string,
    body?: unknown,
    extraHeaders?: Record<string, string>,
  ): Promise<T> {
    const attempts = repeat === Repeat.Safe ? Math.max(1, this.options.attempts) : 1;
    for (let attempt = 0; ; attempt++) {
      let failure: HttpError;
      let wait: number | undefined;
      try {
        return await this.once<T>(method, path, body, extraHeaders);
      } catch (e) {
        if (!(e instanceof HttpError)) throw e;
        failure = e;
        if (e.status === 429) wait = retryAfterMs(e);
      }
      const transient = failure.status === 0 || failure.status === 429 || failure.status >= 500;
      if (!transient || attempt + 1 >= attempts) throw failure;
      await sleep(wait ?? backoffDelay(attempt, this.options.backoffMs, this.options.maxBackoffMs));
    }
  }

  private async once<T>(method: string, path: string, body?: unknown, extraHeaders?: Record<string, string>): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json", ...extraHeaders };
    const token = await this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    try {
      response = await this.options.fetch(`${this.options.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.options.requestTimeoutMs),
      });
    } catch (e) {
      const timedOut = e instanceof Error && e.name === "TimeoutError";
      const message = `${method} ${path}: ${e instanceof Error ? e.message : String(e)}`;
      throw new HttpError(0, timedOut ? "timeout" : "network", message);
    }
    const text = await response.text();
    if (!response.ok) {
      let error: ErrorBody["error"] | undefined;
      try {
        error = (JSON.parse(text) as ErrorBody).error;
      } catch {
        // Not ours (a proxy's page): the status says enough.
      }
      const details: JsonObject = { ...error?.details };
      const retryAfter = response.headers.get("retry-after");
      if (retryAfter !== null) details.retry_after = retryAfter;
      throw new HttpError(
        response.status,
        error?.code ?? `http_${response.status}`,
        error?.message ?? `${method} ${path}: ${response.status} ${response.statusText}`,
        details,
      );
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }
}

function flowPath(id: string): string {
  return `/v1/flows/${encodeURIComponent(id)}`;
}

/** `Retry-After` (seconds) of a 429, in ms. */
function retryAfterMs(e: HttpError): number | undefined {
  const seconds = Number(e.details?.retry_after);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
