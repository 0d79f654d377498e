// @flowsync/client/angular: the SDK as an injectable Angular service with RxJS Observables.
//
// The EventSource and every timer of the SDK run outside the Angular zone (a token stream
// must not trigger change detection per chunk from inside the SDK); each emission re-enters
// the zone, so templates and `async` pipes update as usual.

import { DestroyRef, InjectionToken, NgZone, inject, type Provider } from "@angular/core";
import { BehaviorSubject, Observable, Subject, map } from "rxjs";

import type { CanvasState } from "../canvas.js";
import { FlowsyncClient, type ClientOptions } from "../http.js";
import type { Conflict, FlowEvent, Json, OpInput } from "../protocol.js";
import {
  FlowSession,
  type Applied,
  type ExecutionState,
  type LogChunk,
  type PresenceState,
  type SessionOptions,
} from "../session.js";
import type { StreamStatus } from "../stream.js";

export interface FlowsyncOptions extends ClientOptions {
  /** Options of every session this service opens. */
  session?: SessionOptions;
}

export const FLOWSYNC_OPTIONS = new InjectionToken<FlowsyncOptions>("FLOWSYNC_OPTIONS");

/**
 * Provides {@link FlowsyncService}: `bootstrapApplication(App, {providers: [provideFlowsync({baseUrl: ""})]})`.
 */
export function provideFlowsync(options: FlowsyncOptions): Provider[] {
  return [
    { provide: FLOWSYNC_OPTIONS, useValue: options },
    {
      provide: FlowsyncService,
      useFactory: () => {
        const service = new FlowsyncService(inject(NgZone), inject(FLOWSYNC_OPTIONS));
        inject(DestroyRef).onDestroy(() => service.closeAll());
        return service;
      },
    },
  ];
}

/** Opens flows. Injected with `inject(FlowsyncService)`. */
export class FlowsyncService {
  readonly client: FlowsyncClient;
  private readonly open = new Set<FlowConnection>();

  constructor(
    private readonly zone: NgZone,
    private readonly options: FlowsyncOptions,
  ) {
    this.client = new FlowsyncClient(options);
  }

  /** Subscribes to a flow and loads it; resolves (inside the zone) once the canvas is there. */
  async connect(flowId: string, options: SessionOptions = {}): Promise<FlowConnection> {
    const session = await this.zone.runOutsideAngular(() =>
      FlowSession.open(this.client, flowId, { ...this.options.session, ...options }),
    );
    const connection = new FlowConnection(session, this.zone, () => this.open.delete(connection));
    this.open.add(connection);
    return this.zone.run(() => connection);
  }

  closeAll(): void {
    for (const c of [...this.open]) c.close();
  }
}

/** One open flow: its state as Observables, and the ways to change it. */
export class FlowConnection {
  /** The canvas after every change; replays the current one to new subscribers. */
  readonly canvas$: Observable<CanvasState>;
  /** Every execution this session knows, after each change. */
  readonly executions$: Observable<ReadonlyMap<string, ExecutionState>>;
  /** Each streamed log chunk, with the node's text so far. */
  readonly logs$: Observable<LogChunk>;
  /** Who is connected. */
  readonly presence$: Observable<readonly PresenceState[]>;
  /** Every refused op (anyone's). */
  readonly conflicts$: Observable<Conflict>;
  /** Every event as received. */
  readonly events$: Observable<FlowEvent>;
  readonly status$: Observable<StreamStatus>;

  private readonly canvas: BehaviorSubject<CanvasState>;
  private readonly executions: BehaviorSubject<ReadonlyMap<string, ExecutionState>>;
  private readonly presence: BehaviorSubject<readonly PresenceState[]>;
  private readonly status: BehaviorSubject<StreamStatus>;
  private readonly subjects: { complete(): void }[];

  constructor(
    readonly session: FlowSession,
    private readonly zone: NgZone,
    private readonly onClose: () => void,
  ) {
    this.canvas = new BehaviorSubject(session.canvas);
    this.executions = new BehaviorSubject<ReadonlyMap<string, ExecutionState>>(new Map(session.executions));
    this.presence = new BehaviorSubject(session.presence);
    this.status = new BehaviorSubject(session.stream.status);
    const logs = new Subject<LogChunk>();
    const conflicts = new Subject<Conflict>();
    const events = new Subject<FlowEvent>();
    this.subjects = [this.canvas, this.executions, this.presence, this.status, logs, conflicts, events];
    const into =
      <T>(subject: Subject<T>) =>
      (value: T) =>
        zone.run(() => subject.next(value));
    session.on("canvas", into(this.canvas));
    session.on("execution", () => into(this.executions)(new Map(session.executions)));
    session.on("presence", into(this.presence));
    session.on("status", into(this.status));
    session.on("log", into(logs));
    session.on("conflict", into(conflicts));
    session.on("event", into(events));
    session.on("closed", () => zone.run(() => this.complete()));
    this.canvas$ = this.canvas.asObservable();
    this.executions$ = this.executions.asObservable();
    this.presence$ = this.presence.asObservable();
    this.status$ = this.status.asObservable();
    this.logs$ = logs.asObservable();
    this.conflicts$ = conflicts.asObservable();
    this.events$ = events.asObservable();
  }

  /** One execution's state as it changes. */
  execution$(executionId: string): Observable<ExecutionState | undefined> {
    return this.executions$.pipe(map((all) => all.get(executionId)));
  }

  /**
   * The ops' results, one promise per op (see {@link FlowSession.sendOps}); they settle inside
   * the zone and, like the session's, are marked handled (refusals are also `conflicts$`).
   */
  sendOps(ops: readonly OpInput[]): Promise<Applied>[] {
    return this.zone
      .runOutsideAngular(() => this.session.sendOps(ops))
      .map((p) => {
        const settled = this.inZone(p);
        settled.catch(() => {});
        return settled;
      });
  }

  sendOp(op: OpInput): Promise<Applied> {
    return this.sendOps([op])[0]!;
  }

  startExecution(): Promise<string> {
    return this.inZone(this.zone.runOutsideAngular(() => this.session.startExecution()));
  }

  cancelExecution(executionId: string): Promise<void> {
    return this.inZone(this.zone.runOutsideAngular(() => this.session.cancelExecution(executionId)));
  }

  /** My cursor/selection, throttled. */
  setPresence(state: Json): void {
    this.zone.runOutsideAngular(() => this.session.setPresence(state));
  }

  close(): void {
    this.session.close();
    this.complete();
  }

  private complete(): void {
    for (const s of this.subjects) s.complete();
    this.onClose();
  }

  private inZone<T>(promise: Promise<T>): Promise<T> {
    return new Promise((resolve, reject) =>
      promise.then(
        (v) => this.zone.run(() => resolve(v)),
        (e: unknown) => this.zone.run(() => reject(e)),
      ),
    );
  }
}
