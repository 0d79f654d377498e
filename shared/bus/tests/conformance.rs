//! One conformance suite for both buses, plus Redis's restart test. Redis tests share the
//! test kit's redis-server and isolate themselves with a key namespace.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use flowsync_bus::memory::MemoryBus;
use flowsync_bus::redis::RedisBus;
use flowsync_bus::{Bus, BusConfig, BusError, Item, Position, Replay, Subscription};
use flowsync_protocol::{
    Actor, ConnectionId, Epoch, Event, EventBody, EventType, FlowId, LogStream, Presence,
    PresenceAction, Ready, SyncCanvas,
};

/// Guards against a hang; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

enum Place {
    Memory(MemoryBus),
    Redis { url: String, config: BusConfig },
}

impl Place {
    fn memory(config: BusConfig) -> Self {
        Self::Memory(MemoryBus::new(config))
    }

    fn redis(mut config: BusConfig) -> Self {
        config.namespace = format!("{}:", flowsync_testkit::unique_name("t"));
        Self::Redis {
            url: flowsync_testkit::redis().url(),
            config,
        }
    }

    /// A handle as another process would have it (Redis: its own pool and subscriber).
    fn bus(&self) -> Arc<dyn Bus> {
        match self {
            Self::Memory(bus) => Arc::new(bus.clone()),
            Self::Redis { url, config } => {
                Arc::new(RedisBus::connect(url, config.clone()).unwrap())
            }
        }
    }
}

fn flow(name: &str) -> FlowId {
    FlowId::parse(name).unwrap()
}

/// A sequenced event whose chunk names it.
fn event(flow: &FlowId, chunk: &str) -> Event {
    Event {
        body: EventBody::LogStream(LogStream {
            execution_id: "x".parse().unwrap(),
            node_id: "n".parse().unwrap(),
            index: 0,
            chunk: chunk.into(),
            done: false,
        }),
        flow_id: flow.clone(),
        seq: None,
        traceparent: None,
        ts: "2026-01-01T00:00:00Z".parse().unwrap(),
        actor: Actor::system(),
    }
}

fn chunk_of(item: &Item) -> String {
    match item {
        Item::Message(m) => match m.event().unwrap().body {
            EventBody::LogStream(l) => l.chunk,
            other => panic!("unexpected {other:?}"),
        },
        Item::Gone => "GONE".into(),
    }
}

async fn next(sub: &mut Subscription) -> Item {
    tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an item within the patience limit")
        .unwrap()
        .expect("the bus is open")
}

fn seq(item: &Item) -> u64 {
    match item {
        Item::Message(m) => m.seq().unwrap(),
        Item::Gone => panic!("Gone where an event was expected"),
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(|c| super::Place::memory(c)).await; } )*
        }
        mod redis {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(|c| super::Place::redis(c)).await; } )*
        }
    };
}

conformance!(
    delivers_in_order_everything_after_subscribe,
    gap_free_seq_under_concurrent_publishers,
    history_after_and_limit,
    gone_when_history_cannot_cover,
    history_is_bounded_in_bytes_too,
    new_epoch_after_history_is_dropped,
    flows_are_isolated,
    resume_replays_then_goes_live_without_duplicates,
    a_lagging_subscriber_is_filled_from_history,
    ephemeral_events_are_live_only,
    concurrent_publishes_through_one_handle_keep_their_positions,
    publish_all_keeps_the_order_of_a_batch,
    messages_carry_type_version_and_trace_live_and_replayed,
);

