//! Faults injected into the running cluster by killing and restarting its processes. In
//! each: no acknowledged op is lost, nothing is applied or delivered twice, and every
//! client ends with the server's canvas.

use std::collections::HashSet;
use std::time::Duration;

use flowsync_client::{Client, FlowSession, Outcome, SessionConfig};
use flowsync_cluster_tests::{Cluster, PATIENCE, Shape, Watcher, replay_history, server_canvas};
use flowsync_protocol::{ClientId, EventBody, ExecutionStatus, FlowId, NodeStatus, Op, OpsRequest};
use serde_json::{Value, json};

fn op(value: Value) -> Op {
    flowsync_client::op_from_json(value).expect("a valid op")
}

fn add(id: &str) -> Op {
    op(
        json!({"type": "node.add", "node": {"id": id, "type": "note", "position": {"x": 0, "y": 0}}}),
    )
}

async fn session(client: Client, flow: &FlowId, name: &str) -> FlowSession {
    let config = SessionConfig {
        client_id: ClientId::parse(name).unwrap(),
        op_timeout: Duration::from_secs(5),
        op_attempts: 10,
        ..SessionConfig::default()
    };
    FlowSession::open(client, flow.clone(), config)
        .await
        .unwrap()
}

async fn new_flow(cluster: &Cluster, id: &str) -> (Client, FlowId) {
    let admin = cluster.client("admin", "user");
    let flow = FlowId::parse(id).unwrap();
    admin.create_flow(Some(&flow), id).await.unwrap();
    (admin, flow)
}

