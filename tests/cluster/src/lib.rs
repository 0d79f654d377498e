//! The distributed topology as separate OS processes — redis-server, a MongoDB-wire
//! server, API instances, gateways, runners, the services' own binaries — for tests that
//! drive it only through HTTP and SSE, as browsers, agents and workers would (DESIGN §9).
//!
//! A [`Balancer`] stands in for the proxy in front of each kind of instance, so a client
//! whose instance dies reconnects to another one, as behind nginx or a Kubernetes Service.
//! [`Watcher`] is an SSE client that applies `SYNC_CANVAS` with the dumb reducer and
//! records every gap, duplicate and result it sees.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowsync_canvas::Canvas;
use flowsync_client::{Client, ClientConfig, EventStream};
use flowsync_protocol::{EventBody, FlowId, OpId, SyncCanvas};
use flowsync_testkit::{Balancer, OwnedMongo, Process, RedisServer, SECRET, free_port};
use tokio::sync::watch;

/// How long anything a test awaits may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One event as a plain reader read it: (type, id, data).
pub type Read = (String, String, serde_json::Value);

/// A plain SSE reader — a socket and a parser, no reconnect, no watchdog, none of the
/// Rust client's recovery: everything it reads goes to the channel.
pub async fn plain_reader(
    url: String,
    token: String,
) -> tokio::sync::mpsc::UnboundedReceiver<Read> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the stream opens");
    assert_eq!(response.status(), 200);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(e)) = events.next().await {
            let data = serde_json::from_str(&e.data).unwrap_or(serde_json::Value::Null);
            if tx.send((e.event, e.id, data)).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next event of a plain reader that is not a heartbeat or presence.
pub async fn next_seen(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Read>) -> Read {
    loop {
        let seen = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("an event in time")
            .expect("the stream stays open");
        if !["PING", "PRESENCE"].contains(&seen.0.as_str()) {
            return seen;
        }
    }
}

/// Only one cluster at a time: each is a dozen processes on a 2-core machine.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// How many of each process.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// API instances.
    pub apis: usize,
    /// Gateways.
    pub gateways: usize,
    /// Runners.
    pub runners: usize,
}

/// A service instance: its process and port.
#[derive(Debug)]
pub struct Instance {
    /// The OS process.
    pub process: Process,
    /// Where it listens.
    pub port: u16,
}

impl Instance {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One running cluster. Dropping it stops every process.
#[derive(Debug)]
pub struct Cluster {
    /// The bus.
    pub redis: RedisServer,
    /// The store's server; `None` with an external `FLOWSYNC_TEST_MONGO_URI`.
    pub mongo: Option<OwnedMongo>,
    /// API instances.
    pub apis: Vec<Instance>,
    /// Gateways.
    pub gateways: Vec<Instance>,
    /// Runners.
    pub runners: Vec<Process>,
    /// In front of the APIs.
    pub api_proxy: Balancer,
    /// In front of the gateways.
    pub gateway_proxy: Balancer,
    mongo_uri: String,
    database: String,
    extra: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

/// A service binary built by `cargo test` next to the test binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (./scripts/test), which builds the service binaries",
        path.display()
    );
    path
}

impl Cluster {
    /// Starts Redis, a MongoDB, and the services of `shape`, each waiting until it serves.
    /// `extra` settings go to every service (e.g. `FLOWSYNC_JOBS__IDLE_TIMEOUT`).
    pub fn start(shape: Shape, extra: &[(&str, &str)]) -> Self {
        Self::start_with_redis(shape, extra, RedisServer::start())
    }

    /// Like [`start`](Self::start), on a Redis of the caller's (e.g. a persistent one).
    pub fn start_with_redis(shape: Shape, extra: &[(&str, &str)], redis: RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mongo = flowsync_testkit::MongoServer::start_in(dir.path());
        let mongo_uri = match &mongo {
            Some(m) => m.uri(),
            None => std::env::var("FLOWSYNC_TEST_MONGO_URI").expect("set when no SecantusDB"),
        };
        let mut cluster = Self {
            redis,
            mongo,
            apis: vec![],
            gateways: vec![],
            runners: vec![],
            api_proxy: Balancer::start(vec![]),
            gateway_proxy: Balancer::start(vec![]),
            mongo_uri,
            database: flowsync_testkit::unique_name("cluster"),
            extra: extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            _dir: dir,
        };
        for i in 0..shape.apis {
            let api = cluster.serve("flowsync-api", &format!("api{i}"));
            cluster.apis.push(api);
        }
        for i in 0..shape.gateways {
            let gateway = cluster.serve("flowsync-gateway", &format!("gateway{i}"));
            cluster.gateways.push(gateway);
        }
        for i in 0..shape.runners {
            cluster.add_runner(i);
        }
        cluster.api_proxy = Balancer::start(cluster.apis.iter().map(|a| a.port).collect());
        cluster.gateway_proxy = Balancer::start(cluster.gateways.iter().map(|g| g.port).collect());
        cluster
    }

