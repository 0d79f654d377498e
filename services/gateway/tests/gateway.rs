//! The gateway end to end against the test kit's real redis-server: SSE clients over HTTP,
//! events published through the Redis bus as the API would, several gateways as several
//! processes would run them (each with its own Redis connections). Every test runs twice:
//! against the standalone gateway and against the one binary (`flowsync::System`), whose
//! port serves the same streams beside the API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::Eventsource;
use flowsync_auth::AuthConfig;
use flowsync_bus::presence::{PresenceConfig, PresenceSet, RedisPresence};
use flowsync_bus::redis::RedisBus;
use flowsync_bus::{Bus, BusConfig};
use flowsync_gateway::metrics::Metrics;
use flowsync_gateway::server::Backends;
use flowsync_gateway::{Gateway, GatewayConfig};
use flowsync_protocol::{Actor, ActorKind, Event, EventBody, FlowId, LogStream};
use flowsync_store::sqlite::SqliteBackend;
use flowsync_store::{NewFlow, Store, StoreConfig};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Guards against a hang; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// What serves the streams.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Edge {
    /// `flowsync-gateway`.
    Gateway,
    /// `flowsync`: API, streams and runner on one port.
    OneBinary,
}

/// A test's world: a namespace in the shared Redis, a store, a publisher.
struct World {
    edge: Edge,
    url: String,
    bus_config: BusConfig,
    store: Store,
    publisher: Arc<dyn Bus>,
    _dir: tempfile::TempDir,
}

/// A running gateway.
struct Running {
    port: u16,
    metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// SIGTERM, as the binary wires it: stop accepting, drain, return.
    async fn terminate(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.done)
            .await
            .expect("the gateway drains in time")
            .unwrap()
            .unwrap();
    }
}

impl World {
    async fn new(edge: Edge, adjust: impl FnOnce(&mut BusConfig)) -> Self {
        let mut bus_config = BusConfig {
            namespace: format!("{}:", flowsync_testkit::unique_name("gw")),
            ..BusConfig::default()
        };
        adjust(&mut bus_config);
        let url = flowsync_testkit::redis().url();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            Arc::new(SqliteBackend::open(&dir.path().join("gw.db")).unwrap()),
            StoreConfig::default(),
        )
        .await
        .unwrap();
        Self {
            edge,
            publisher: Arc::new(RedisBus::connect(&url, bus_config.clone()).unwrap()),
            url,
            bus_config,
            store,
            _dir: dir,
        }
    }

    async fn flow(&self, id: &str) -> FlowId {
        let flow = FlowId::parse(id).unwrap();
        self.store
            .create_flow(NewFlow {
                id: Some(flow.clone()),
                name: id.into(),
                meta: Default::default(),
            })
            .await
            .unwrap();
        flow
    }

    async fn presence(&self) -> RedisPresence {
        RedisPresence::connect(
            &self.url,
            &self.bus_config.namespace,
            &PresenceConfig::default(),
        )
        .await
        .unwrap()
    }

    /// A gateway as its own process would have it: its own bus connections.
    async fn gateway(&self, adjust: impl FnOnce(&mut GatewayConfig)) -> Running {
        self.try_gateway(adjust).await.unwrap()
    }

    /// The edge of this world (a gateway, or the one binary) over the shared store and
    /// Redis, or why it refused to start.
    async fn try_gateway(
        &self,
        adjust: impl FnOnce(&mut GatewayConfig),
    ) -> anyhow::Result<Running> {
        let mut config = GatewayConfig {
            listen: "127.0.0.1:0".into(),
            auth: flowsync_testkit::hs256(),
            ..GatewayConfig::default()
        };
        adjust(&mut config);
        let bus = Arc::new(RedisBus::connect(&self.url, self.bus_config.clone()).unwrap());
        let presence = Arc::new(
            RedisPresence::connect(&self.url, &self.bus_config.namespace, &config.presence)
                .await
                .unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        Ok(match self.edge {
            Edge::Gateway => {
                let backends = Backends {
                    store: Arc::new(self.store.clone()),
                    bus,
                    presence,
                };
                let gateway = Gateway::with_backends(&config, backends).await?;
                let (port, metrics) = (gateway.port(), gateway.metrics());
                let done = tokio::spawn(gateway.run(async {
                    let _ = stopped.await;
                }));
                Running {
                    port,
                    metrics,
                    stop: Some(stop),
                    done,
                }
            }
            Edge::OneBinary => {
                let settings = flowsync::Settings {
                    listen: config.listen,
                    auth: config.auth,
                    sse: config.sse,
                    presence: config.presence,
                    ..flowsync::Settings::default()
                };
                let backends = flowsync_config::Backends {
                    store: self.store.clone(),
                    bus,
                    presence,
                    jobs: Arc::new(flowsync_bus::jobs::MemoryJobs::new(&Default::default())),
                };
                let system = flowsync::System::with_backends(&settings, backends).await?;
                let (port, metrics, handle) =
                    (system.port(), system.stream_metrics(), system.handle());
                tokio::spawn(async move {
                    let _ = stopped.await;
                    handle.stop(true);
                });
                let done = tokio::spawn(async move {
                    system.run().await;
                    Ok(())
                });
                Running {
                    port,
                    metrics,
                    stop: Some(stop),
                    done,
                }
            }
        })
    }

    /// Publishes `LOG_STREAM` chunks `from..to` of `flow`, one publish at a time.
    async fn publish(&self, flow: &FlowId, range: std::ops::Range<u64>) {
        for i in range {
            self.publisher.publish(&chunk(flow, i, "")).await.unwrap();
        }
    }
}

