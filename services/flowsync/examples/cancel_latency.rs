//! Cancel → node stopped, through the one binary as a user meets it: a flow whose one
//! node waits a minute (`delay`), started over HTTP; once the node runs, `POST …/cancel`;
//! the time until the node's `cancelled` update is on the bus (the runner learnt of the
//! cancel from its flow's stream and stopped the node). Never run in CI.
//!
//! `cargo run --release -p flowsync --example cancel_latency -- [runs]`
#![allow(clippy::print_stdout)] // the report

use std::time::{Duration, Instant};

use flowsync::{Settings, System};
use flowsync_bus::Item;
use flowsync_protocol::{EventBody, FlowId, NodeStatus};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let system = System::build(Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    let flow = FlowId::parse("cancel").unwrap();
    let mut events = system.backends().bus.subscribe(&flow).await.unwrap();
    tokio::spawn(system.run_until_stopped());
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| http.post(format!("{base}{path}")).json(&body).send();
    post(
        "/v1/flows".into(),
        json!({"id": "cancel", "name": "Cancel"}),
    )
    .await
    .unwrap();
    post(
        "/v1/flows/cancel/ops".into(),
        json!({"client_id": "bench", "ops": [{"op_id": "a", "type": "node.add",
            "node": {"id": "wait", "type": "delay", "position": {"x": 0, "y": 0},
                     "data": {"ms": 60_000}}}]}),
    )
    .await
    .unwrap();
    let mut micros = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started: Value = post("/v1/flows/cancel/executions".into(), json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["execution_id"].as_str().unwrap().to_owned();
        let node_is = |status: NodeStatus, body: &EventBody| {
            matches!(body, EventBody::ExecutionUpdate(u)
                if u.execution_id.as_str() == id && u.node_status == Some(status))
        };
        next_where(&mut events, |b| node_is(NodeStatus::Running, b)).await;
        let t0 = Instant::now();
        let r = post(
            format!("/v1/flows/cancel/executions/{id}/cancel"),
            json!({}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 202);
        next_where(&mut events, |b| node_is(NodeStatus::Cancelled, b)).await;
        micros.push(t0.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "cancel → node cancelled, {runs} runs: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

async fn next_where(
    sub: &mut flowsync_bus::Subscription,
    mut wanted: impl FnMut(&EventBody) -> bool,
) {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the bus is open");
        if let Item::Message(m) = item
            && wanted(&m.event().unwrap().body)
        {
            return;
        }
    }
}
