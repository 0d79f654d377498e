//! The gateway continues the trace an event carries (its own test binary: tracing is set
//! up once per process). The OTLP collector is the test kit's HTTP sink.

use std::sync::Arc;
use std::time::Duration;

use flowsync_bus::Bus;
use flowsync_bus::memory::MemoryBus;
use flowsync_bus::presence::{MemoryPresence, PresenceConfig};
use flowsync_gateway::server::Backends;
use flowsync_gateway::{Gateway, GatewayConfig};
use flowsync_protocol::{Actor, Event, EventBody, FlowId, LogStream};
use flowsync_store::{NewFlow, StoreBackend, StoreConfig};
use futures::StreamExt;

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_continues_the_trace_of_the_event() {
    let collector = flowsync_testkit::HttpSink::start();
    let telemetry = flowsync_telemetry::init_with(
        "flowsync-gateway-test",
        Some(flowsync_telemetry::Export::Endpoint(collector.url.clone())),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = StoreBackend::Sqlite {
        path: dir.path().join("t.db"),
    }
    .open(StoreConfig::default())
    .await
    .unwrap();
    let flow = FlowId::parse("traced").unwrap();
    store
        .create_flow(NewFlow {
            id: Some(flow.clone()),
            name: "traced".into(),
            meta: Default::default(),
        })
        .await
        .unwrap();
    let bus = MemoryBus::new(Default::default());
    let config = GatewayConfig {
        listen: "127.0.0.1:0".into(),
        ..GatewayConfig::default()
    };
    let backends = Backends {
        store: Arc::new(store),
        bus: Arc::new(bus.clone()),
        presence: Arc::new(MemoryPresence::new(&PresenceConfig::default())),
    };
    let gateway = Gateway::with_backends(&config, backends).await.unwrap();
    let port = gateway.port();
    tokio::spawn(gateway.run(std::future::pending()));

    let r = reqwest::get(format!(
        "http://127.0.0.1:{port}/v1/flows/traced/events?types=LOG_STREAM"
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: READY") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    bus.publish(&Event {
        body: EventBody::LogStream(LogStream {
            execution_id: "x".parse().unwrap(),
            node_id: "n".parse().unwrap(),
            index: 0,
            chunk: "hello".into(),
            done: false,
        }),
        flow_id: flow,
        seq: None,
        ts: chrono::Utc::now(),
        actor: Actor::system(),
        traceparent: Some(format!("00-{trace_id}-b7ad6b7169203331-01")),
    })
    .await
    .unwrap();
    while !seen.contains("hello") {
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    let wanted: Vec<u8> = (0..32)
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_id[i..i + 2], 16).unwrap())
        .collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    telemetry.flush();
    while !collector.received(&wanted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fan-out span in the event's trace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        telemetry.flush();
    }
}