fn chunk(flow: &FlowId, index: u64, pad: &str) -> Event {
    Event {
        body: EventBody::LogStream(LogStream {
            execution_id: "x1".parse().unwrap(),
            node_id: "n1".parse().unwrap(),
            index,
            chunk: format!("c{index}{pad}"),
            done: false,
        }),
        flow_id: flow.clone(),
        seq: None,
        traceparent: None,
        ts: chrono::Utc::now(),
        actor: Actor {
            id: "runner".parse().unwrap(),
            kind: ActorKind::Worker,
            name: "runner".into(),
        },
    }
}

fn token(sub: &str, flows: &[&str]) -> String {
    flowsync_testkit::token(sub, "user", flows, "read")
}

/// One received SSE event.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    event: String,
    data: Value,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Option<Received>> + Send>>;

/// An SSE client, as a browser's EventSource would be.
struct Client {
    events: Events,
    /// The last `id:` seen (what a browser sends as `Last-Event-ID`).
    last_id: Option<String>,
}

/// Opens a stream; panics unless it answers 200.
async fn connect(port: u16, path: &str, token: &str, last_event_id: Option<&str>) -> Client {
    let r = request(port, path, Some(token), last_event_id).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = r
        .bytes_stream()
        .eventsource()
        .map(|e| {
            e.ok().map(|e| Received {
                id: e.id,
                event: e.event,
                data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
            })
        })
        .boxed();
    Client {
        events,
        last_id: last_event_id.map(str::to_owned),
    }
}

async fn request(
    port: u16,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.unwrap()
}

impl Client {
    /// The next event; `None` when the server closed the stream.
    async fn next(&mut self) -> Option<Received> {
        let e = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event or the end of the stream in time")
            .flatten()?;
        if e.event != "READY" && e.event != "RESYNC" && e.event != "PRESENCE" {
            self.last_id = Some(e.id.clone());
        }
        Some(e)
    }

    /// The next event of type `kind`, skipping others (presence, pings are not events).
    async fn next_of(&mut self, kind: &str) -> Received {
        loop {
            let e = self.next().await.expect("the stream is open");
            if e.event == kind {
                return e;
            }
        }
    }

    /// The next `n` chunk indexes.
    async fn chunks(&mut self, n: usize) -> Vec<u64> {
        let mut out = vec![];
        while out.len() < n {
            out.push(
                self.next_of("LOG_STREAM").await.data["data"]["index"]
                    .as_u64()
                    .unwrap(),
            );
        }
        out
    }
}

fn range(r: std::ops::Range<u64>) -> Vec<u64> {
    r.collect()
}