/// What consumers read off a message without parsing its JSON: the type, a
/// `SYNC_CANVAS`'s version, the trace context; the same live and from history.
async fn messages_carry_type_version_and_trace_live_and_replayed(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("typed");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let sync = Event {
        body: EventBody::SyncCanvas(SyncCanvas {
            prev_version: 41,
            version: 42,
            client_id: "c".parse().unwrap(),
            ops: vec![],
        }),
        traceparent: Some(trace.into()),
        ..event(&f, "")
    };
    let odd_trace = Event {
        traceparent: Some("two words".into()),
        ..event(&f, "odd")
    };
    let first = bus
        .publish_all(&[sync.clone(), event(&f, "plain"), odd_trace])
        .await
        .unwrap()[0]
        .clone();
    let expected = [
        (EventType::SyncCanvas, Some(42), Some(trace)),
        (EventType::LogStream, None, None),
        // Not one token: not carried beside the JSON (which keeps it as it is).
        (EventType::LogStream, None, None),
    ];
    let mut live = vec![];
    for _ in 0..3 {
        let Item::Message(m) = next(&mut sub).await else {
            panic!("gone")
        };
        live.push(m);
    }
    let Replay::Events(replayed) = bus
        .history(&f, &first.epoch, first.seq - 1, 10)
        .await
        .unwrap()
    else {
        panic!("history gone")
    };
    for messages in [live, replayed] {
        let seen: Vec<_> = messages
            .iter()
            .map(|m| (m.kind, m.version, m.traceparent.as_deref()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(messages[0].event().unwrap().body, sync.body);
        assert_eq!(
            messages[2].event().unwrap().traceparent.as_deref(),
            Some("two words")
        );
    }
}

async fn publish_all_keeps_the_order_of_a_batch(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("batch");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    // A streaming writer's batches, one after another, larger than one script call.
    let mut n = 0;
    for size in [1, 700, 3] {
        let batch: Vec<Event> = (n..n + size).map(|i| event(&f, &format!("c{i}"))).collect();
        let positions = bus.publish_all(&batch).await.unwrap();
        let seqs: Vec<u64> = positions.iter().map(|p| p.seq).collect();
        assert_eq!(
            seqs,
            ((n + 1) as u64..=(n + size) as u64).collect::<Vec<_>>()
        );
        n += size;
    }
    for i in 0..n {
        assert_eq!(chunk_of(&next(&mut sub).await), format!("c{i}"));
    }
}

async fn delivers_in_order_everything_after_subscribe(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f1");
    bus.publish(&event(&f, "before")).await.unwrap();
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    for i in 0..50 {
        let pos = bus.publish(&event(&f, &format!("e{i}"))).await.unwrap();
        assert_eq!(pos.seq, i + 2);
    }
    for i in 0..50 {
        let item = next(&mut sub).await;
        assert_eq!(chunk_of(&item), format!("e{i}"));
        let Item::Message(m) = &item else {
            unreachable!()
        };
        assert_eq!(m.seq(), Some(i + 2));
        assert_eq!(
            m.event().unwrap().seq,
            Some(i + 2),
            "the JSON carries the seq"
        );
        assert_eq!(m.kind, EventType::LogStream);
    }
}

async fn gap_free_seq_under_concurrent_publishers(place: fn(BusConfig) -> Place) {
    const PUBLISHERS: usize = 8;
    const EACH: usize = 100;
    let place = place(BusConfig::default());
    let f = flow("hot");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    let mut tasks = vec![];
    for p in 0..PUBLISHERS {
        let bus = place.bus();
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = vec![];
            for i in 0..EACH {
                seqs.push(
                    bus.publish(&event(&f, &format!("p{p}-{i}")))
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one publisher's events keep their order"
        );
        all.extend(seqs);
    }
    assert_eq!(
        all,
        (1..=(PUBLISHERS * EACH) as u64).collect::<BTreeSet<_>>()
    );
    for want in 1..=(PUBLISHERS * EACH) as u64 {
        assert_eq!(seq(&next(&mut sub).await), want);
    }
}

async fn history_after_and_limit(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f");
    assert_eq!(bus.head(&f).await.unwrap(), None);
    let mut epoch = None;
    for i in 1..=10 {
        epoch = Some(
            bus.publish(&event(&f, &format!("e{i}")))
                .await
                .unwrap()
                .epoch,
        );
    }
    let epoch = epoch.unwrap();
    assert_eq!(
        bus.head(&f).await.unwrap(),
        Some(Position {
            epoch: epoch.clone(),
            seq: 10
        })
    );
    let Replay::Events(page) = bus.history(&f, &epoch, 3, 4).await.unwrap() else {
        panic!("gone")
    };
    assert_eq!(
        page.iter().map(|m| m.seq().unwrap()).collect::<Vec<_>>(),
        [4, 5, 6, 7]
    );
    assert_eq!(page[0].event().unwrap().seq, Some(4));
    let Replay::Events(rest) = bus.history(&f, &epoch, 0, 100).await.unwrap() else {
        panic!("gone")
    };
    assert_eq!(rest.len(), 10);
    assert_eq!(
        bus.history(&f, &epoch, 10, 5).await.unwrap(),
        Replay::Events(vec![])
    );
}

/// Large events: the count bound would keep them all, the byte bound keeps the newest
/// that fit (and always the newest one).
async fn history_is_bounded_in_bytes_too(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig {
        history_bytes: 100_000,
        ..BusConfig::default()
    });
    let bus = place.bus();
    let f = flow("big");
    let chunk = "x".repeat(10_000);
    let mut epoch = None;
    for _ in 0..100 {
        epoch = Some(bus.publish(&event(&f, &chunk)).await.unwrap().epoch);
    }
    let epoch = epoch.unwrap();
    // The oldest kept: the first position history can still resume from.
    let mut after = 0;
    while bus.history(&f, &epoch, after, 1).await.unwrap() == Replay::Gone {
        after += 1;
        assert!(after < 100, "nothing kept");
    }
    let Replay::Events(kept) = bus.history(&f, &epoch, after, 100).await.unwrap() else {
        panic!("gone")
    };
    let bytes: usize = kept.iter().map(|m| m.json.len()).sum();
    assert!(bytes <= 100_000, "{bytes} bytes kept");
    assert!(kept.len() >= 5, "only {} kept", kept.len());
    assert_eq!(kept.last().unwrap().position.as_ref().unwrap().seq, 100);
    // One event larger than the bound is still kept: the newest always is.
    let huge = "y".repeat(150_000);
    let at = bus.publish(&event(&f, &huge)).await.unwrap();
    let Replay::Events(last) = bus.history(&f, &epoch, at.seq - 1, 10).await.unwrap() else {
        panic!("the newest event is kept")
    };
    assert_eq!(last.len(), 1);
}

async fn gone_when_history_cannot_cover(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig {
        history_len: 10,
        ..BusConfig::default()
    });
    let bus = place.bus();
    let f = flow("f");
    let mut epoch = None;
    // Redis trims approximately (whole stream nodes), so publish well past the cap.
    for i in 0..500 {
        epoch = Some(
            bus.publish(&event(&f, &format!("e{i}")))
                .await
                .unwrap()
                .epoch,
        );
    }
    let epoch = epoch.unwrap();
    assert_eq!(
        bus.history(&f, &epoch, 0, 10).await.unwrap(),
        Replay::Gone,
        "trimmed past"
    );
    assert!(
        matches!(bus.history(&f, &epoch, 495, 10).await.unwrap(), Replay::Events(e) if e.len() == 5)
    );
    let stranger = Epoch::parse("nosuchepoch").unwrap();
    assert_eq!(
        bus.history(&f, &stranger, 495, 10).await.unwrap(),
        Replay::Gone,
        "unknown epoch"
    );
    assert_eq!(
        bus.history(&f, &epoch, 501, 10).await.unwrap(),
        Replay::Gone,
        "a future position"
    );
    assert_eq!(
        bus.history(&flow("never"), &epoch, 0, 10).await.unwrap(),
        Replay::Gone
    );
    // A subscription resuming from a trimmed position is told so, then goes live.
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    assert!(
        !sub.resume(Position {
            epoch: epoch.clone(),
            seq: 3
        })
        .await
        .unwrap()
    );
    bus.publish(&event(&f, "live")).await.unwrap();
    assert_eq!(chunk_of(&next(&mut sub).await), "live");
}

async fn new_epoch_after_history_is_dropped(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    let first = bus.publish(&event(&f, "a")).await.unwrap();
    bus.publish(&event(&f, "b")).await.unwrap();
    assert_eq!(chunk_of(&next(&mut sub).await), "a");
    assert_eq!(chunk_of(&next(&mut sub).await), "b");
    bus.drop_history(&f).await.unwrap();
    let fresh = bus.publish(&event(&f, "c")).await.unwrap();
    assert_ne!(fresh.epoch, first.epoch);
    assert_eq!(fresh.seq, 1);
    assert_eq!(
        bus.history(&f, &first.epoch, 1, 10).await.unwrap(),
        Replay::Gone
    );
    // The subscriber learns that history broke, then continues in the new epoch.
    assert_eq!(next(&mut sub).await, Item::Gone);
    assert_eq!(chunk_of(&next(&mut sub).await), "c");
    assert_eq!(sub.position(), Some(&fresh));
}

async fn flows_are_isolated(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let (a, b) = (flow("a"), flow("b"));
    let mut sub_a = place.bus().subscribe(&a).await.unwrap();
    let mut sub_b = place.bus().subscribe(&b).await.unwrap();
    for i in 0..5 {
        bus.publish(&event(&b, &format!("b{i}"))).await.unwrap();
    }
    bus.publish(&event(&a, "a0")).await.unwrap();
    let item = next(&mut sub_a).await;
    assert_eq!(
        chunk_of(&item),
        "a0",
        "flow a's subscriber saw nothing of flow b first"
    );
    let Item::Message(m) = item else {
        unreachable!()
    };
    assert_eq!(m.event().unwrap().flow_id, a);
    for i in 0..5 {
        assert_eq!(chunk_of(&next(&mut sub_b).await), format!("b{i}"));
    }
    // Each flow counts its own seq.
    assert_eq!(bus.head(&a).await.unwrap().unwrap().seq, 1);
    assert_eq!(bus.head(&b).await.unwrap().unwrap().seq, 5);
}

async fn resume_replays_then_goes_live_without_duplicates(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f");
    let mut epoch = None;
    for i in 1..=10 {
        epoch = Some(
            bus.publish(&event(&f, &format!("e{i}")))
                .await
                .unwrap()
                .epoch,
        );
    }
    let epoch = epoch.unwrap();
    for from in [0, 5, 10] {
        let mut sub = place.bus().subscribe(&f).await.unwrap();
        assert!(
            sub.resume(Position {
                epoch: epoch.clone(),
                seq: from
            })
            .await
            .unwrap()
        );
        let head = bus.head(&f).await.unwrap().unwrap().seq;
        bus.publish(&event(&f, "live")).await.unwrap();
        for want in from + 1..=head + 1 {
            assert_eq!(seq(&next(&mut sub).await), want, "resume from {from}");
        }
    }
    // A fresh subscriber at the head sees only what comes next.
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    let head = sub.start_at_head().await.unwrap().unwrap();
    bus.publish(&event(&f, "next")).await.unwrap();
    assert_eq!(seq(&next(&mut sub).await), head.seq + 1);
}

async fn a_lagging_subscriber_is_filled_from_history(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig {
        channel_capacity: 4,
        ..BusConfig::default()
    });
    let bus = place.bus();
    let f = flow("f");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    for i in 1..=200 {
        bus.publish(&event(&f, &format!("e{i}"))).await.unwrap();
    }
    // 200 events through a 4-slot channel without reading: it lagged, and loses nothing.
    for want in 1..=200 {
        assert_eq!(seq(&next(&mut sub).await), want);
    }
}

