// The event stream: one EventSource at a time, resumed across reconnects without a gap.

import { backoffDelay } from "./backoff.js";
import { HttpError } from "./errors.js";
import type { FlowsyncClient } from "./http.js";
import { EVENT_TYPES, type EventType, type FlowEvent } from "./protocol.js";

/** What the SDK needs of an `EventSource`: the browser's, or the `eventsource` package's in Node. */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  close(): void;
  onerror: ((event: Event) => unknown) | null;
  onopen: ((event: Event) => unknown) | null;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

const CLOSED = 2;

export interface StreamOptions {
  /** Only these event types (`READY`, `RESYNC` always come). */
  types?: readonly EventType[];
  /** Resume after this event id (`<epoch>-<seq>`, e.g. one stored before a page reload). */
  lastEventId?: string;
  /** A stream silent this long is dropped and resumed (default 45 s: three missed heartbeats). */
  idleTimeoutMs?: number;
  /** First reconnect delay, doubled per failure with jitter (default 250 ms). */
  backoffMs?: number;
  /** Longest reconnect delay (default 10 s). */
  maxBackoffMs?: number;
  /** Defaults to the global `EventSource`. */
  EventSource?: EventSourceConstructor;
}

export type StreamStatus = "connecting" | "open" | "offline" | "closed";

export interface StreamHandlers {
  event(event: FlowEvent): void;
  /** The stream can never work again (flow gone, token refused): it is closed. */
  fatal(error: HttpError): void;
  status?(status: StreamStatus): void;
}

/**
 * Keeps one flow's event stream open. Every sequenced event's id is remembered; a reconnect
 * resumes after it — the browser's own reconnect sends it as `Last-Event-ID`, a fresh
 * `EventSource` (after backoff, a silent stream, or {@link restore}) as `?last_event_id=`.
 */
export class EventStream {
  private source: EventSourceLike | undefined;
  private lastId: string | undefined;
  /** Where the current connection started (its `READY`). */
  private head: string | undefined;
  private failures = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  private current: StreamStatus = "connecting";
  /** Bumped per EventSource: callbacks of a replaced one are ignored. */
  private generation = 0;
  private readonly options: Required<Omit<StreamOptions, "types" | "lastEventId">> &
    Pick<StreamOptions, "types">;

  constructor(
    private readonly client: FlowsyncClient,
    readonly flowId: string,
    private readonly handlers: StreamHandlers,
    options: StreamOptions = {},
  ) {
    const EventSourceImpl = options.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
    if (!EventSourceImpl) {
      throw new Error("no EventSource: pass one (in Node, the `eventsource` package's)");
    }
    this.options = {
      idleTimeoutMs: 45_000,
      backoffMs: 250,
      maxBackoffMs: 10_000,
      ...options,
      EventSource: EventSourceImpl,
    };
    this.lastId = options.lastEventId;
    void this.connect();
  }

  /** The id of the last sequenced event seen: where a reconnect resumes. */
  get lastEventId(): string | undefined {
    return this.lastId;
  }

  get status(): StreamStatus {
    return this.current;
  }

  /** Closes the connection, as a network loss would, until {@link restore}. */
  drop(): void {
    if (this.current === "closed") return;
    this.disconnect();
    this.setStatus("offline");
  }

  /** Opens a fresh connection now (after {@link drop}, or to skip a backoff wait). */
  restore(): void {
    if (this.current === "closed") return;
    this.disconnect();
    this.failures = 0;
    void this.connect();
  }

  /** Closes the stream for good. */
  close(): void {
    this.disconnect();
    this.setStatus("closed");
  }

  private disconnect(): void {
    this.generation++;
    this.source?.close();
    this.source = undefined;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
  }

  private async connect(): Promise<void> {
    const generation = ++this.generation;
    this.setStatus("connecting");
    let url: string;
    try {
      url = await this.client.eventsUrl(this.flowId, {
        types: this.options.types,
        heartbeat: "event",
        lastEventId: this.lastId,
      });
    } catch (e) {
      if (generation === this.generation) this.retry(generation);
      return;
    }
    if (generation !== this.generation) return;
    const source = new this.options.EventSource(url);
    this.source = source;
    const live = () => generation === this.generation;
    const onMessage = (type: EventType | "PING") => (message: MessageEvent) => {
      if (!live()) return;
      this.watch();
      if (type === "PING") return;
      let event: FlowEvent;
      try {
        event = JSON.parse(message.data as string) as FlowEvent;
      } catch {
        return; // not an event of ours; the server never sends one
      }
      if (event.type === "READY") {
        this.failures = 0;
        this.setStatus("open");
        this.head = `${event.data.epoch}-${event.data.seq}`;
        // Nothing sequenced seen yet: resume from the head this stream started at, so a
        // reconnect cannot skip what happened while it was down.
        this.lastId ??= this.head;
      } else if (event.type === "RESYNC") {
        // The old position is gone; the stream goes on live from its head.
        this.lastId = this.head;
      } else if (event.seq !== undefined && message.lastEventId) {
        this.lastId = message.lastEventId;
      }
      this.handlers.event(event);
    };
    for (const type of [...EVENT_TYPES, "PING" as const]) {
      source.addEventListener(type, onMessage(type));
    }
    source.onopen = () => {
      if (live()) this.watch();
    };
    source.onerror = () => {
      if (!live()) return;
      this.failures++;
      // The browser reconnects by itself (with `Last-Event-ID`) while `CONNECTING`: let it
      // try once; after that, or when it gave up (`CLOSED`: an HTTP error), reconnect here.
      if (source.readyState !== CLOSED && this.failures === 1) {
        this.setStatus("connecting");
        this.watch(); // a reconnect that hangs is taken over too
        return;
      }
      this.disconnect();
      this.retry(this.generation, source.readyState === CLOSED);
    };
    this.watch();
  }

  /** After a failure: finds out whether the stream can work at all, then reconnects after backoff. */
  private retry(generation: number, refused = false): void {
    this.setStatus("connecting");
    const delay = backoffDelay(this.failures, this.options.backoffMs, this.options.maxBackoffMs);
    this.retryTimer = setTimeout(async () => {
      if (generation !== this.generation) return;
      if (refused) {
        // An EventSource does not tell why it was refused: ask the API the same question.
        try {
          await this.client.flow(this.flowId);
        } catch (e) {
          if (e instanceof HttpError && [401, 403, 404, 410].includes(e.status)) {
            if (generation !== this.generation) return;
            this.close();
            this.handlers.fatal(e);
            return;
          }
        }
        if (generation !== this.generation) return;
      }
      void this.connect();
    }, delay);
  }

  /** (Re)arms the silence watchdog. */
  private watch(): void {
    clearTimeout(this.idleTimer);
    const generation = this.generation;
    this.idleTimer = setTimeout(() => {
      if (generation !== this.generation) return;
      this.failures++;
      this.disconnect();
      this.retry(this.generation);
    }, this.options.idleTimeoutMs);
  }

  private setStatus(status: StreamStatus): void {
    if (this.current === status || this.current === "closed") return;
    this.current = status;
    this.handlers.status?.(status);
  }
}