async fn heartbeats_come_as_ping_events_to_streams_that_ask(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("beat").await;
    let gw = world
        .gateway(|c| c.sse.heartbeat = Duration::from_millis(20))
        .await;
    let t = token("u1", &["beat"]);
    let path = "/v1/flows/beat/events?types=LOG_STREAM&heartbeat=event";
    let mut asking = connect(gw.port, path, &t, None).await;
    let mut plain = connect(gw.port, "/v1/flows/beat/events?types=LOG_STREAM", &t, None).await;
    asking.next_of("READY").await;
    plain.next_of("READY").await;
    for _ in 0..2 {
        let ping = asking.next_of("PING").await;
        assert_eq!(ping.id, "", "a heartbeat moves no position");
        assert_eq!(ping.data, json!({}));
    }
    // The plain stream's heartbeats are comments: its next event is the published one.
    world.publish(&flow, 0..1).await;
    assert_eq!(plain.next().await.unwrap().event, "LOG_STREAM");
    assert_eq!(asking.next_of("LOG_STREAM").await.data["seq"], 1);
}

async fn events_reach_every_client_of_two_gateways_once_and_in_order(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("fan").await;
    let (a, b) = (world.gateway(|_| {}).await, world.gateway(|_| {}).await);
    let t = token("u1", &["fan"]);
    let mut clients = vec![];
    for port in [a.port, a.port, b.port, b.port] {
        let mut c = connect(port, "/v1/flows/fan/events?types=LOG_STREAM", &t, None).await;
        let ready = c.next_of("READY").await;
        assert_eq!(ready.data["data"]["resumed"], false);
        assert_eq!(ready.data["data"]["version"], 0);
        clients.push(c);
    }
    world.publish(&flow, 0..200).await;
    for c in &mut clients {
        let mut seqs = vec![];
        let mut indexes = vec![];
        for _ in 0..200 {
            let e = c.next_of("LOG_STREAM").await;
            assert_eq!(e.data["flow_id"], "fan");
            let (epoch, seq) = e.id.split_once('-').unwrap();
            assert_eq!(e.data["seq"].as_u64(), Some(seq.parse().unwrap()));
            assert!(!epoch.is_empty());
            seqs.push(e.data["seq"].as_u64().unwrap());
            indexes.push(e.data["data"]["index"].as_u64().unwrap());
        }
        assert_eq!(indexes, range(0..200));
        assert_eq!(seqs, range(1..201), "ids count without gaps");
    }
    let m = &a.metrics;
    // Each event read from the bus once: the 200 chunks and the 4 presence joins.
    assert_eq!(m.events_in.get(), 204);
    assert_eq!(m.events_out.get(), 400, "and written once per client");
    assert_eq!(m.connections.get(), 2);
}

async fn resume_replays_exactly_what_was_missed_then_goes_live(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("res").await;
    let gw = world.gateway(|_| {}).await;
    let t = token("u1", &["res"]);
    let mut first = connect(gw.port, "/v1/flows/res/events", &t, None).await;
    let ready = first.next_of("READY").await;
    let epoch_before = ready.data["data"]["epoch"].as_str().unwrap().to_owned();
    assert_eq!(epoch_before, "0", "no history yet");
    world.publish(&flow, 0..50).await;
    assert_eq!(first.chunks(50).await, range(0..50));
    let epoch = first
        .last_id
        .clone()
        .unwrap()
        .split_once('-')
        .unwrap()
        .0
        .to_owned();

    // `0-0` (READY before any history) replays everything; others replay after them.
    let mut resumed = vec![];
    for (from, expect_from) in [
        ("0-0".to_owned(), 0),
        (format!("{epoch}-0"), 0),
        (format!("{epoch}-10"), 10),
        (format!("{epoch}-49"), 49),
        (format!("{epoch}-50"), 50),
    ] {
        let mut c = connect(gw.port, "/v1/flows/res/events", &t, Some(&from)).await;
        let ready = c.next_of("READY").await;
        assert_eq!(ready.data["data"]["resumed"], true, "{from}");
        assert_eq!(ready.data["data"]["seq"], 50);
        let missed = c.chunks(50 - expect_from as usize).await;
        assert_eq!(missed, range(expect_from..50), "{from}");
        resumed.push(c);
    }
    world.publish(&flow, 50..52).await;
    for c in &mut resumed {
        assert_eq!(c.chunks(2).await, range(50..52), "live after the replay");
    }
    // The query parameter serves a fresh EventSource; the header wins over it (a
    // browser's reconnect sends the header with the original URL).
    let path = format!("/v1/flows/res/events?last_event_id={epoch}-50");
    let mut fresh = connect(gw.port, &path, &t, None).await;
    assert_eq!(fresh.next_of("READY").await.data["data"]["resumed"], true);
    assert_eq!(fresh.chunks(2).await, range(50..52));
    let mut both = connect(gw.port, &path, &t, Some(&format!("{epoch}-51"))).await;
    both.next_of("READY").await;
    world.publish(&flow, 52..53).await;
    assert_eq!(both.chunks(2).await, vec![51, 52]);
    assert_eq!(gw.metrics.resumes.get(), 7);
}

