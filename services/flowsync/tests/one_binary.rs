//! The one binary end to end, as a browser would use it: HTTP for intents, SSE for results,
//! on one port, with nothing but the process itself.

use std::time::Duration;

use eventsource_stream::Eventsource;
use flowsync::{System, SystemConfig};
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
    let mut config = SystemConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..SystemConfig::default()
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

#[tokio::test]
async fn refuses_to_run_without_auth_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let err = System::build(SystemConfig {
        listen: "0.0.0.0:0".into(),
        data_dir: dir.path().to_owned(),
        ..SystemConfig::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("without auth"), "{err}");
}
