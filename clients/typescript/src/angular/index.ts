// @flowsync/client/angular: the SDK as an injectable Angular service, its state as signals
// (for templates and `computed`) and as RxJS Observables (for pipelines).
//
// The EventSource and every timer of the SDK run outside the Angular zone (a token stream
// must not trigger change detection per chunk from inside the SDK); each emission re-enters
// the zone, so templates and `async` pipes update as usual; with zoneless change detection
// the signals schedule it.

import {
  DestroyRef,
  InjectionToken,
  NgZone,
  inject,
  signal,
  type Provider,
  type Signal,
  type WritableSignal,
} from "@angular/core";
import { BehaviorSubject, Observable, Subject, map } from "rxjs";

import type { CanvasState } from "../canvas.js";
import { FlowsyncClient, type ClientOptions } from "../http.js";
import type { Conflict, FlowEvent, Json, OpInput } from "../protocol.js";
import {
  FlowSession,
  type Applied,
  type ChangeOf,
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

/** One open flow: its state as signals and Observables, and the ways to change it. */
export class FlowConnection {
  /** The canvas now. */
  readonly canvas: Signal<CanvasState>;
  /** Every execution this session knows, by id. */
  readonly executions: Signal<ReadonlyMap<string, ExecutionState>>;
  /** Who is connected (this session too, marked `self`). */
  readonly presence: Signal<readonly PresenceState[]>;
  /** The event stream's state: connecting, open, offline (retrying) or closed. */
  readonly status: Signal<StreamStatus>;

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
  /** Each op as the canvas takes it in, in version order, each once (see the session's `change`). */
  readonly changes$: Observable<ChangeOf>;
  /** The canvas replaced by a fresh copy from the server (see the session's `reload`). */
  readonly reloads$: Observable<CanvasState>;
  readonly status$: Observable<StreamStatus>;

  private readonly subjects: { complete(): void }[];

  constructor(
    readonly session: FlowSession,
    private readonly zone: NgZone,
    private readonly onClose: () => void,
  ) {
    // Each state is one signal and one subject, set together inside the zone.
    const state = <T>(initial: T) => ({ signal: signal(initial), subject: new BehaviorSubject(initial) });
    const canvas = state(session.canvas);
    const executions = state<ReadonlyMap<string, ExecutionState>>(new Map(session.executions));
    const presence = state(session.presence);
    const status = state(session.stream.status);
    const logs = new Subject<LogChunk>();
    const conflicts = new Subject<Conflict>();
    const events = new Subject<FlowEvent>();
    const changes = new Subject<ChangeOf>();
    const reloads = new Subject<CanvasState>();
    const states = [canvas, executions, presence, status].map((s) => s.subject);
    this.subjects = [...states, logs, conflicts, events, changes, reloads];
    const into =
      <T>(subject: Subject<T>, value?: WritableSignal<T>) =>
      (next: T) =>
        zone.run(() => {
          value?.set(next);
          subject.next(next);
        });
    const follow = <T>(s: { signal: WritableSignal<T>; subject: BehaviorSubject<T> }) => into(s.subject, s.signal);
    session.on("canvas", follow(canvas));
    session.on("execution", () => follow(executions)(new Map(session.executions)));
    session.on("presence", follow(presence));
    session.on("status", follow(status));
    session.on("log", into(logs));
    session.on("conflict", into(conflicts));
    session.on("event", into(events));
    session.on("change", into(changes));
    session.on("reload", into(reloads));
    session.on("closed", () => zone.run(() => this.complete()));
    this.canvas = canvas.signal.asReadonly();
    this.executions = executions.signal.asReadonly();
    this.presence = presence.signal.asReadonly();
    this.status = status.signal.asReadonly();
    this.canvas$ = canvas.subject.asObservable();
    this.executions$ = executions.subject.asObservable();
    this.presence$ = presence.subject.asObservable();
    this.status$ = status.subject.asObservable();
    this.logs$ = logs.asObservable();
    this.conflicts$ = conflicts.asObservable();
    this.events$ = events.asObservable();
    this.changes$ = changes.asObservable();
    this.reloads$ = reloads.asObservable();
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