async fn resume_beyond_history_gets_resync_then_live(edge: Edge) {
    let world = World::new(edge, |c| c.history_len = 10).await;
    let flow = world.flow("gone").await;
    let gw = world.gateway(|_| {}).await;
    let t = token("u1", &["gone"]);
    world.publish(&flow, 0..400).await;
    let head = world.publisher.head(&flow).await.unwrap().unwrap();
    for from in [
        format!("{}-1", head.epoch),                // trimmed away
        "unknownepoch-3".to_owned(),                // another history
        format!("{}-{}", head.epoch, head.seq + 5), // ahead of the flow
    ] {
        let mut c = connect(gw.port, "/v1/flows/gone/events", &t, Some(&from)).await;
        let ready = c.next_of("READY").await;
        assert_eq!(ready.data["data"]["resumed"], false, "{from}");
        let resync = c.next().await.unwrap();
        assert_eq!(resync.event, "RESYNC", "{from}");
        assert!(
            resync.id.is_empty() || resync.id == from,
            "RESYNC carries no id of its own"
        );
        world.publish(&flow, 1000..1001).await;
        assert_eq!(c.chunks(1).await, vec![1000], "{from}: live after RESYNC");
    }
    assert_eq!(gw.metrics.resyncs.get(), 3);
}

async fn a_client_that_stops_reading_is_dropped_while_others_keep_receiving(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("slow").await;
    let gw = world
        .gateway(|c| {
            c.sse.client_queue = 16;
            c.sse.write_timeout = Duration::from_millis(500);
        })
        .await;
    let t = token("u1", &["slow"]);

    // The slow client: sends its request, then never reads, with a small receive buffer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket
        .connect(format!("127.0.0.1:{}", gw.port).parse().unwrap())
        .await
        .unwrap();
    slow.write_all(
        format!(
            "GET /v1/flows/slow/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();

    // The good client reads everything, resuming whenever it is dropped too, as the
    // contract says a client does: it must end with every event once, in order.
    let mut good = connect(gw.port, "/v1/flows/slow/events", &t, None).await;
    good.next_of("READY").await;
    let n = 600u64;
    let pad = "x".repeat(8 * 1024);
    let pad_len = pad.len();
    let publisher = world.publisher.clone();
    let flow2 = flow.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..n {
            publisher.publish(&chunk(&flow2, i, &pad)).await.unwrap();
        }
    });
    let mut got = vec![];
    while got.len() < n as usize {
        match good.next().await {
            Some(e) if e.event == "LOG_STREAM" => {
                got.push(e.data["data"]["index"].as_u64().unwrap())
            }
            Some(_) => {}
            None => {
                let last = good.last_id.clone();
                good = connect(gw.port, "/v1/flows/slow/events", &t, last.as_deref()).await;
                assert_eq!(good.next_of("READY").await.data["data"]["resumed"], true);
            }
        }
    }
    publishing.await.unwrap();
    assert_eq!(got, range(0..n));

    // The slow one was cut off: reading what was buffered ends at EOF.
    let mut sink = vec![];
    tokio::time::timeout(PATIENCE, slow.read_to_end(&mut sink))
        .await
        .expect("the slow client is disconnected")
        .ok();
    assert!(gw.metrics.slow_disconnects.get() >= 1);
    assert!(
        sink.len() < n as usize * pad_len,
        "the slow client did not get everything buffered for it"
    );
}