async fn ephemeral_events_are_live_only(place: fn(BusConfig) -> Place) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    let presence = Event {
        body: EventBody::Presence(Presence {
            action: PresenceAction::Join,
            connection_id: ConnectionId::parse("c1").unwrap(),
            actor: Actor::system(),
            state: None,
        }),
        ..event(&f, "")
    };
    bus.publish_ephemeral(&presence).await.unwrap();
    let Item::Message(m) = next(&mut sub).await else {
        panic!("gone")
    };
    assert_eq!((m.position.clone(), m.kind), (None, EventType::Presence));
    assert_eq!(m.event().unwrap(), presence);
    assert_eq!(bus.head(&f).await.unwrap(), None, "not kept in history");
    let ready = Event {
        body: EventBody::Ready(Ready {
            connection_id: ConnectionId::parse("c1").unwrap(),
            epoch: Epoch::parse("e").unwrap(),
            seq: 0,
            resumed: false,
            version: 0,
        }),
        ..event(&f, "")
    };
    assert!(
        bus.publish(&ready).await.is_err(),
        "READY is never sequenced on the bus"
    );
    assert!(bus.publish(&presence).await.is_err());
}

async fn concurrent_publishes_through_one_handle_keep_their_positions(
    place: fn(BusConfig) -> Place,
) {
    let place = place(BusConfig::default());
    let bus = place.bus();
    let f = flow("f");
    let mut sub = place.bus().subscribe(&f).await.unwrap();
    // Concurrent publishes of one flow through one handle (Redis batches them).
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let bus = bus.clone();
            let f = f.clone();
            tokio::spawn(async move {
                (
                    bus.publish(&event(&f, &format!("e{i}"))).await.unwrap().seq,
                    format!("e{i}"),
                )
            })
        })
        .collect();
    let mut by_seq = std::collections::BTreeMap::new();
    for t in tasks {
        let (seq, chunk) = t.await.unwrap();
        assert!(by_seq.insert(seq, chunk).is_none(), "seq {seq} given twice");
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=300).collect::<Vec<_>>()
    );
    for (want_seq, want_chunk) in by_seq {
        let item = next(&mut sub).await;
        assert_eq!(
            (seq(&item), chunk_of(&item)),
            (want_seq, want_chunk),
            "delivered as positioned"
        );
    }
}

