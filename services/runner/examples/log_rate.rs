//! `LOG_STREAM` through the runner: an `llm` node against a local stub that streams
//! `tokens` chunks as fast as it can; chunks/s from the runner's publish to a bus
//! subscriber, and each chunk's latency (its event time to arrival). In process, embedded
//! backends; the gateway's own share is `bench/fanout.sh 1 …`.
//!
//! ```sh
//! cargo run --release -p flowsync-runner --example log_rate -- 100000
//! ```

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use flowsync_api::config::ApiConfig;
use flowsync_api::startup::{Application, Backends};
use flowsync_bus::Item;
use flowsync_bus::jobs::MemoryJobs;
use flowsync_bus::memory::MemoryBus;
use flowsync_bus::presence::MemoryPresence;
use flowsync_protocol::EventBody;
use flowsync_runner::kinds::LlmConfig;
use flowsync_runner::{Runner, RunnerConfig};
use flowsync_store::{StoreBackend, StoreConfig};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tokens: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let stub = flowsync_testkit::ChatStub::start((0..tokens).map(|i| format!("t{i} ")));
    let dir = tempfile::tempdir()?;
    let backends = Backends {
        store: StoreBackend::Sqlite {
            path: dir.path().join("b.db"),
        }
        .open(StoreConfig::default())
        .await?,
        bus: Arc::new(MemoryBus::new(Default::default())),
        presence: Arc::new(MemoryPresence::new(&Default::default())),
        jobs: Arc::new(MemoryJobs::new(&Default::default())),
    };
    let app = Application::with_backends(
        &ApiConfig {
            listen: "127.0.0.1:0".into(),
            ..ApiConfig::default()
        },
        backends.clone(),
    )?;
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    http.post(format!("{base}/v1/flows"))
        .json(&json!({"id": "bench", "name": "bench"}))
        .send()
        .await?;
    http.post(format!("{base}/v1/flows/bench/ops"))
        .json(
            &json!({"client_id": "b", "ops": [{"op_id": "o1", "type": "node.add",
            "node": {"id": "llm", "type": "llm", "position": {"x": 0, "y": 0},
                     "data": {"prompt": "go"}}}]}),
        )
        .send()
        .await?;
    let runner = Runner::new(
        backends.store.clone(),
        backends.bus.clone(),
        backends.jobs.clone(),
        RunnerConfig {
            llm: LlmConfig {
                base_url: stub.url.clone(),
                ..LlmConfig::default()
            },
            ..RunnerConfig::default()
        },
    );
    let mut sub = backends.bus.subscribe(&"bench".parse()?).await?;
    http.post(format!("{base}/v1/flows/bench/executions"))
        .send()
        .await?;
    let run = tokio::spawn(async move { runner.try_execute_next().await });
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let (mut chunks, mut first) = (0u64, None);
    loop {
        let Some(Item::Message(m)) = sub.next().await? else {
            continue;
        };
        let EventBody::LogStream(l) = m.event()?.body else {
            continue;
        };
        let now = chrono::Utc::now();
        first.get_or_insert_with(Instant::now);
        let ts = m.event()?.ts;
        latencies.record((now - ts).num_microseconds().unwrap_or(0).max(1) as u64)?;
        if l.done {
            break;
        }
        chunks += 1;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    run.await??;
    let us = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{chunks} LOG_STREAM chunks of one llm node in {secs:.2} s = {:.0} chunks/s; latency ms p50 {:.2} p99 {:.2} max {:.2}",
        chunks as f64 / secs,
        us(0.5),
        us(0.99),
        latencies.max() as f64 / 1000.0
    );
    Ok(())
}