async fn flows_are_isolated_and_tokens_checked(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let (fa, fb) = (world.flow("iso-a").await, world.flow("iso-b").await);
    let gw = world.gateway(|_| {}).await;
    let ta = token("ua", &["iso-a"]);
    let tb = token("ub", &["iso-b"]);
    let mut a = connect(gw.port, "/v1/flows/iso-a/events", &ta, None).await;
    let mut b = connect(gw.port, "/v1/flows/iso-b/events", &tb, None).await;
    a.next_of("READY").await;
    b.next_of("READY").await;
    world.publish(&fa, 0..5).await;
    world.publish(&fb, 100..105).await;
    for _ in 0..5 {
        assert_eq!(a.next_of("LOG_STREAM").await.data["flow_id"], "iso-a");
        assert_eq!(b.next_of("LOG_STREAM").await.data["flow_id"], "iso-b");
    }
    world.publish(&fa, 5..6).await;
    world.publish(&fb, 105..106).await;
    assert_eq!(a.chunks(1).await, vec![5]);
    assert_eq!(b.chunks(1).await, vec![105]);

    // Refusals, each with its status and code.
    let expired = flowsync_testkit::token_signed(
        "u",
        "user",
        &["*"],
        "read",
        -3600,
        flowsync_testkit::SECRET,
    );
    let all = token("u", &["*"]);
    for (path, tok, last, status, code) in [
        (
            "/v1/flows/iso-b/events",
            Some(ta.as_str()),
            None,
            403,
            "forbidden",
        ),
        ("/v1/flows/iso-a/events", None, None, 401, "unauthorized"),
        (
            "/v1/flows/iso-a/events",
            Some("not.a.jwt"),
            None,
            401,
            "unauthorized",
        ),
        (
            "/v1/flows/iso-a/events",
            Some(expired.as_str()),
            None,
            401,
            "token_expired",
        ),
        (
            "/v1/flows/nope/events",
            Some(all.as_str()),
            None,
            404,
            "flow_not_found",
        ),
        (
            "/v1/flows/bad%20id/events",
            Some(all.as_str()),
            None,
            400,
            "invalid_id",
        ),
        (
            "/v1/flows/iso-a/events?types=NOPE",
            Some(all.as_str()),
            None,
            400,
            "invalid_types",
        ),
        (
            "/v1/flows/iso-a/events?heartbeat=loud",
            Some(all.as_str()),
            None,
            400,
            "invalid_heartbeat",
        ),
        (
            "/v1/flows/iso-a/events",
            Some(all.as_str()),
            Some("garbage"),
            400,
            "invalid_last_event_id",
        ),
        (
            "/v1/flows/iso-a/events",
            Some(all.as_str()),
            Some("ep-1x"),
            400,
            "invalid_last_event_id",
        ),
        (
            "/v1/elsewhere",
            Some(all.as_str()),
            None,
            404,
            "route_not_found",
        ),
    ] {
        let r = request(gw.port, path, tok, last).await;
        assert_eq!(r.status().as_u16(), status, "{path} {last:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{path} {last:?}");
    }
    // The token travels in the query for EventSource.
    let r = request(
        gw.port,
        &format!("/v1/flows/iso-a/events?access_token={ta}"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    // ?types= filters: the LOG_STREAM published first never reaches this client.
    let mut only = connect(
        gw.port,
        "/v1/flows/iso-a/events?types=SYNC_CANVAS",
        &ta,
        None,
    )
    .await;
    only.next_of("READY").await;
    world.publish(&fa, 6..7).await;
    world.publisher.publish(&sync_canvas(&fa)).await.unwrap();
    assert_eq!(only.next().await.unwrap().event, "SYNC_CANVAS");
}

fn sync_canvas(flow: &FlowId) -> Event {
    Event {
        body: EventBody::SyncCanvas(flowsync_protocol::SyncCanvas {
            prev_version: 0,
            version: 1,
            client_id: "c".parse().unwrap(),
            ops: vec![],
        }),
        ..chunk(flow, 0, "")
    }
}

async fn connection_limits_answer_429_and_503(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    world.flow("lim").await;
    let gw = world
        .gateway(|c| {
            c.sse.max_connections_per_subject = 1;
            c.sse.max_connections = 2;
        })
        .await;
    let (t1, t2, t3) = (
        token("s1", &["*"]),
        token("s2", &["*"]),
        token("s3", &["*"]),
    );
    let mut one = connect(gw.port, "/v1/flows/lim/events", &t1, None).await;
    let first = one.next_of("READY").await.data["data"]["connection_id"].clone();
    let r = request(gw.port, "/v1/flows/lim/events", Some(&t1), None).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let mut two = connect(gw.port, "/v1/flows/lim/events", &t2, None).await;
    two.next_of("READY").await;
    let r = request(gw.port, "/v1/flows/lim/events", Some(&t3), None).await;
    assert_eq!(r.status(), 503);
    // A slot frees when its stream closes (before its leave is announced): once the other
    // stream sees the leave, the refused subject gets in.
    drop(one);
    loop {
        let p = two.next_of("PRESENCE").await;
        if p.data["data"]["connection_id"] == first && p.data["data"]["action"] == "leave" {
            break;
        }
    }
    let r = request(gw.port, "/v1/flows/lim/events", Some(&t3), None).await;
    assert_eq!(r.status(), 200);
}

async fn presence_lists_streams_across_gateways_and_announces_joins_and_leaves(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("pres").await;
    let (a, b) = (world.gateway(|_| {}).await, world.gateway(|_| {}).await);
    let mut alice = connect(
        a.port,
        "/v1/flows/pres/events",
        &token("alice", &["pres"]),
        None,
    )
    .await;
    let alice_conn = alice.next_of("READY").await.data["data"]["connection_id"].clone();
    let mut bob = connect(
        b.port,
        "/v1/flows/pres/events",
        &token("bob", &["pres"]),
        None,
    )
    .await;
    let bob_conn = bob.next_of("READY").await.data["data"]["connection_id"].clone();
    // Alice sees Bob join (her own join may come first).
    loop {
        let p = alice.next_of("PRESENCE").await;
        if p.data["data"]["connection_id"] == bob_conn {
            assert_eq!(p.data["data"]["action"], "join");
            assert_eq!(p.data["data"]["actor"]["id"], "bob");
            break;
        }
    }
    let presence = world.presence().await;
    let listed: HashMap<String, String> = presence
        .list(&flow)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.connection_id.to_string(), e.actor.id.to_string()))
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[alice_conn.as_str().unwrap()], "alice");
    assert_eq!(listed[bob_conn.as_str().unwrap()], "bob");

    drop(bob);
    loop {
        let p = alice.next_of("PRESENCE").await;
        if p.data["data"]["connection_id"] == bob_conn && p.data["data"]["action"] == "leave" {
            break;
        }
    }
    let left = presence.list(&flow).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].actor.id.as_str(), "alice");
}

