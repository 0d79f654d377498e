//! The client against the one binary, through HTTP and SSE only (except where a test plays
//! an API instance that died between committing and announcing).

use std::time::Duration;

use flowsync::{Settings, System};
use flowsync_client::{Client, ClientConfig, Error, FlowSession, OpExt, Outcome, SessionConfig};
use flowsync_protocol::{
    Actor, ClientId, ConflictReason, EventBody, ExecutionStatus, FlowId, Op, OpsRequest,
};
use flowsync_store::CommitRequest;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    client: Client,
    system_backends: flowsync_config::Backends,
    _dir: tempfile::TempDir,
}

async fn server(llm: Option<String>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    if let Some(url) = llm {
        config.runner.llm.base_url = url;
    }
    let system = System::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    let system_backends = system.backends().clone();
    tokio::spawn(system.run_until_stopped());
    Server {
        client: Client::new(ClientConfig::new(base)).unwrap(),
        system_backends,
        _dir: dir,
    }
}

fn flow_id(s: &str) -> FlowId {
    FlowId::parse(s).unwrap()
}

fn op(value: Value) -> Op {
    flowsync_client::op_from_json(value).expect("a valid op")
}

fn add(id: &str, data: &Value) -> Op {
    op(json!({"type": "node.add",
        "node": {"id": id, "type": "note", "position": {"x": 0, "y": 0}, "data": data}}))
}

