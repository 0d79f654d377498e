//! The API end to end over HTTP, with real backends: embedded (SQLite + in-process bus) and
//! distributed (MongoDB + Redis from the test kit). Results are observed on the bus, never
//! in the HTTP response.

use std::time::Duration;

use flowsync_api::config::ApiConfig;
use flowsync_api::startup::Application;
use flowsync_bus::presence::PresenceEntry;
use flowsync_bus::{Item, Subscription};
use flowsync_protocol::{Actor, ActorKind, ConflictReason, Event, EventBody, FlowId};
use flowsync_testkit::{Place, Setup, token};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

/// API instances over a test's [`Place`].
trait Spawn {
    /// Starts an API instance on a free port; returns its base URL.
    async fn spawn(&self) -> String {
        self.spawn_with(|_| {}).await
    }

    /// Like `spawn`, with settings adjusted first.
    async fn spawn_with(&self, adjust: impl FnOnce(&mut ApiConfig)) -> String;
}

impl Spawn for Place {
    async fn spawn_with(&self, adjust: impl FnOnce(&mut ApiConfig)) -> String {
        let backends = self.open().await;
        let mut config = ApiConfig {
            listen: "127.0.0.1:0".into(),
            auth: flowsync_testkit::hs256(),
            ..ApiConfig::default()
        };
        adjust(&mut config);
        let app = Application::with_backends(&config, backends).unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        base
    }
}

fn admin() -> String {
    token("admin", "user", &["*"], "read write execute publish")
}

/// A test's world: backends, one API, an HTTP client.
struct World {
    backends: Place,
    base: String,
    http: reqwest::Client,
}