async fn presence_entries_of_a_dead_gateway_expire(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("dead").await;
    let config = PresenceConfig {
        ttl: Duration::from_millis(300),
        ..PresenceConfig::default()
    };
    let presence = RedisPresence::connect(&world.url, &world.bus_config.namespace, &config)
        .await
        .unwrap();
    let entry = flowsync_bus::presence::PresenceEntry {
        connection_id: "c1".parse().unwrap(),
        actor: Actor {
            id: "ghost".parse().unwrap(),
            kind: ActorKind::User,
            name: "ghost".into(),
        },
        since: chrono::Utc::now(),
    };
    presence.join(&flow, &entry).await.unwrap();
    assert_eq!(presence.list(&flow).await.unwrap(), vec![entry]);
    // Nobody refreshes it (its gateway died): it stops being listed after the TTL.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !presence.list(&flow).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the entry never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sigterm_drains_and_clients_resume_on_the_other_gateway_without_loss(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let flow = world.flow("drain").await;
    let a = world
        .gateway(|c| c.sse.drain = Duration::from_millis(500))
        .await;
    let b = world.gateway(|_| {}).await;
    let t = token("u1", &["drain"]);
    let mut clients = vec![];
    for _ in 0..3 {
        let mut c = connect(a.port, "/v1/flows/drain/events", &t, None).await;
        c.next_of("READY").await;
        clients.push(c);
    }
    world.publish(&flow, 0..100).await;
    let mut got: Vec<Vec<u64>> = vec![vec![]; 3];
    for (c, g) in clients.iter_mut().zip(&mut got) {
        g.extend(c.chunks(100).await);
    }
    let (a_port, b_port) = (a.port, b.port);
    let terminate = tokio::spawn(a.terminate());
    world.publish(&flow, 100..200).await;
    // Each client reads until A closes it, then resumes on B from its last id.
    for (c, g) in clients.iter_mut().zip(&mut got) {
        loop {
            match c.next().await {
                Some(e) if e.event == "LOG_STREAM" => {
                    g.push(e.data["data"]["index"].as_u64().unwrap())
                }
                Some(_) => {}
                None => break,
            }
        }
        let last = c.last_id.clone();
        *c = connect(b_port, "/v1/flows/drain/events", &t, last.as_deref()).await;
        assert_eq!(c.next_of("READY").await.data["data"]["resumed"], true);
    }
    terminate.await.unwrap();
    world.publish(&flow, 200..300).await;
    for (c, g) in clients.iter_mut().zip(&mut got) {
        while g.len() < 300 {
            g.push(
                c.next_of("LOG_STREAM").await.data["data"]["index"]
                    .as_u64()
                    .unwrap(),
            );
        }
        assert_eq!(
            *g,
            range(0..300),
            "every event once, in order, across the move"
        );
    }
    // A drained gateway accepts no more connections.
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", a_port))
            .await
            .is_err()
    );
}