    /// The store and bus settings every service shares.
    fn backends_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("FLOWSYNC_STORE__KIND".into(), "mongo".into()),
            ("FLOWSYNC_STORE__URI".into(), self.mongo_uri.clone()),
            ("FLOWSYNC_STORE__DATABASE".into(), self.database.clone()),
            ("FLOWSYNC_BUS__KIND".into(), "redis".into()),
            ("FLOWSYNC_BUS__URL".into(), self.redis.url()),
        ];
        env.extend(self.extra.iter().cloned());
        env
    }

    fn serve(&self, program: &str, name: &str) -> Instance {
        let port = free_port();
        let mut env = self.backends_env();
        env.extend([
            ("FLOWSYNC_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("FLOWSYNC_AUTH__MODE".into(), "hs256".into()),
            ("FLOWSYNC_AUTH__HS256_SECRET".into(), SECRET.into()),
        ]);
        let mut process = Process::start(name, &binary(program), &env);
        process.wait_for_port(port);
        Instance { process, port }
    }

    /// Starts one more runner.
    pub fn add_runner(&mut self, i: usize) {
        let mut env = self.backends_env();
        env.push(("FLOWSYNC_RUNNER__POLL".into(), "1".into()));
        env.push(("FLOWSYNC_RUNNER__TOUCH_EVERY".into(), "1".into()));
        let runner = Process::start(&format!("runner{i}"), &binary("flowsync-runner"), &env);
        self.runners.push(runner);
    }

    /// A token for `sub` of `kind` (`user`, `agent`, `worker`) with every scope on every flow.
    pub fn token(&self, sub: &str, kind: &str) -> String {
        token(sub, kind, &["*"], "read write execute publish", 3600)
    }

    /// A client of `sub` through the proxies.
    pub fn client(&self, sub: &str, kind: &str) -> Client {
        self.client_via(&self.api_proxy.url(), &self.gateway_proxy.url(), sub, kind)
    }

    /// A client of `sub` pinned to one API and one gateway.
    pub fn client_via(&self, api: &str, gateway: &str, sub: &str, kind: &str) -> Client {
        let mut config = ClientConfig::new(api).with_token(self.token(sub, kind));
        config.events_url = Some(gateway.to_owned());
        // Quicker and more patient retries than a browser's: instances die on purpose here.
        config.backoff = Duration::from_millis(50);
        config.max_backoff = Duration::from_secs(1);
        config.attempts = 30;
        Client::new(config).expect("a client")
    }
}

/// An HS256 token signed with the test kit's secret (every process of a cluster is given
/// it), valid for `ttl` seconds (negative: already expired).
pub fn token(sub: &str, kind: &str, flows: &[&str], scope: &str, ttl: i64) -> String {
    token_signed(sub, kind, flows, scope, ttl, SECRET)
}

pub use flowsync_testkit::token_signed;

/// What a [`Watcher`] saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Its canvas, from `SYNC_CANVAS` in version order (reloaded on `RESYNC`).
    pub canvas: Option<Canvas>,
    /// Result events (`SYNC_CANVAS` op or `CONFLICT`) per op id.
    pub results: HashMap<OpId, u32>,
    /// Gaps and duplicates of `seq` within an epoch; wrong order of versions.
    pub violations: Vec<String>,
    /// `READY`s after the first (reconnects), and how many said `resumed`.
    pub reconnects: u32,
    /// Reconnects that resumed without a gap.
    pub resumed: u32,
    /// `RESYNC`s received.
    pub resyncs: u32,
}

