//! Traces: a span per request that continues the caller's W3C trace, its context on the
//! events the request publishes (so the gateway continues it), and OTLP export. Its own
//! test binary: tracing is set up once per process, from the environment.
//! The OTLP collector is the test kit's HTTP sink (it is outside the product).

use std::sync::Arc;
use std::time::Duration;

use flowsync_api::config::ApiConfig;
use flowsync_api::startup::{Application, Backends};
use flowsync_bus::memory::MemoryBus;
use flowsync_bus::presence::{MemoryPresence, PresenceConfig};
use flowsync_bus::{Bus, BusConfig, Item};
use flowsync_store::{StoreBackend, StoreConfig};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(20);

fn hex(bytes: &str) -> Vec<u8> {
    (0..bytes.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&bytes[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_continue_the_callers_trace_onto_events_and_export_spans() {
    let collector = flowsync_testkit::HttpSink::start();
    let telemetry = flowsync_telemetry::init_with(
        "flowsync-api-test",
        Some(flowsync_telemetry::Export::Endpoint(collector.url.clone())),
    );
    assert!(flowsync_telemetry::enabled());

    let dir = tempfile::tempdir().unwrap();
    let store = StoreBackend::Sqlite {
        path: dir.path().join("t.db"),
    }
    .open(StoreConfig::default())
    .await
    .unwrap();
    let bus = MemoryBus::new(BusConfig::default());
    let config = ApiConfig {
        listen: "127.0.0.1:0".into(),
        ..ApiConfig::default()
    };
    let app = Application::with_backends(
        &config,
        Backends {
            store,
            bus: Arc::new(bus.clone()),
            presence: Arc::new(MemoryPresence::new(&PresenceConfig::default())),
            jobs: Arc::new(flowsync_bus::jobs::MemoryJobs::new(&Default::default())),
        },
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    http.post(format!("{base}/v1/flows"))
        .json(&json!({"id": "t", "name": "t"}))
        .send()
        .await
        .unwrap();
    let mut sub = bus.subscribe(&"t".parse().unwrap()).await.unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = http
        .post(format!("{base}/v1/flows/t/ops"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(
            &json!({"client_id": "c", "ops": [{"op_id": "o1", "type": "node.add",
            "node": {"id": "n1", "type": "note", "position": {"x": 0, "y": 0}}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let Item::Message(m) = tokio::time::timeout(PATIENCE, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    else {
        panic!("gone")
    };
    let event = m.event().unwrap();
    let traceparent = event
        .traceparent
        .expect("the event carries the trace context");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], trace_id, "the caller's trace goes on");
    assert_ne!(parts[2], "00f067aa0ba902b7", "under the API's own span");

    // The request's span reaches the collector, in the caller's trace.
    telemetry.flush();
    let wanted = hex(trace_id);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !collector.received(&wanted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exported span of the trace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        telemetry.flush();
    }
}