async fn session(client: &Client, flow: &FlowId, name: &str) -> FlowSession {
    let config = SessionConfig {
        client_id: ClientId::parse(name).unwrap(),
        ..SessionConfig::default()
    };
    FlowSession::open(client.clone(), flow.clone(), config)
        .await
        .unwrap()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what} in time"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_see_every_result_and_resend_after_a_conflict() {
    let s = server(None).await;
    let flow = flow_id("shared");
    s.client.create_flow(Some(&flow), "Shared").await.unwrap();
    let alice = session(&s.client, &flow, "alice").await;
    let bob = session(&s.client, &flow, "bob").await;

    let outcome = alice.send_one(add("n1", &json!({}))).await.unwrap();
    assert_eq!(outcome, Outcome::Applied { version: 1 });
    within("bob at v1", bob.wait_for_version(1)).await.unwrap();
    assert!(bob.canvas().node("n1").is_some());

    // The same id again: refused, and the sender learns it from the stream.
    let Outcome::Refused(conflict) = bob.send_one(add("n1", &json!({}))).await.unwrap() else {
        panic!("a duplicate must be refused");
    };
    assert_eq!(conflict.reason, ConflictReason::Duplicate);
    assert_eq!(conflict.client_id.as_str(), "bob");

    // Both edit n1 from version 1; the second loses, reloads (its canvas is live) and
    // sends again from what it now sees — the rule for people and agents alike.
    let mv = |x: f64| op(json!({"type": "node.move", "id": "n1", "position": {"x": x, "y": 0}}));
    assert_eq!(
        alice.send_one(mv(10.0).based_on(1)).await.unwrap(),
        Outcome::Applied { version: 2 }
    );
    let Outcome::Refused(conflict) = bob.send_one(mv(20.0).based_on(1)).await.unwrap() else {
        panic!("a stale base version must be refused");
    };
    assert_eq!(conflict.reason, ConflictReason::VersionMismatch);
    bob.reload().await.unwrap();
    let seen = bob.version();
    assert_eq!(
        bob.send_one(mv(20.0).based_on(seen)).await.unwrap(),
        Outcome::Applied { version: 3 }
    );
    within("alice at v3", alice.wait_for_version(3))
        .await
        .unwrap();
    let server_state = s.client.flow(&flow).await.unwrap();
    for canvas in [alice.canvas(), bob.canvas()] {
        assert_eq!(canvas.version(), server_state.version);
        assert_eq!(canvas.node("n1"), server_state.nodes.first());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_op_id_applies_once_and_is_announced_again() {
    let s = server(None).await;
    let flow = flow_id("retry");
    s.client.create_flow(Some(&flow), "Retry").await.unwrap();
    let watcher = session(&s.client, &flow, "watcher").await;
    let mut events = watcher.subscribe();
    let op = add("n1", &json!({"title": "once"}));
    let request = OpsRequest {
        client_id: ClientId::parse("agent").unwrap(),
        ops: vec![op.clone()],
    };
    // The same request twice, as after a lost 202.
    s.client.post_ops(&flow, &request, None).await.unwrap();
    s.client.post_ops(&flow, &request, None).await.unwrap();
    let mut announced = 0;
    while announced < 2 {
        let event = within("the announcements", events.recv()).await.unwrap();
        if let EventBody::SyncCanvas(sync) = &event.body {
            assert_eq!(sync.ops[0].op_id, op.op_id);
            assert_eq!(
                sync.ops[0].version, 1,
                "the repeat carries the original version"
            );
            announced += 1;
        }
    }
    let history = s.client.history(&flow, 0, 100).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(watcher.version(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_resumes_where_it_broke() {
    let s = server(None).await;
    let flow = flow_id("resume");
    s.client.create_flow(Some(&flow), "Resume").await.unwrap();
    let agent = session(&s.client, &flow, "agent").await;
    let mut stream = s
        .client
        .events(&flow)
        .only(&[flowsync_protocol::EventType::SyncCanvas]);
    let ready = within("READY", stream.next()).await.unwrap();
    assert!(matches!(ready.body, EventBody::Ready(ref r) if !r.resumed));
    // Dropped before any event: the reconnect resumes from the head READY named.
    stream.disconnect();
    agent.send_one(add("a", &json!({}))).await.unwrap();
    let ready = within("READY again", stream.next()).await.unwrap();
    assert!(matches!(ready.body, EventBody::Ready(ref r) if r.resumed));
    let first = within("the first op", stream.next()).await.unwrap();
    assert_eq!(first.seq, Some(1));
    let position = stream.last_event_id().unwrap().to_owned();

    // Gone for a while; three ops meanwhile.
    stream.disconnect();
    for id in ["b", "c", "d"] {
        agent.send_one(add(id, &json!({}))).await.unwrap();
    }
    let ready = within("READY again", stream.next()).await.unwrap();
    assert!(matches!(ready.body, EventBody::Ready(ref r) if r.resumed));
    let mut seqs = vec![];
    for _ in 0..3 {
        seqs.push(
            within("a missed op", stream.next())
                .await
                .unwrap()
                .seq
                .unwrap(),
        );
    }
    assert_eq!(seqs, [2, 3, 4], "everything missed, once, in order");
    assert_ne!(stream.last_event_id(), Some(position.as_str()));

    // A process that restarts passes the last id it saw.
    let mut fresh = s.client.events_after(&flow, position);
    within("READY", fresh.next()).await.unwrap();
    let replayed = within("a replayed op", fresh.next()).await.unwrap();
    assert_eq!(replayed.seq, Some(2));
}

/// What an API instance does that commits a node and dies before announcing it.
async fn commit_unannounced(s: &Server, flow: &FlowId, node: &str) {
    s.system_backends
        .store
        .commit(
            flow,
            &CommitRequest {
                actor: Actor::system(),
                client_id: ClientId::parse("ghost").unwrap(),
                if_match: None,
                ops: vec![add(node, &json!({}))],
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_is_filled_from_history() {
    let s = server(None).await;
    let flow = flow_id("gap");
    s.client.create_flow(Some(&flow), "Gap").await.unwrap();
    let watcher = session(&s.client, &flow, "watcher").await;
    // v1 is committed and never announced.
    commit_unannounced(&s, &flow, "ghost").await;
    // v2 is announced; the watcher cannot apply it at v0, waits, then reads v1 from history.
    let agent = session(&s.client, &flow, "agent").await;
    agent.send_one(add("n2", &json!({}))).await.unwrap();
    within("the watcher at v2", watcher.wait_for_version(2))
        .await
        .unwrap();
    let canvas = watcher.canvas();
    assert!(canvas.node("ghost").is_some() && canvas.node("n2").is_some());

    // The same gap under the watcher's own op: v3 is committed and never announced, the
    // watcher's v4 comes before it. Its result waits until the canvas holds it.
    commit_unannounced(&s, &flow, "ghost3").await;
    let outcome = within("the watcher's op", watcher.send_one(add("n4", &json!({}))))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Applied { version: 4 });
    assert!(watcher.version() >= 4, "resolved at v{}", watcher.version());
    let canvas = watcher.canvas();
    assert!(canvas.node("ghost3").is_some() && canvas.node("n4").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_the_transport_are_errors() {
    let s = server(None).await;
    let missing = flow_id("missing");
    let err = FlowSession::open(s.client.clone(), missing.clone(), SessionConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("flow_not_found"), "{err}");
    let err = s.client.flow(&missing).await.unwrap_err();
    assert!(matches!(err, Error::Refused { status: 404, .. }), "{err}");

    // The session ends when its flow is deleted; senders are told.
    let flow = flow_id("doomed");
    s.client.create_flow(Some(&flow), "Doomed").await.unwrap();
    let doomed = session(&s.client, &flow, "doomed").await;
    let r = reqwest::Client::new()
        .delete(format!("{}/v1/flows/doomed", s.client.config().base_url))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let err = within("the end", doomed.wait_for_version(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
    let err = doomed.send_one(add("x", &json!({}))).await.unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_stream_progress_to_the_session() {
    let llm = flowsync_testkit::ChatStub::start(["to", "ken", "s"]);
    let s = server(Some(llm.url)).await;
    let flow = flow_id("run");
    s.client.create_flow(Some(&flow), "Run").await.unwrap();
    let person = session(&s.client, &flow, "person").await;
    let ask = op(json!({"type": "node.add",
        "node": {"id": "ask", "type": "llm", "position": {"x": 0, "y": 0},
                 "data": {"prompt": "go"}}}));
    person.send_one(ask).await.unwrap();
    let mut events = person.subscribe();
    let execution = s.client.start_execution(&flow).await.unwrap();
    let (mut text, mut status) = (String::new(), None);
    while status.is_none() {
        let event = within("execution events", events.recv()).await.unwrap();
        match &event.body {
            EventBody::LogStream(chunk) if chunk.execution_id == execution => {
                text.push_str(&chunk.chunk);
            }
            EventBody::ExecutionUpdate(u) if u.execution_id == execution && u.node_id.is_none() => {
                status = u
                    .status
                    .filter(|s| !matches!(s, ExecutionStatus::Queued | ExecutionStatus::Running));
            }
            _ => {}
        }
    }
    assert_eq!(status, Some(ExecutionStatus::Succeeded));
    assert_eq!(text, "tokens");
    let stored = s.client.execution(&flow, &execution).await.unwrap();
    assert_eq!(stored.status, ExecutionStatus::Succeeded);
    let err = s
        .client
        .cancel_execution(&flow, &execution)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { status: 409, .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_publishes_progress_through_the_api() {
    let s = server(None).await;
    let flow = flow_id("worker");
    s.client.create_flow(Some(&flow), "Worker").await.unwrap();
    let person = session(&s.client, &flow, "person").await;
    let slow = op(
        json!({"type": "node.add", "node": {"id": "slow", "type": "delay",
        "position": {"x": 0, "y": 0}, "data": {"ms": 2000}}}),
    );
    person.send_one(slow).await.unwrap();
    let execution = s.client.start_execution(&flow).await.unwrap();
    let mut events = person.subscribe();
    let chunk = |execution_id| {
        EventBody::LogStream(flowsync_protocol::LogStream {
            execution_id,
            node_id: flowsync_protocol::NodeId::parse("slow").unwrap(),
            index: 0,
            chunk: "from a worker".into(),
            done: false,
        })
    };
    s.client
        .publish(&flow, &execution, &chunk(execution.clone()))
        .await
        .unwrap();
    loop {
        let event = within("the worker's chunk", events.recv()).await.unwrap();
        if let EventBody::LogStream(l) = &event.body
            && l.chunk == "from a worker"
        {
            assert_eq!(l.execution_id, execution);
            break;
        }
    }
    // A chunk naming another execution than the path is refused, not published.
    let other = flowsync_protocol::ExecutionId::parse("other").unwrap();
    let err = s
        .client
        .publish(&flow, &execution, &chunk(other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("execution_mismatch"), "{err}");
}

/// A gateway that stalls: it answers every stream with `READY` followed by `then`, then
/// sends nothing more. Yields each connection's `Last-Event-ID`.
async fn stalling_gateway(
    then: Vec<u8>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ready = json!({"type": "READY", "flow_id": "stalled", "ts": "2026-12-07T00:00:00Z",
        "actor": Actor::system(), "data": {"connection_id": "c1", "epoch": "e1", "seq": 4,
        "resumed": false, "version": 4}});
    let mut reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n".to_vec();
    reply.extend_from_slice(format!("event: READY\ndata: {}\n\n", ready).as_bytes());
    reply.extend_from_slice(&then);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (tx, reply) = (tx.clone(), reply.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8];
                    if socket.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let resume = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("last-event-id")
                        .then(|| value.trim().to_owned())
                });
                if tx.send(resume).is_err() || socket.write_all(&reply).await.is_err() {
                    return;
                }
                // Silent, until the client hangs up.
                let _ = socket.read(&mut [0u8; 64]).await;
            });
        }
    });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reconnected_and_an_oversized_event_is_refused() {
    let (url, mut connections) = stalling_gateway(Vec::new()).await;
    let mut config = ClientConfig::new(url);
    config.idle_timeout = Duration::from_millis(200);
    config.backoff = Duration::from_millis(10);
    let client = Client::new(config).unwrap();
    let mut events = client.events(&flow_id("stalled"));
    let first = within("READY", events.next()).await.unwrap();
    assert!(matches!(first.body, EventBody::Ready(_)), "{first:?}");
    assert_eq!(connections.recv().await, Some(None));
    // Nothing more comes: the watchdog gives up on the connection and resumes from the
    // head the first READY named.
    let again = within("READY again", events.next()).await.unwrap();
    assert!(matches!(again.body, EventBody::Ready(_)), "{again:?}");
    assert_eq!(connections.recv().await, Some(Some("e1-4".to_owned())));

    let huge = format!("event: SYNC_CANVAS\ndata: \"{}\"\n\n", "x".repeat(2048));
    let (url, mut connections) = stalling_gateway(huge.into_bytes()).await;
    let mut config = ClientConfig::new(url);
    config.max_event_bytes = 1024;
    let client = Client::new(config).unwrap();
    let mut events = client.events(&flow_id("stalled"));
    within("READY", events.next()).await.unwrap();
    let err = within("the refusal", events.next()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(m) if m.contains("1024")),
        "{err}"
    );
    // The connection is gone with it: the next call connects again and resumes.
    let again = within("READY after the refusal", events.next())
        .await
        .unwrap();
    assert!(matches!(again.body, EventBody::Ready(_)), "{again:?}");
    assert_eq!(connections.recv().await, Some(None));
    assert_eq!(connections.recv().await, Some(Some("e1-4".to_owned())));
}
