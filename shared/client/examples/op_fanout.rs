//! `POST /ops` → `SYNC_CANVAS` at every client, embedded backends (the one binary in
//! process): one writer posts single-op requests at a fixed rate to one flow while
//! `clients` SSE streams follow it; latency from the POST to each client's receipt.
//!
//! ```sh
//! cargo run --release -p flowsync-client --example op_fanout -- 100 200 2000
//! ```
//! Arguments: SSE clients, ops per second, ops.

#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowsync::{Settings, System};
use flowsync_client::{Client, ClientConfig};
use flowsync_protocol::{ClientId, EventBody, FlowId, Op, OpsRequest};
use hdrhistogram::Histogram;
use serde_json::json;

/// The binaries' allocator (services/api/src/main.rs), so the figures are theirs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let clients = *args.first().unwrap_or(&100) as usize;
    let rate = *args.get(1).unwrap_or(&200);
    let total = *args.get(2).unwrap_or(&2_000) as usize;

    let dir = tempfile::tempdir()?;
    let mut config = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    config.http.rate_per_second = 0;
    // Every stream here is the same (anonymous) subject.
    config.sse.max_connections_per_subject = clients + 1;
    let system = System::build(config).await?;
    let client = Client::new(ClientConfig::new(format!(
        "http://127.0.0.1:{}",
        system.port()
    )))?;
    tokio::spawn(system.run_until_stopped());
    let flow = FlowId::parse("fanout")?;
    client.create_flow(Some(&flow), "Fan-out").await?;
    let post = |op: serde_json::Value| -> anyhow::Result<OpsRequest> {
        Ok(OpsRequest {
            client_id: ClientId::parse("writer")?,
            ops: vec![Op::from_value(op)?],
        })
    };
    let add = json!({"op_id": "add", "type": "node.add",
        "node": {"id": "n", "type": "note", "position": {"x": 0, "y": 0}}});
    client.post_ops(&flow, &post(add)?, None).await?;

    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut events = client
            .events(&flow)
            .only(&[flowsync_protocol::EventType::SyncCanvas]);
        let first = events.next().await?; // READY
        anyhow::ensure!(matches!(first.body, EventBody::Ready(_)));
        let (sent, latency) = (sent.clone(), latency.clone());
        readers.spawn(async move {
            let mut seen = 0;
            while seen < total {
                let Ok(event) = events.next().await else {
                    return;
                };
                let EventBody::SyncCanvas(sync) = &event.body else {
                    continue;
                };
                let now = Instant::now();
                for op in &sync.ops {
                    let Some(i) = op
                        .op_id
                        .as_str()
                        .strip_prefix('o')
                        .and_then(|i| i.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if let Some(at) = sent.lock().expect("not poisoned")[i] {
                        let us = now.duration_since(at).as_micros() as u64;
                        latency.lock().expect("not poisoned").saturating_record(us);
                    }
                    seen += 1;
                }
            }
        });
    }

    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..total {
        tick.tick().await;
        let op = json!({"op_id": format!("o{i}"), "type": "node.move", "id": "n",
            "position": {"x": i, "y": 0}});
        let request = post(op)?;
        sent.lock().expect("not poisoned")[i] = Some(Instant::now());
        client.post_ops(&flow, &request, None).await?;
    }
    while readers.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let latency = latency.lock().expect("not poisoned");
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{total} ops at {rate}/s to {clients} clients ({} deliveries in {secs:.1} s): POST → SYNC_CANVAS p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        latency.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0
    );
    Ok(())
}