/// An SSE client that applies `SYNC_CANVAS` with the dumb reducer and checks the stream.
#[derive(Debug)]
pub struct Watcher {
    seen: Arc<Mutex<Seen>>,
    version: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Opens `client`'s stream of `flow` and follows it.
    pub async fn start(client: Client, flow: &FlowId) -> Self {
        let mut events = client.events(flow);
        // READY first, then the state: nothing falls between the two.
        let first = events.next().await.expect("the stream opens");
        assert!(
            matches!(first.body, EventBody::Ready(_)),
            "READY comes first"
        );
        let canvas = Canvas::from_flow(client.flow(flow).await.expect("the flow")).expect("valid");
        let (tx, version) = watch::channel(canvas.version());
        let seen = Arc::new(Mutex::new(Seen {
            canvas: Some(canvas),
            ..Seen::default()
        }));
        let task = tokio::spawn(follow(client, events, seen.clone(), tx));
        Self {
            seen,
            version,
            task,
        }
    }

    /// Waits until the canvas reached `version`.
    pub async fn reach(&mut self, version: u64) {
        let mut rx = self.version.clone();
        let reached = tokio::time::timeout(PATIENCE, rx.wait_for(|v| *v >= version)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "the watcher stayed at version {} (wanted {version}): {:?}",
            *self.version.borrow(),
            self.seen().violations
        );
    }

    /// Waits until the canvas reached `server`'s version, then checks that the stream had
    /// no gap, duplicate or misordered version and the canvas equals `server`; returns what
    /// it saw for further checks.
    pub async fn converges_to(&mut self, server: &Canvas) -> Seen {
        self.reach(server.version()).await;
        let seen = self.seen();
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
        assert_eq!(
            seen.canvas.as_ref(),
            Some(server),
            "missed events or RESYNC, never silent loss"
        );
        seen
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    client: Client,
    mut events: EventStream,
    seen: Arc<Mutex<Seen>>,
    version: watch::Sender<u64>,
) {
    let flow = events.flow().clone();
    let mut last: Option<u64> = None;
    let mut early: BTreeMap<u64, SyncCanvas> = BTreeMap::new();
    loop {
        let event = events.next().await.expect("the stream goes on");
        let mut reload = false;
        {
            let mut guard = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let seen = &mut *guard;
            if let Some(seq) = event.seq {
                match last {
                    Some(prev) if seq != prev + 1 => {
                        seen.violations.push(format!("seq {seq} after {prev}"))
                    }
                    _ => {}
                }
                last = Some(seq);
            }
            match &event.body {
                EventBody::Ready(ready) => {
                    seen.reconnects += 1;
                    if ready.resumed {
                        seen.resumed += 1;
                    }
                }
                EventBody::Resync(_) => {
                    seen.resyncs += 1;
                    last = None; // a new epoch begins
                    reload = true;
                }
                EventBody::Conflict(c) => *seen.results.entry(c.op_id.clone()).or_default() += 1,
                EventBody::SyncCanvas(sync) => {
                    for op in &sync.ops {
                        *seen.results.entry(op.op_id.clone()).or_default() += 1;
                    }
                    early.insert(sync.prev_version, sync.clone());
                    let canvas = seen.canvas.as_mut().expect("loaded");
                    while let Some(sync) = early.remove(&canvas.version()) {
                        for op in &sync.ops {
                            if let Err(e) = canvas.apply_applied(op.version, &op.changes) {
                                seen.violations.push(format!("v{}: {e}", op.version));
                            }
                        }
                    }
                    let v = seen.canvas.as_ref().expect("loaded").version();
                    early.retain(|_, s| s.version > v);
                    version.send_replace(v);
                }
                _ => {}
            }
        }
        if reload {
            let fresh = client.flow(&flow).await.expect("the flow reloads");
            let fresh = Canvas::from_flow(fresh).expect("valid");
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            let v = fresh.version();
            seen.canvas = Some(fresh);
            early.retain(|_, s| s.version > v);
            version.send_replace(v);
        }
    }
}

/// The canvas the flow's whole history folds to, from an empty one named `name`.
pub async fn replay_history(client: &Client, flow: &FlowId, name: &str) -> Canvas {
    let mut canvas = Canvas::new(flow.clone(), name);
    loop {
        let page = client
            .history(flow, canvas.version(), 500)
            .await
            .expect("history");
        if page.is_empty() {
            return canvas;
        }
        for entry in page {
            canvas
                .apply_applied(entry.version, &entry.changes)
                .expect("the log folds");
        }
    }
}

/// The server's canvas.
pub async fn server_canvas(client: &Client, flow: &FlowId) -> Canvas {
    Canvas::from_flow(client.flow(flow).await.expect("the flow")).expect("valid")
}
