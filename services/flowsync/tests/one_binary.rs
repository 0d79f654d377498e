//! The one binary end to end, as a browser would use it: HTTP for intents, SSE for results,
//! on one port, with nothing but the process itself.

use std::time::Duration;

use eventsource_stream::Eventsource;
use flowsync::{Settings, System};
use flowsync_bus::Item;
use flowsync_protocol::{
    EventBody, Execution, ExecutionId, ExecutionStatus, FlowId, NodeId, NodeRun, NodeStatus,
};
use futures::StreamExt;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = (String, String, Value)> + Send>>;

/// Opens a stream; yields (id, event, data).
async fn stream(base: &str, last_event_id: Option<&str>) -> Events {
    let mut req = reqwest::Client::new().get(format!("{base}/v1/flows/demo/events"));
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.bytes_stream()
        .eventsource()
        .map(|e| {
            let e = e.unwrap();
            (e.id, e.event, serde_json::from_str(&e.data).unwrap())
        })
        .boxed()
}

/// The next event of `kind`.
async fn next(events: &mut Events, kind: &str) -> (String, Value) {
    loop {
        let (id, event, data) = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        if event == kind {
            return (id, data);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_against_the_one_binary() {
    let dir = tempfile::tempdir().unwrap();
    let llm = flowsync_testkit::ChatStub::start(["Plan", ": ", "ship"]);
    let mut config = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    config.runner.llm.base_url = llm.url.clone();
    let system = System::build(config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    tokio::spawn(system.run_until_stopped());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/flows"))
        .json(&json!({"id": "demo", "name": "Demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let (mut alice, mut bob) = (stream(&base, None).await, stream(&base, None).await);
    next(&mut alice, "READY").await;
    next(&mut bob, "READY").await;
    let ops = |client: &str, op_id: &str| {
        json!({"client_id": client, "ops": [{"op_id": op_id, "type": "node.add",
            "node": {"id": "n1", "type": "note", "position": {"x": 0, "y": 0}}}]})
    };
    let r = http
        .post(format!("{base}/v1/flows/demo/ops"))
        .json(&ops("alice", "a1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The same node again: a conflict, seen by both, the sender too.
    http.post(format!("{base}/v1/flows/demo/ops"))
        .json(&ops("bob", "b1"))
        .send()
        .await
        .unwrap();
    let mut last_seen = String::new();
    for events in [&mut alice, &mut bob] {
        let (id, sync) = next(events, "SYNC_CANVAS").await;
        assert_eq!(sync["data"]["ops"][0]["op_id"], "a1");
        assert_eq!(sync["data"]["version"], 1);
        let (_, conflict) = next(events, "CONFLICT").await;
        assert_eq!(conflict["data"]["op_id"], "b1");
        assert_eq!(conflict["data"]["reason"], "duplicate");
        last_seen = id;
    }

    // Bob goes away; what he missed comes back on resume, then live events.
    drop(bob);
    http.post(format!("{base}/v1/flows/demo/ops"))
        .json(
            &json!({"client_id": "alice", "ops": [{"op_id": "a2", "type": "node.move",
            "id": "n1", "position": {"x": 5, "y": 5}}]}),
        )
        .send()
        .await
        .unwrap();
    let mut bob = stream(&base, Some(&last_seen)).await;
    let (_, ready) = next(&mut bob, "READY").await;
    assert_eq!(ready["data"]["resumed"], true);
    let (_, sync) = next(&mut bob, "SYNC_CANVAS").await;
    assert_eq!(sync["data"]["ops"][0]["op_id"], "a2");
    let flow: Value = http
        .get(format!("{base}/v1/flows/demo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flow["version"], 2);
    assert_eq!(flow["nodes"][0]["position"], json!({"x": 5.0, "y": 5.0}));

    // An execution: the in-process runner streams the llm node's tokens to every client.
    http.post(format!("{base}/v1/flows/demo/ops"))
        .json(
            &json!({"client_id": "alice", "ops": [{"op_id": "a3", "type": "node.add",
            "node": {"id": "ask", "type": "llm", "position": {"x": 0, "y": 0},
                     "data": {"prompt": "What next?"}}}]}),
        )
        .send()
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/v1/flows/demo/executions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut text = String::new();
    loop {
        let (_, chunk) = next(&mut bob, "LOG_STREAM").await;
        if chunk["data"]["done"] == true {
            break;
        }
        text.push_str(chunk["data"]["chunk"].as_str().unwrap());
    }
    assert_eq!(text, "Plan: ship");
    loop {
        let (_, update) = next(&mut alice, "EXECUTION_UPDATE").await;
        if update["data"]["status"] == "succeeded" {
            break;
        }
    }

    // The gateway's refusals come through the one port too.
    let r = http
        .get(format!("{base}/v1/flows/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "flow_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_acknowledged_ops_and_finishes_unfinished_executions() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    let first = System::build(config()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", first.port());
    let (handle, store) = (first.handle(), first.backends().store.clone());
    let served = tokio::spawn(first.run_until_stopped());
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/flows"))
        .json(&json!({"id": "keep", "name": "Keep"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    for i in 0..20 {
        let r = http
            .post(format!("{base}/v1/flows/keep/ops"))
            .json(
                &json!({"client_id": "c", "ops": [{"op_id": format!("o{i}"), "type": "node.add",
                "node": {"id": format!("n{i}"), "type": "delay", "position": {"x": i, "y": 0}}}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "op {i} acknowledged");
    }
    // An execution the API stored as the process died, before the runner took it.
    let flow = FlowId::parse("keep").unwrap();
    let now = chrono::Utc::now();
    store
        .create_execution(&Execution {
            id: ExecutionId::parse("left").unwrap(),
            flow_id: flow.clone(),
            flow_version: 20,
            status: ExecutionStatus::Queued,
            error: None,
            created_at: now,
            updated_at: now,
            nodes: (0..20)
                .map(|i| NodeRun {
                    node_id: NodeId::parse(format!("n{i}")).unwrap(),
                    status: NodeStatus::Pending,
                    output: None,
                    error: None,
                    log: String::new(),
                    log_index: 0,
                })
                .collect(),
        })
        .await
        .unwrap();
    drop(store);
    handle.stop(false);
    served.await.unwrap().unwrap();

    // Started again on the same data directory.
    let second = System::build(config()).await.unwrap();
    let base = format!("http://127.0.0.1:{}", second.port());
    let mut updates = second.backends().bus.subscribe(&flow).await.unwrap();
    tokio::spawn(second.run_until_stopped());
    let state: Value = http
        .get(format!("{base}/v1/flows/keep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["version"], 20, "every acknowledged op is there");
    assert_eq!(state["nodes"].as_array().unwrap().len(), 20);
    loop {
        let item = tokio::time::timeout(PATIENCE, updates.next())
            .await
            .expect("the execution runs")
            .unwrap()
            .expect("the subscription is open");
        let Item::Message(m) = item else { continue };
        if let EventBody::ExecutionUpdate(u) = m.event().unwrap().body
            && u.node_id.is_none()
            && u.status == Some(ExecutionStatus::Succeeded)
        {
            break;
        }
    }
    let execution: Value = http
        .get(format!("{base}/v1/flows/keep/executions/left"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(execution["status"], "succeeded");
}

#[tokio::test]
async fn refuses_to_run_without_auth_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let err = System::build(Settings {
        listen: "0.0.0.0:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("without auth"), "{err}");
}

#[tokio::test]
async fn serves_the_demo_and_the_editor_same_origin_only() {
    let dir = tempfile::tempdir().unwrap();
    let system = System::build(Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    tokio::spawn(system.run_until_stopped());
    for (path, kind, needle) in [
        ("/demo/", "text/html", "/demo.js"),
        ("/demo.js", "text/javascript", "FlowSession"),
        ("/demo.css", "text/css", ".node"),
        ("/editor/", "text/html", "main.js"),
        ("/editor/main.js", "text/javascript", "flowsync"),
        ("/editor/styles.css", "text/css", ".node"),
        ("/editor/3rdpartylicenses.txt", "text/plain", "ngx-vflow"),
    ] {
        let r = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
        // HEAD: the same answer without its body.
        let r = reqwest::Client::new()
            .head(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "HEAD {path}");
        assert_eq!(
            r.headers()["content-type"],
            headers["content-type"],
            "HEAD {path}"
        );
        assert!(r.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    // `/` leads to the editor, `/editor` and `/demo` to their pages; the flow and token kept.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (from, to) in [
        ("/?flow=f&token=t", "/editor/?flow=f&token=t"),
        ("/editor", "/editor/"),
        ("/demo?flow=f", "/demo/?flow=f"),
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let r = client
                .request(method.clone(), format!("{base}{from}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 307, "{method} {from}");
            assert_eq!(r.headers()["location"], to, "{method} {from}");
        }
    }
}

/// A system with auth off (the default) on a free port; its base URL.
async fn local_system(dir: &tempfile::TempDir) -> String {
    let system = System::build(Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    tokio::spawn(system.run_until_stopped());
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_local_clients_do_not_share_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let base = local_system(&dir).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/flows"))
        .json(&json!({"id": "demo", "name": "Demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // 150 tabs: past the default 100 streams per subject, which every local caller would
    // be without auth.
    let mut tabs = vec![];
    for _ in 0..150 {
        let mut events = stream(&base, None).await;
        next(&mut events, "READY").await;
        tabs.push(events);
    }
    // 300 requests at once from several clients: past the default 100/s with a burst of
    // 200 per subject.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (http, base) = (reqwest::Client::new(), base.clone());
        requests.spawn(async move {
            let mut statuses = vec![];
            for _ in 0..50 {
                let r = http
                    .get(format!("{base}/v1/flows/demo"))
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        });
    }
    while let Some(statuses) = requests.join_next().await {
        assert!(
            statuses.unwrap().iter().all(|s| *s == 200),
            "a request refused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_kept_alive_connection_is_served_too() {
    let dir = tempfile::tempdir().unwrap();
    let base = local_system(&dir).await;
    // One connection: a request the API answers, then the stream on the same socket (a
    // browser's EventSource may reuse a kept-alive connection).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/v1/flows"))
        .json(&json!({"id": "demo", "name": "Demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .get(format!("{base}/v1/flows/demo/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = r
        .bytes_stream()
        .eventsource()
        .map(|e| {
            let e = e.unwrap();
            (e.id, e.event, serde_json::from_str(&e.data).unwrap())
        })
        .boxed();
    next(&mut events, "READY").await;
    http.post(format!("{base}/v1/flows/demo/ops"))
        .json(
            &json!({"client_id": "c", "ops": [{"op_id": "o1", "type": "node.add",
            "node": {"id": "n1", "type": "note", "position": {"x": 0, "y": 0}}}]}),
        )
        .send()
        .await
        .unwrap();
    let (_, sync) = next(&mut events, "SYNC_CANVAS").await;
    assert_eq!(sync["data"]["ops"][0]["op_id"], "o1");
}
