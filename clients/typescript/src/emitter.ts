/** Where the SDK reports what it recovered from (a reload, a failed presence update). */
export interface Logger {
  warn(message: string, ...details: unknown[]): void;
  error(message: string, ...details: unknown[]): void;
}

/** A minimal typed event emitter: `on` returns the function that unsubscribes. */
export class Emitter<Events extends Record<string, unknown>> {
  private readonly listeners: { [K in keyof Events]?: Set<(value: Events[K]) => void> } = {};

  constructor(private readonly log: Logger = console) {}

  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    const set = (this.listeners[type] ??= new Set());
    set.add(listener);
    return () => set.delete(listener);
  }

  /** Whether anyone listens to `type` (to skip building a value nobody reads). */
  has(type: keyof Events): boolean {
    return (this.listeners[type]?.size ?? 0) > 0;
  }

  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    for (const listener of this.listeners[type] ?? []) {
      try {
        listener(value);
      } catch (e) {
        // One listener's bug must not stop the session or the other listeners.
        this.log.error("flowsync: a listener threw", e);
      }
    }
  }

  clear(): void {
    for (const key of Object.keys(this.listeners)) delete this.listeners[key as keyof Events];
  }
}