/// Kill the Redis under a subscriber and start it again on the same port: the subscriber
/// reconnects and reports the lost history as `Gone`; later events arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_is_reported_never_silent() {
    let mut server = flowsync_testkit::RedisServer::start();
    let bus = RedisBus::connect(&server.url(), BusConfig::default()).unwrap();
    let mut connections = bus.connections();
    let f = flow("f");
    let mut sub = bus.subscribe(&f).await.unwrap();
    for i in 1..=3 {
        bus.publish(&event(&f, &format!("e{i}"))).await.unwrap();
    }
    for want in 1..=3 {
        assert_eq!(seq(&next(&mut sub).await), want);
    }
    let before = *connections.borrow_and_update();
    server.kill();
    assert!(
        bus.publish(&event(&f, "lost")).await.is_err(),
        "a publish during the outage fails"
    );
    server.restart();
    tokio::time::timeout(PATIENCE, connections.wait_for(|n| *n > before))
        .await
        .expect("the subscriber reconnects")
        .unwrap();
    // Everything from before the restart is gone with Redis: the subscriber says so.
    assert_eq!(next(&mut sub).await, Item::Gone);
    let fresh = bus.publish(&event(&f, "after")).await.unwrap();
    assert_eq!(fresh.seq, 1);
    let item = next(&mut sub).await;
    assert_eq!(chunk_of(&item), "after");
    assert_eq!(sub.position(), Some(&fresh));
}

