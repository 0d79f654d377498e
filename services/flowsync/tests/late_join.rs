//! A client that joins a run at any moment sees what one that was there from the start
//! sees: the one binary, an LLM node caught halfway through its answer (the test kit's
//! gated chat stub), and the Rust client's `follow_run` joining then.

use std::time::Duration;

use flowsync::{Settings, System};
use flowsync_bus::Item;
use flowsync_client::{Client, ClientConfig};
use flowsync_protocol::{EventBody, ExecutionId, FlowId, NodeId};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_joining_halfway_through_a_streamed_node_ends_with_the_models_text() {
    let first: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    let rest: Vec<String> = (20..40).map(|i| format!("t{i} ")).collect();
    let whole: String = first.iter().chain(&rest).cloned().collect();
    let (stub, gate) = flowsync_testkit::ChatStub::gated(first.clone(), rest);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    settings.runner.llm.base_url = stub.url.clone();
    let system = System::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    let flow = FlowId::parse("late").unwrap();
    let mut from_start = system.backends().bus.subscribe(&flow).await.unwrap();
    tokio::spawn(system.run_until_stopped());

    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    assert_eq!(
        post("/v1/flows", json!({"id": "late", "name": "Late"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let add = json!({"client_id": "c", "ops": [{"op_id": "a", "type": "node.add",
        "node": {"id": "ask", "type": "llm", "position": {"x": 0, "y": 0},
                 "data": {"prompt": "Count"}}}]});
    assert_eq!(post("/v1/flows/late/ops", add).await.unwrap().status(), 202);
    let started: Value = post("/v1/flows/late/executions", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let execution = ExecutionId::parse(started["execution_id"].as_str().unwrap()).unwrap();

    // Half of the answer has been streamed (and so stored): the model waits at the gate.
    let mut seen = String::new();
    let mut chunks = 0;
    while chunks < first.len() {
        if let EventBody::LogStream(l) = next_event(&mut from_start).await {
            seen.push_str(&l.chunk);
            chunks += 1;
        }
    }

    // A client joins now; once it shows the run, the model goes on.
    let client = Client::new(ClientConfig::new(&base)).unwrap();
    let node = NodeId::parse("ask").unwrap();
    let mut at_join = None;
    let joined = {
        let (node, gate) = (node.clone(), gate.clone());
        client.follow_run(&flow, &execution, move |view| {
            if at_join.is_none() {
                at_join = Some(view.text(&node).unwrap_or_default().to_owned());
                assert_eq!(
                    at_join.as_deref(),
                    Some(seen.as_str()),
                    "the text so far, at once"
                );
                gate.open();
            }
        })
    };
    let view = tokio::time::timeout(PATIENCE, joined)
        .await
        .expect("the run ends")
        .unwrap();
    assert_eq!(
        view.text(&node),
        Some(whole.as_str()),
        "exactly the model's text"
    );
    assert_eq!(view.execution().nodes[0].output, Some(json!(whole)));
    // And what the reader that was there from the start saw is the same.
    let mut from_start_text = String::new();
    let mut index = 0;
    loop {
        match next_event(&mut from_start).await {
            EventBody::LogStream(l) if l.index >= first.len() as u64 => {
                assert_eq!(l.index, first.len() as u64 + index, "in order, no gap");
                index += 1;
                from_start_text.push_str(&l.chunk);
                if l.done {
                    break;
                }
            }
            _ => {}
        }
    }
    let first_half: String = first.concat();
    assert_eq!(first_half + &from_start_text, whole);
}

async fn next_event(sub: &mut flowsync_bus::Subscription) -> EventBody {
    loop {
        let item = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the bus is open");
        if let Item::Message(m) = item {
            return m.event().unwrap().body;
        }
    }
}