impl World {
    async fn new(setup: Setup) -> Self {
        let backends = Place::new(setup);
        let base = backends.spawn().await;
        Self {
            backends,
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn create_flow(&self, id: &str) -> FlowId {
        let r = self
            .post("/v1/flows", &admin(), json!({"id": id, "name": "Flow"}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        FlowId::parse(id).unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn ops(&self, flow: &str, token: &str, ops: Value) -> reqwest::Response {
        self.post(
            &format!("/v1/flows/{flow}/ops"),
            token,
            json!({"client_id": "tab", "ops": ops}),
        )
        .await
    }

    async fn subscribe(&self, flow: &FlowId) -> Subscription {
        self.backends
            .open()
            .await
            .bus
            .subscribe(flow)
            .await
            .unwrap()
    }

    async fn flow(&self, id: &str) -> Value {
        self.get(&format!("/v1/flows/{id}"), &admin())
            .await
            .json()
            .await
            .unwrap()
    }
}

async fn next_event(sub: &mut Subscription) -> Event {
    match tokio::time::timeout(PATIENCE, sub.next())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
    {
        Item::Message(m) => m.event().unwrap(),
        Item::Gone => panic!("unexpected Gone"),
    }
}

fn add(op_id: &str, node: &str) -> Value {
    json!({"op_id": op_id, "type": "node.add", "node": {"id": node, "type": "note", "position": {"x": 0, "y": 0}}})
}

flowsync_testkit::both!(
    flows_crud_etags_and_listing,
    results_travel_on_the_bus_not_in_the_response,
    three_agents_conflict_end_to_end,
    a_retried_op_id_applies_once_and_is_announced_again,
    if_match_and_sequential_batches,
    auth_and_bad_input_are_answered_synchronously,
    two_api_instances_keep_a_gap_free_log,
    presence_updates_are_published,
    presence_lists_the_connections_gateways_recorded,
);

async fn flows_crud_etags_and_listing(setup: Setup) {
    let w = World::new(setup).await;
    let r = w
        .post(
            "/v1/flows",
            &admin(),
            json!({"id": "f1", "name": "First", "meta": {"k": 1}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["etag"], "W/\"0\"");
    assert_eq!(r.headers()["location"], "/v1/flows/f1");
    let r = w
        .post("/v1/flows", &admin(), json!({"id": "f1", "name": "Again"}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "flow_exists"
    );
    w.create_flow("f2").await;
    let made: Value = w
        .post("/v1/flows", &admin(), json!({"name": "Auto"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(made["id"].as_str().is_some_and(|id| id.len() == 32));

    let r = w.get("/v1/flows/f1", &admin()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = w
        .http
        .get(format!("{}/v1/flows/f1", w.base))
        .bearer_auth(admin())
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    let page: Value = w
        .get("/v1/flows?limit=2", &admin())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["flows"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest: Value = w
        .get(&format!("/v1/flows?limit=2&after={next}"), &admin())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["flows"].as_array().unwrap().len(), 1);
    // A token for f1 lists only f1.
    let f1_only = token("u", "user", &["f1"], "read");
    let page: Value = w.get("/v1/flows", &f1_only).await.json().await.unwrap();
    assert_eq!(
        page["flows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["f1"]
    );

    let mut sub = w.subscribe(&FlowId::parse("f2").unwrap()).await;
    let r = w
        .http
        .delete(format!("{}/v1/flows/f2", w.base))
        .bearer_auth(admin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        next_event(&mut sub).await.event_type(),
        flowsync_protocol::EventType::FlowDeleted
    );
    assert_eq!(
        w.get("/v1/flows/f2", &admin()).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = w
        .http
        .delete(format!("{}/v1/flows/f2", w.base))
        .bearer_auth(admin())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(w.get("/healthz", &admin()).await.status(), StatusCode::OK);
    assert_eq!(w.get("/readyz", &admin()).await.status(), StatusCode::OK);
}

async fn results_travel_on_the_bus_not_in_the_response(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    let mut sub = w.subscribe(&f).await;
    let agent = token("agent-1", "agent", &["f"], "read write");
    let r = w
        .ops("f", &agent, json!([add("o1", "a"), add("o2", "b")]))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"accepted": ["o1", "o2"]})
    );
    let e = next_event(&mut sub).await;
    assert_eq!((e.actor.id.as_str(), e.flow_id.as_str()), ("agent-1", "f"));
    let EventBody::SyncCanvas(sync) = e.body else {
        panic!("{e:?}")
    };
    assert_eq!(
        (sync.prev_version, sync.version, sync.client_id.as_str()),
        (0, 2, "tab")
    );
    assert_eq!(
        sync.ops
            .iter()
            .map(|o| o.op_id.as_str())
            .collect::<Vec<_>>(),
        ["o1", "o2"]
    );

    let flow = w.flow("f").await;
    assert_eq!(flow["version"], 2);
    let at1: Value = w
        .get("/v1/flows/f?at=1", &admin())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(at1["nodes"].as_array().unwrap().len(), 1);
    let r = w.get("/v1/flows/f?at=9", &admin()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "version_not_found"
    );
    let history: Value = w
        .get("/v1/flows/f/history?after=1", &admin())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["op_id"], "o2");
    assert_eq!(history[0]["actor"]["kind"], "agent");
}

async fn three_agents_conflict_end_to_end(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    w.ops("f", &admin(), json!([add("seed", "n")])).await;
    let mut sub = w.subscribe(&f).await;
    let patch = |agent: &str, n: u32, base: u64| json!([{"op_id": format!("{agent}-{n}"), "type": "node.update", "id": "n", "patch": {agent: true}, "base_version": base}]);
    for agent in ["agent-a", "agent-b", "agent-c"] {
        let r = w
            .ops(
                "f",
                &token(agent, "agent", &["f"], "read write"),
                patch(agent, 1, 1),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "a conflict is a result, not an HTTP error"
        );
    }
    let mut losers = vec![];
    for _ in 0..3 {
        let e = next_event(&mut sub).await;
        match e.body {
            EventBody::SyncCanvas(_) => assert_eq!(e.actor.id.as_str(), "agent-a"),
            EventBody::Conflict(c) => {
                assert_eq!(c.reason, ConflictReason::VersionMismatch);
                losers.push(e.actor.id.to_string());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(losers, ["agent-b", "agent-c"]);
    for agent in &losers {
        let version = w.flow("f").await["version"].as_u64().unwrap();
        w.ops(
            "f",
            &token(agent, "agent", &["f"], "read write"),
            patch(agent, 2, version),
        )
        .await;
        assert!(matches!(
            next_event(&mut sub).await.body,
            EventBody::SyncCanvas(_)
        ));
    }
    let node = &w.flow("f").await["nodes"][0]["data"];
    assert_eq!(
        *node,
        json!({"agent-a": true, "agent-b": true, "agent-c": true})
    );
}

async fn a_retried_op_id_applies_once_and_is_announced_again(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    let mut sub = w.subscribe(&f).await;
    let ops = json!([add("o1", "a"), {"op_id": "o2", "type": "node.move", "id": "a", "position": {"x": 5, "y": 5}}]);
    w.ops("f", &admin(), ops.clone()).await;
    let EventBody::SyncCanvas(first) = next_event(&mut sub).await.body else {
        panic!()
    };
    let r = w.ops("f", &admin(), ops).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for original in &first.ops {
        let EventBody::SyncCanvas(again) = next_event(&mut sub).await.body else {
            panic!()
        };
        assert_eq!(
            again.ops,
            vec![original.clone()],
            "the original entry, same version"
        );
        assert_eq!(
            (again.prev_version, again.version),
            (original.version - 1, original.version)
        );
    }
    assert_eq!(w.flow("f").await["version"], 2, "applied once");
}

async fn if_match_and_sequential_batches(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    let mut sub = w.subscribe(&f).await;
    let r = w
        .http
        .post(format!("{}/v1/flows/f/ops", w.base))
        .bearer_auth(admin())
        .header("If-Match", "W/\"7\"")
        .json(&json!({"client_id": "tab", "ops": [add("o1", "a"), add("o2", "b")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for op in ["o1", "o2"] {
        let EventBody::Conflict(c) = next_event(&mut sub).await.body else {
            panic!()
        };
        assert_eq!(
            (c.op_id.as_str(), c.reason),
            (op, ConflictReason::VersionMismatch)
        );
    }
    w.ops(
        "f",
        &admin(),
        json!([add("o3", "a"), add("o4", "a"), add("o5", "c")]),
    )
    .await;
    let EventBody::SyncCanvas(s) = next_event(&mut sub).await.body else {
        panic!()
    };
    assert_eq!(s.ops.len(), 1);
    for (op, reason) in [
        ("o4", ConflictReason::Duplicate),
        ("o5", ConflictReason::Skipped),
    ] {
        let EventBody::Conflict(c) = next_event(&mut sub).await.body else {
            panic!()
        };
        assert_eq!((c.op_id.as_str(), c.reason), (op, reason));
    }
    assert_eq!(w.flow("f").await["version"], 1);
}

async fn auth_and_bad_input_are_answered_synchronously(setup: Setup) {
    let w = World::new(setup).await;
    w.create_flow("a").await;
    w.create_flow("b").await;
    let for_a = token("u", "user", &["a"], "read write");
    let reader = token("r", "user", &["*"], "read");
    let code = |v: Value| v["error"]["code"].as_str().unwrap().to_owned();
    let ops = json!([add("o1", "n")]);

    let r = w
        .http
        .post(format!("{}/v1/flows/a/ops", w.base))
        .json(&json!({"client_id": "t", "ops": ops}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(code(r.json().await.unwrap()), "unauthorized");
    assert_eq!(
        w.ops("a", "garbage", ops.clone()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = w.ops("b", &for_a, ops.clone()).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "a token for flow a on flow b"
    );
    assert_eq!(
        w.get("/v1/flows/b", &for_a).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.get("/v1/flows/b/history", &for_a).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.ops("a", &reader, ops.clone()).await.status(),
        StatusCode::FORBIDDEN,
        "read scope cannot write"
    );
    assert_eq!(
        w.post("/v1/flows", &for_a, json!({"name": "x"}))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let r = w
        .ops(
            "a",
            &for_a,
            json!([{"op_id": "x", "type": "node.move", "id": "n", "position": {"x": "1", "y": 0}}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(body["error"]["details"]["path"], "ops[0].position.x");
    let r = w
        .http
        .post(format!("{}/v1/flows/a/ops", w.base))
        .bearer_auth(&for_a)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = w
        .ops(
            "a",
            &for_a,
            json!([{"op_id": "x", "type": "node.teleport"}]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let many: Vec<Value> = (0..1001)
        .map(|i| add(&format!("m{i}"), &format!("n{i}")))
        .collect();
    let r = w.ops("a", &for_a, json!(many)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(r.json().await.unwrap()), "too_many_ops");
    let huge = json!([{"op_id": "h", "type": "node.add", "node": {"type": "t", "position": {"x": 0, "y": 0}, "data": {"x": "y".repeat(2 << 20)}}}]);
    let r = w.ops("a", &for_a, huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(code(r.json().await.unwrap()), "body_too_large");
    let r = w
        .http
        .post(format!("{}/v1/flows/a/ops", w.base))
        .bearer_auth(&for_a)
        .header("If-Match", "7")
        .json(&json!({"client_id": "t", "ops": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        w.ops("nope", &admin(), ops.clone()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        w.ops("bad%20id", &admin(), ops.clone()).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        w.get("/v1/nothing", &admin()).await.status(),
        StatusCode::NOT_FOUND
    );
    // Nothing of the refused requests reached the flows.
    for f in ["a", "b"] {
        assert_eq!(w.flow(f).await["version"], 0);
    }
}

async fn two_api_instances_keep_a_gap_free_log(setup: Setup) {
    let w = World::new(setup).await;
    w.create_flow("hot").await;
    let second = w.backends.spawn().await;
    let mut tasks = vec![];
    for (i, base) in [w.base.clone(), second].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for k in 0..40 {
                let body = json!({"client_id": format!("c{i}"), "ops": [add(&format!("i{i}-{k}"), &format!("n{i}-{k}"))]});
                loop {
                    let r = http.post(format!("{base}/v1/flows/hot/ops")).bearer_auth(admin()).json(&body).send().await.unwrap();
                    match r.status() {
                        StatusCode::ACCEPTED => break,
                        StatusCode::SERVICE_UNAVAILABLE => continue, // retry the same op ids
                        other => panic!("{other}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let history: Value = w
        .get("/v1/flows/hot/history?limit=1000", &admin())
        .await
        .json()
        .await
        .unwrap();
    let versions: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=80).collect::<Vec<_>>());
    assert_eq!(w.flow("hot").await["nodes"].as_array().unwrap().len(), 80);
}

async fn presence_updates_are_published(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    let mut sub = w.subscribe(&f).await;
    let viewer = token("viewer", "user", &["f"], "read");
    // The viewer's stream, as its gateway records it; and someone else's.
    let presence = w.backends.open().await.presence;
    for (connection, actor) in [("c1", "viewer"), ("c2", "alice")] {
        let entry = PresenceEntry {
            connection_id: connection.parse().unwrap(),
            actor: Actor {
                id: actor.parse().unwrap(),
                kind: ActorKind::User,
                name: actor.into(),
            },
            since: chrono::Utc::now(),
        };
        presence.join(&f, &entry).await.unwrap();
    }
    let update =
        |connection: &str| json!({"connection_id": connection, "state": {"cursor": [9, 9]}});
    for (path, connection, status, code) in [
        (
            "/v1/flows/f/presence",
            "c2",
            StatusCode::FORBIDDEN,
            "not_yours",
        ),
        (
            "/v1/flows/f/presence",
            "c3",
            StatusCode::NOT_FOUND,
            "connection_not_found",
        ),
        (
            "/v1/flows/nope/presence",
            "c1",
            StatusCode::NOT_FOUND,
            "flow_not_found",
        ),
    ] {
        let viewer_everywhere = token("viewer", "user", &["*"], "read");
        let r = w.post(path, &viewer_everywhere, update(connection)).await;
        assert_eq!(r.status(), status, "{path} {connection}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let r = w
        .post(
            "/v1/flows/f/presence",
            &viewer,
            json!({"connection_id": "c1", "state": {"cursor": [1, 2]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let e = next_event(&mut sub).await;
    assert_eq!(e.seq, None, "presence is not sequenced");
    let EventBody::Presence(p) = e.body else {
        panic!()
    };
    assert_eq!(
        (p.actor.id.as_str(), p.state),
        ("viewer", Some(json!({"cursor": [1, 2]})))
    );
    let r = w
        .post(
            "/v1/flows/f/presence",
            &viewer,
            json!({"connection_id": "c1", "state": "x".repeat(10_000)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

async fn presence_lists_the_connections_gateways_recorded(setup: Setup) {
    let w = World::new(setup).await;
    let f = w.create_flow("f").await;
    let viewer = token("viewer", "user", &["f"], "read");
    let r = w.get("/v1/flows/f/presence", &viewer).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"connections": []}));
    // A gateway records a stream (here directly, through the same presence set).
    let entry = PresenceEntry {
        connection_id: "c1".parse().unwrap(),
        actor: Actor {
            id: "alice".parse().unwrap(),
            kind: ActorKind::Agent,
            name: "Alice".into(),
        },
        since: chrono::Utc::now(),
    };
    w.backends
        .open()
        .await
        .presence
        .join(&f, &entry)
        .await
        .unwrap();
    let listed: Value = w
        .get("/v1/flows/f/presence", &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["connections"][0]["connection_id"], "c1");
    assert_eq!(listed["connections"][0]["actor"]["kind"], "agent");
    let stranger = token("s", "user", &["g"], "read");
    assert_eq!(
        w.get("/v1/flows/f/presence", &stranger).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        w.get("/v1/flows/nope/presence", &admin()).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_are_rate_limited_with_retry_after() {
    let backends = Place::new(Setup::Embedded);
    let base = backends
        .spawn_with(|c| {
            c.http.rate_per_second = 1;
            c.http.rate_burst = 3;
        })
        .await;
    let http = reqwest::Client::new();
    let noisy = token("noisy", "agent", &["*"], "read");
    for _ in 0..3 {
        assert_eq!(
            http.get(format!("{base}/v1/flows"))
                .bearer_auth(&noisy)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    let r = http
        .get(format!("{base}/v1/flows"))
        .bearer_auth(&noisy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    let calm = token("calm", "user", &["*"], "read");
    assert_eq!(
        http.get(format!("{base}/v1/flows"))
            .bearer_auth(&calm)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let backends = Place::new(Setup::Embedded);
    let base = backends
        .spawn_with(|c| c.http.cors_origins = vec!["https://app.example".into()])
        .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/v1/flows/f/ops"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, if-match",
            )
            .send()
    };
    let ok = preflight("https://app.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_op_outcomes() {
    let w = World::new(Setup::Embedded).await;
    w.create_flow("f").await;
    w.ops(
        "f",
        &admin(),
        json!([add("o1", "a"), add("o2", "a"), add("o3", "b")]),
    )
    .await;
    let text = w.get("/metrics", &admin()).await.text().await.unwrap();
    for line in [
        "flowsync_api_ops_total{outcome=\"applied\"} 1",
        "flowsync_api_ops_total{outcome=\"duplicate\"} 1",
        "flowsync_api_ops_total{outcome=\"skipped\"} 1",
        "flowsync_api_requests_total{method=\"POST\",route=\"/v1/flows/{flow_id}/ops\",status=\"202\"} 1",
        "flowsync_api_requests_total{method=\"POST\",route=\"/v1/flows\",status=\"201\"} 1",
        "flowsync_api_commit_seconds_count 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_valid_and_lists_every_route() {
    let w = World::new(Setup::Embedded).await;
    let doc: Value = w.get("/openapi.json", &admin()).await.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Valid per a real validator (installed into .venv by ./scripts/test).
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test, which installs openapi-spec-validator",
        python.display()
    );
    let mut child = std::process::Command::new(&python)
        .args(["-c", "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(sys.stdin))"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "invalid OpenAPI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every documented route is served (routes are registered from the same table, so
    // nothing is served undocumented).
    let routes = flowsync_api::routes::ROUTES;
    assert_eq!(routes.len(), 17);
    for route in routes {
        assert!(
            doc["paths"][route.path][route.method].is_object(),
            "{route:?} missing from the document"
        );
        let url = format!("{}{}", w.base, route.path.replace("{flow_id}", "nope"));
        let method = reqwest::Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let r = w
            .http
            .request(method, url)
            .bearer_auth(admin())
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            let body: Value = r.json().await.unwrap_or_default();
            assert_ne!(
                body["error"]["code"], "route_not_found",
                "{route:?} is not served"
            );
        }
    }
    for name in [
        "OpsRequest",
        "Flow",
        "Event",
        "ErrorBody",
        "CreateFlow",
        "PresenceUpdate",
        "FlowId",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_off_is_refused_beyond_loopback() {
    let backends = Place::new(Setup::Embedded).open().await;
    let config = ApiConfig {
        listen: "0.0.0.0:0".into(),
        ..ApiConfig::default()
    };
    let err = Application::with_backends(&config, backends).unwrap_err();
    assert!(err.to_string().contains("without auth"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_with_too_many_ops_waiting_answers_503_busy() {
    let mut place = Place::new(Setup::Embedded);
    place.store.max_queued_ops = 0; // nothing may wait behind a commit in flight
    let path = place.sqlite_path();
    let app = Application::with_backends(
        &ApiConfig {
            listen: "127.0.0.1:0".into(),
            ..ApiConfig::default()
        },
        place.open().await,
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    http.post(format!("{base}/v1/flows"))
        .json(&json!({"id": "busy", "name": "Busy"}))
        .send()
        .await
        .unwrap();
    let add = |op: &str| {
        json!({"client_id": "c", "ops": [{"op_id": op, "type": "node.add",
            "node": {"id": op, "type": "note", "position": {"x": 0, "y": 0}}}]})
    };
    // Another writer holds the database: the first commit waits in flight.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = tokio::spawn({
        let (http, url, body) = (http.clone(), format!("{base}/v1/flows/busy/ops"), add("a"));
        async move { http.post(url).json(&body).send().await.unwrap().status() }
    });
    // Once its group formed (the API counts it), the first commit is in flight.
    loop {
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
        let text = metrics.text().await.unwrap();
        if text.contains("flowsync_api_commit_group_ops_count 1") {
            break;
        }
        tokio::task::yield_now().await;
    }
    let second = http
        .post(format!("{base}/v1/flows/busy/ops"))
        .json(&add("b"))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], "flow_busy");
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(first.await.unwrap(), 202, "the commit in flight completes");
}