/// Every applied op id appears once in the log, and the log folds to the server's state.
async fn log_is_exact(admin: &Client, flow: &FlowId) -> usize {
    let replayed = replay_history(admin, flow, flow.as_str()).await;
    assert_eq!(replayed, server_canvas(admin, flow).await);
    let history = admin.history(flow, 0, 10_000).await.unwrap();
    let ids: HashSet<_> = history.iter().map(|e| &e.op_id).collect();
    assert_eq!(ids.len(), history.len(), "an op applied twice");
    history.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resume_on_the_other_gateway_when_one_is_killed() {
    let _serial = flowsync_cluster_tests::serial().await;
    let mut cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 2,
            runners: 0,
        },
        &[],
    );
    let (admin, flow) = new_flow(&cluster, "gateway-kill").await;
    // Through the proxy: the four streams spread over both gateways.
    let mut watchers = vec![];
    for i in 0..4 {
        watchers.push(Watcher::start(cluster.client(&format!("viewer{i}"), "user"), &flow).await);
    }
    let writer = session(cluster.client("writer", "agent"), &flow, "writer").await;
    for i in 0..60 {
        if i == 20 {
            cluster.gateways[0].process.kill9();
        }
        assert!(
            writer
                .send_one(add(&format!("n{i}")))
                .await
                .unwrap()
                .applied()
                .is_some()
        );
    }
    let server = server_canvas(&admin, &flow).await;
    assert_eq!(server.version(), 60);
    let mut resumed = 0;
    for watcher in &mut watchers {
        let seen = watcher.converges_to(&server).await;
        assert!(
            seen.results.values().all(|n| *n == 1),
            "an event delivered twice"
        );
        assert_eq!(seen.results.len(), 60, "every op's result, once");
        resumed += seen.resumed;
    }
    assert!(
        resumed >= 1,
        "the killed gateway's streams resumed on the other one"
    );
    log_is_exact(&admin, &flow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_apply_exactly_once_when_an_api_is_killed_under_load() {
    let _serial = flowsync_cluster_tests::serial().await;
    let mut cluster = Cluster::start(
        Shape {
            apis: 2,
            gateways: 1,
            runners: 0,
        },
        &[],
    );
    let (admin, flow) = new_flow(&cluster, "api-kill").await;
    let mut watcher = Watcher::start(cluster.client("viewer", "user"), &flow).await;
    const WRITERS: usize = 6;
    const OPS: usize = 30;
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let client = cluster.client(&format!("writer{w}"), "agent");
        let flow = flow.clone();
        writers.spawn(async move {
            let writer = session(client, &flow, &format!("writer{w}")).await;
            for i in 0..OPS {
                let outcome = writer.send_one(add(&format!("w{w}-{i}"))).await.unwrap();
                assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
            }
        });
    }
    // Kill one API once the load is on.
    let mut progress = Watcher::start(cluster.client("progress", "user"), &flow).await;
    progress.reach(40).await;
    cluster.apis[0].process.kill9();
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let total = WRITERS * OPS;
    assert_eq!(
        log_is_exact(&admin, &flow).await,
        total,
        "each op applied exactly once"
    );
    let server = server_canvas(&admin, &flow).await;
    assert_eq!(server.nodes().len(), total);
    watcher.converges_to(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_silently() {
    let _serial = flowsync_cluster_tests::serial().await;
    let mut cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 1,
            runners: 0,
        },
        &[],
    );
    let (admin, flow) = new_flow(&cluster, "redis-restart").await;
    let mut watcher = Watcher::start(cluster.client("viewer", "user"), &flow).await;
    let writer = session(cluster.client("writer", "agent"), &flow, "writer").await;
    for i in 0..10 {
        writer.send_one(add(&format!("before{i}"))).await.unwrap();
    }
    watcher.reach(10).await;

    cluster.redis.kill();
    // The bus is down: the API cannot announce, so it does not acknowledge (503). The op
    // may be durable; the client sends it again with the same op id later.
    let pending = OpsRequest {
        client_id: ClientId::parse("raw").unwrap(),
        ops: vec![add("during")],
    };
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/flows/{flow}/ops", cluster.apis[0].url()))
        .bearer_auth(cluster.token("raw", "user"))
        .json(&pending)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "no acknowledgement without the bus");
    cluster.redis.restart();

    admin.post_ops(&flow, &pending, None).await.unwrap();
    for i in 0..10 {
        writer.send_one(add(&format!("after{i}"))).await.unwrap();
    }
    let total = log_is_exact(&admin, &flow).await;
    assert_eq!(total, 21, "the op sent during the outage applied once");
    let server = server_canvas(&admin, &flow).await;
    watcher.converges_to(&server).await;
    // The writer's session (the client crate) followed the restart too.
    tokio::time::timeout(PATIENCE, writer.wait_for_version(server.version()))
        .await
        .expect("the writer's session catches up")
        .unwrap();
    assert_eq!(writer.canvas(), server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_503_while_mongodb_is_down_and_recovers() {
    let _serial = flowsync_cluster_tests::serial().await;
    let mut cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 1,
            runners: 0,
        },
        &[],
    );
    assert!(
        cluster.mongo.is_some(),
        "this test stops its MongoDB: run it with SecantusDB (unset FLOWSYNC_TEST_MONGO_URI)"
    );
    let (admin, flow) = new_flow(&cluster, "mongo-stop").await;
    let mut watcher = Watcher::start(cluster.client("viewer", "user"), &flow).await;
    let writer = session(cluster.client("writer", "agent"), &flow, "writer").await;
    for i in 0..5 {
        writer.send_one(add(&format!("before{i}"))).await.unwrap();
    }

    cluster.mongo.as_mut().unwrap().stop();
    let request = OpsRequest {
        client_id: ClientId::parse("raw").unwrap(),
        ops: vec![add("during")],
    };
    let http = reqwest::Client::new();
    let api = cluster.apis[0].url();
    let token = cluster.token("raw", "user");
    let r = http
        .post(format!("{api}/v1/flows/{flow}/ops"))
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    let r = http
        .get(format!("{api}/v1/flows/{flow}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    cluster.mongo.as_mut().unwrap().start_again();

    // The same request again (the client could not know whether it applied): once.
    admin.post_ops(&flow, &request, None).await.unwrap();
    admin.post_ops(&flow, &request, None).await.unwrap();
    writer.send_one(add("after")).await.unwrap();
    assert_eq!(
        log_is_exact(&admin, &flow).await,
        7,
        "nothing half-applied or doubled"
    );
    let server = server_canvas(&admin, &flow).await;
    watcher.converges_to(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runner_finishes_what_a_killed_one_started() {
    let _serial = flowsync_cluster_tests::serial().await;
    let mut cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 1,
            runners: 0,
        },
        &[("FLOWSYNC_JOBS__IDLE_TIMEOUT", "3")],
    );
    let (admin, flow) = new_flow(&cluster, "runner-kill").await;
    let writer = session(cluster.client("writer", "user"), &flow, "writer").await;
    let delay = |id: &str, ms: u64| {
        op(
            json!({"type": "node.add", "node": {"id": id, "type": "delay",
            "position": {"x": 0, "y": 0}, "data": {"ms": ms}}}),
        )
    };
    let edge = |id: &str, s: &str, t: &str| {
        op(json!({"type": "edge.add", "edge": {"id": id, "source": s, "target": t}}))
    };
    writer
        .send(vec![
            delay("a", 10),
            delay("b", 4_000),
            delay("c", 10),
            edge("ab", "a", "b"),
            edge("bc", "b", "c"),
        ])
        .await
        .unwrap();
    let mut events = admin
        .events(&flow)
        .only(&[flowsync_protocol::EventType::ExecutionUpdate]);
    events.next().await.unwrap(); // READY

    cluster.add_runner(0);
    let execution = admin.start_execution(&flow).await.unwrap();
    let mut runs: std::collections::HashMap<String, u32> = Default::default();
    let mut killed = false;
    let status = loop {
        let event = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("execution progress")
            .unwrap();
        let EventBody::ExecutionUpdate(u) = event.body else {
            continue;
        };
        assert_eq!(u.execution_id, execution);
        if let (Some(node), Some(NodeStatus::Running)) = (&u.node_id, u.node_status) {
            *runs.entry(node.to_string()).or_default() += 1;
            if node.as_str() == "b" && !killed {
                // Mid-execution: a finished, b running. Another runner comes, this one dies.
                cluster.add_runner(1);
                cluster.runners[0].kill9();
                killed = true;
            }
        }
        if let Some(
            s @ (ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Cancelled),
        ) = u.status
        {
            break s;
        }
    };
    assert!(killed);
    assert_eq!(status, ExecutionStatus::Succeeded);
    assert_eq!(
        runs["a"], 1,
        "a succeeded before the crash and is not run again"
    );
    assert_eq!(
        runs["b"], 2,
        "b was running when its runner died: run again"
    );
    assert_eq!(runs["c"], 1);
    let stored = admin.execution(&flow, &execution).await.unwrap();
    assert_eq!(stored.status, ExecutionStatus::Succeeded);
    assert!(
        stored
            .nodes
            .iter()
            .all(|n| n.status == NodeStatus::Succeeded)
    );
}
