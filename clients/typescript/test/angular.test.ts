// The Angular entry point with a real NgZone (zone.js) and Angular's injector, against the
// real one binary: the EventSource is made outside the Angular zone, every emission and
// every op result arrives inside it.

import "zone.js/node";

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Injector, NgZone } from "@angular/core";
import { EventSource } from "eventsource";
import { filter, firstValueFrom } from "rxjs";

import { FlowsyncService, provideFlowsync } from "../src/angular/index.js";
import { FlowsyncClient } from "../src/index.js";
import { startSystem, type System } from "./support.js";

let system: System;
before(async () => {
  system = await startSystem();
  await new FlowsyncClient({ baseUrl: system.url }).createFlow({ id: "ng", name: "ng" });
});
after(() => system.stop());

/** Records whether each EventSource was made inside the Angular zone. */
const madeInZone: boolean[] = [];
class WatchedEventSource extends EventSource {
  constructor(url: string) {
    super(url);
    madeInZone.push(NgZone.isInAngularZone());
  }
}

test("the service streams outside the zone and emits inside it", async () => {
  const zone = new NgZone({ enableLongStackTrace: false });
  const injector = Injector.create({
    providers: [
      { provide: NgZone, useValue: zone },
      provideFlowsync({ baseUrl: system.url, session: { EventSource: WatchedEventSource } }),
    ],
  });
  const service = injector.get(FlowsyncService);
  assert.equal(injector.get(FlowsyncService), service, "one instance per injector");

  const flow = await zone.run(() => service.connect("ng"));
  assert.deepEqual(madeInZone, [false], "the EventSource lives outside Angular's zone");

  const emissions: boolean[] = [];
  // Subscribed outside the zone: the replayed value comes there, later ones inside it.
  flow.canvas$.subscribe(() => emissions.push(NgZone.isInAngularZone()));
  const added = firstValueFrom(flow.canvas$.pipe(filter((c) => c.nodes.length === 1)));
  const applied = await zone.run(() =>
    flow.sendOp({ type: "node.add", node: { id: "n1", type: "note", position: { x: 1, y: 2 } } }).then((a) => {
      assert.ok(NgZone.isInAngularZone(), "an op result settles inside the zone");
      return a;
    }),
  );
  assert.equal(applied.version, 1);
  const canvas = await added;
  assert.deepEqual(canvas.nodes[0]!.position, { x: 1, y: 2 });
  assert.equal(emissions[0], false, "the current value, replayed where subscribed");
  assert.equal(flow.canvas(), canvas, "the signal holds what the Observable emitted last");
  assert.equal(flow.status(), "open");
  assert.ok(emissions.length >= 2 && emissions.slice(1).every(Boolean), `emissions in zone: ${emissions}`);

  const seen = firstValueFrom(flow.presence$.pipe(filter((p) => p.some((x) => x.self))));
  const people = await seen;
  assert.equal(people.length, 1);
  assert.equal(flow.presence(), people);

  // Destroying the injector closes what the service opened; the observables complete.
  const completed = new Promise<void>((resolve) => flow.canvas$.subscribe({ complete: resolve }));
  (injector as unknown as { destroy(): void }).destroy();
  await completed;
  assert.equal(flow.session.closed, "closed by the client");
});
