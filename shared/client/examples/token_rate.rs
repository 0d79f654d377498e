//! Token streaming through the whole path, embedded backends: a producer at a fixed rate →
//! [`TextWriter`] (agent) → API → SQLite → in-process bus → SSE → a watcher's session.
//! Prints tokens/s sustained and token-to-watcher latency (produced → visible at the
//! watcher).
//!
//! ```sh
//! cargo run --release -p flowsync-client --example token_rate -- 7000 1000
//! ```
//! Arguments: tokens, tokens per second (0: as fast as the writer takes them), batch
//! window in ms (default 10).

#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowsync::{Settings, System};
use flowsync_client::{Client, ClientConfig, FlowSession, SessionConfig, TextWriter};
use flowsync_protocol::{Change, EventBody, FieldPath, FlowId, NodeId, Op};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::mpsc;

/// Every token is this many bytes, so a text length says how many tokens arrived.
const WIDTH: usize = 9;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let total = *args.first().unwrap_or(&7_000) as usize;
    let rate = *args.get(1).unwrap_or(&1_000);
    let window = Duration::from_millis(*args.get(2).unwrap_or(&10));

    let dir = tempfile::tempdir()?;
    let system = System::build(Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await?;
    let client = Client::new(ClientConfig::new(format!(
        "http://127.0.0.1:{}",
        system.port()
    )))?;
    tokio::spawn(system.run_until_stopped());
    let flow = FlowId::parse("bench")?;
    client.create_flow(Some(&flow), "Bench").await?;
    let open = || FlowSession::open(client.clone(), flow.clone(), SessionConfig::default());
    let (agent, watcher) = (open().await?, open().await?);
    let add = json!({"op_id": "add", "type": "node.add", "node": {"id": "doc", "type": "note",
        "position": {"x": 0, "y": 0}, "data": {"text": ""}}});
    agent.send_one(Op::from_value(add)?).await?;

    // The watcher: when each token became visible.
    let produced: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let mut events = watcher.subscribe();
    let seen = {
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut latency =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("a histogram");
            let (mut bytes, mut last) = (0usize, Instant::now());
            while bytes < total * WIDTH {
                let Ok(event) = events.recv().await else {
                    break;
                };
                let EventBody::SyncCanvas(sync) = &event.body else {
                    continue;
                };
                let now = Instant::now();
                for change in sync.ops.iter().flat_map(|op| &op.changes) {
                    if let Change::NodeSplice { insert, .. } = change {
                        let (from, to) = (bytes / WIDTH, (bytes + insert.len()) / WIDTH);
                        let produced = produced.lock().expect("not poisoned");
                        for at in &produced[from..to] {
                            latency.saturating_record(now.duration_since(*at).as_micros() as u64);
                        }
                        bytes += insert.len();
                    }
                }
                last = now;
            }
            (latency, last)
        })
    };

    // The producer: `rate` tokens a second, in the bursts a 1 ms clock allows.
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let start = Instant::now();
    let producer = {
        let produced = produced.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut i = 0;
            while i < total {
                let due = if rate == 0 {
                    total
                } else {
                    ((start.elapsed().as_secs_f64() * rate as f64) as usize).min(total)
                };
                while i < due {
                    produced.lock().expect("not poisoned").push(Instant::now());
                    if tx.send(format!("t{i:07} ")).await.is_err() {
                        return;
                    }
                    i += 1;
                }
                tick.tick().await;
            }
        })
    };
    let text = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let report = TextWriter::new(
        &agent,
        NodeId::parse("doc")?,
        FieldPath::parse("/text").map_err(anyhow::Error::msg)?,
    )
    .window(window)
    .write(text)
    .await?;
    producer.await?;
    let (latency, last) = seen.await?;
    let secs = last.duration_since(start).as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{total} tokens at {} → {:.0} tokens/s visible; {} ops ({:.1} tokens/op); \
         produced→watcher p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        if rate == 0 {
            "full speed".into()
        } else {
            format!("{rate}/s")
        },
        total as f64 / secs,
        report.ops,
        report.tokens as f64 / report.ops.max(1) as f64,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0,
    );
    assert_eq!(
        watcher
            .text(
                "doc",
                &FieldPath::parse("/text").map_err(anyhow::Error::msg)?
            )
            .map(|t| t.len()),
        Some(total * WIDTH)
    );
    Ok(())
}
