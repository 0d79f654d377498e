//! Publish throughput of the Redis bus from one process (issue: bus benchmark).
//!
//! ```sh
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release -p flowsync-bus --example publish_rate -- redis://127.0.0.1:6390 64 300000 1
//! ```
//! Arguments: Redis URL, concurrent publishers, total events, flows.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use flowsync_bus::redis::RedisBus;
use flowsync_bus::{Bus, BusConfig};
use flowsync_protocol::{Actor, Event, EventBody, FlowId, LogStream};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let tasks: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let total: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let flows: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(100);
    let config = BusConfig {
        namespace: format!("bench{}:", std::process::id()),
        pool_size: tasks,
        ..BusConfig::default()
    };
    let bus = Arc::new(RedisBus::connect(&url, config).expect("redis url"));
    let event = |flow: usize, i: usize| Event {
        body: EventBody::LogStream(LogStream {
            execution_id: "x1".parse().unwrap(),
            node_id: "n1".parse().unwrap(),
            index: i as u64,
            chunk: "token ".into(),
            done: false,
        }),
        flow_id: FlowId::parse(format!("f{flow}")).unwrap(),
        seq: None,
        traceparent: None,
        ts: chrono::Utc::now(),
        actor: Actor::system(),
    };
    bus.publish(&event(0, 0)).await.expect("redis reachable");
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in (t..total).step_by(tasks) {
                    bus.publish(&event(i % flows, i)).await.unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {total} events to {flows} flows with {tasks} publishers in {secs:.2} s: {:.0} events/s",
        total as f64 / secs
    );
}