/// A Redis that keeps its data (AOF, `appendfsync always`) killed under a subscriber: no
/// `Gone` — the last delivered event is still in history where it was — and every event
/// published after the restart arrives in order, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_that_keeps_its_data_loses_no_live_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = flowsync_testkit::RedisServer::start_persistent(dir.path());
    let bus = RedisBus::connect(&server.url(), BusConfig::default()).unwrap();
    let mut connections = bus.connections();
    let f = flow("kept");
    let mut sub = bus.subscribe(&f).await.unwrap();
    for i in 1..=3 {
        bus.publish(&event(&f, &format!("e{i}"))).await.unwrap();
    }
    for want in 1..=3 {
        assert_eq!(seq(&next(&mut sub).await), want);
    }
    let before = *connections.borrow_and_update();
    server.kill9();
    server.restart();
    tokio::time::timeout(PATIENCE, connections.wait_for(|n| *n > before))
        .await
        .expect("the subscriber reconnects")
        .unwrap();
    for i in 4..=6 {
        // A publish on a connection not yet replaced fails (503 at the API), never lies.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while bus.publish(&event(&f, &format!("e{i}"))).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no publish after the restart"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for want in 4..=6 {
        let item = next(&mut sub).await;
        assert_eq!((seq(&item), chunk_of(&item)), (want, format!("e{want}")));
    }
}