async fn health_ready_and_metrics_answer(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let gw = world.gateway(|_| {}).await;
    // Ready once the bus subscriber is connected (at start it may not be yet).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while request(gw.port, "/readyz", None, None).await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)] {
        let r = request(gw.port, path, None, None).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    let text = request(gw.port, "/metrics", None, None)
        .await
        .text()
        .await
        .unwrap();
    for name in [
        "flowsync_gateway_connections",
        "flowsync_gateway_events_out_total",
        "flowsync_gateway_bytes_out_total",
        "flowsync_gateway_slow_disconnects_total",
        "flowsync_gateway_resumes_total",
        "flowsync_gateway_resyncs_total",
    ] {
        assert!(text.contains(name), "{name} in /metrics");
    }
}

async fn auth_off_is_refused_beyond_loopback(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    let err = world
        .try_gateway(|c| {
            c.listen = "0.0.0.0:0".into();
            c.auth = AuthConfig::default();
        })
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("without auth"), "{err}");
}

async fn a_closed_stream_is_announced_as_left_at_once(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    world.flow("bye").await;
    // No heartbeat within the test: the leave cannot wait for a failed write.
    let gw = world
        .gateway(|c| c.sse.heartbeat = Duration::from_secs(3600))
        .await;
    let mut stay = connect(
        gw.port,
        "/v1/flows/bye/events",
        &token("stay", &["bye"]),
        None,
    )
    .await;
    stay.next_of("READY").await;
    let mut go = connect(
        gw.port,
        "/v1/flows/bye/events",
        &token("go", &["bye"]),
        None,
    )
    .await;
    let gone = go.next_of("READY").await.data["data"]["connection_id"].clone();
    drop(go);
    loop {
        let p = stay.next_of("PRESENCE").await;
        if p.data["data"]["connection_id"] == gone && p.data["data"]["action"] == "leave" {
            break;
        }
    }
}

async fn streams_answer_cors_for_configured_origins_only(edge: Edge) {
    let world = World::new(edge, |_| {}).await;
    world.flow("cors").await;
    let gw = world
        .gateway(|c| c.sse.cors_origins = vec!["https://app.example".into()])
        .await;
    let url = format!("http://127.0.0.1:{}/v1/flows/cors/events", gw.port);
    let http = reqwest::Client::new();
    let allowed = http
        .get(&url)
        .bearer_auth(token("u", &["cors"]))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = http
        .get(&url)
        .bearer_auth(token("u", &["cors"]))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // A refusal carries the header too, so the page can read why.
    let refused = http
        .get(&url)
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "https://app.example"
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod gateway {
            $( #[tokio::test]
            async fn $name() { super::$name(super::Edge::Gateway).await; } )*
        }
        mod one_binary {
            $( #[tokio::test]
            async fn $name() { super::$name(super::Edge::OneBinary).await; } )*
        }
    };
}

both!(
    heartbeats_come_as_ping_events_to_streams_that_ask,
    events_reach_every_client_of_two_gateways_once_and_in_order,
    resume_replays_exactly_what_was_missed_then_goes_live,
    resume_beyond_history_gets_resync_then_live,
    a_client_that_stops_reading_is_dropped_while_others_keep_receiving,
    flows_are_isolated_and_tokens_checked,
    connection_limits_answer_429_and_503,
    presence_lists_streams_across_gateways_and_announces_joins_and_leaves,
    presence_entries_of_a_dead_gateway_expire,
    sigterm_drains_and_clients_resume_on_the_other_gateway_without_loss,
    health_ready_and_metrics_answer,
    auth_off_is_refused_beyond_loopback,
    a_closed_stream_is_announced_as_left_at_once,
    streams_answer_cors_for_configured_origins_only,
);