/// A Redis that stops answering: a flow's publishes queue up to a bound, then are refused
/// at once (the API answers 503) instead of queueing without end; nothing hangs once
/// Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_waiting_for_a_stalled_redis_are_bounded() {
    let server = flowsync_testkit::RedisServer::start();
    let bus = Arc::new(RedisBus::connect(&server.url(), BusConfig::default()).unwrap());
    let f = flow("stalled");
    bus.publish(&event(&f, "first")).await.unwrap();
    server.pause();
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let total = 12_000;
    for i in 0..total {
        let (bus, done) = (bus.clone(), done.clone());
        let e = event(&f, &format!("e{i}"));
        tokio::spawn(async move { done.send(bus.publish(&e).await) });
    }
    // The first results are refusals: nothing can be published while Redis is stopped.
    let first = tokio::time::timeout(PATIENCE, results.recv())
        .await
        .expect("a publish past the bound is refused at once")
        .unwrap();
    let Err(BusError::Unavailable(why)) = first else {
        panic!("{first:?}")
    };
    assert!(why.to_string().contains("wait to be published"), "{why}");
    server.resume();
    for _ in 1..total {
        tokio::time::timeout(PATIENCE, results.recv())
            .await
            .expect("every publish ends")
            .unwrap()
            .ok();
    }
}

/// More unsubscribes at once than the subscriber's control channel holds: none is lost
/// (Redis ends up subscribed to exactly the flows still followed), and a flow followed
/// again in between keeps its subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribes_past_the_control_channel_are_not_lost() {
    let server = flowsync_testkit::RedisServer::start();
    let bus = RedisBus::connect(
        &server.url(),
        BusConfig {
            namespace: "ovf:".into(),
            ..BusConfig::default()
        },
    )
    .unwrap();
    let mut subs = vec![];
    for i in 0..1500 {
        subs.push(bus.subscribe(&flow(&format!("f{i}"))).await.unwrap());
    }
    drop(subs);
    let f0 = flow("f0");
    let mut again = bus.subscribe(&f0).await.unwrap();
    bus.publish(&event(&f0, "still here")).await.unwrap();
    assert_eq!(chunk_of(&next(&mut again).await), "still here");
    // What did not fit goes out within a second.
    let _other = bus.subscribe(&flow("other")).await.unwrap();
    let channels = || {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &server.port.to_string(),
                "PUBSUB",
                "CHANNELS",
                "ovf:flow:*",
            ])
            .output()
            .unwrap();
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while channels() != ["ovf:flow:f0", "ovf:flow:other"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            channels().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
