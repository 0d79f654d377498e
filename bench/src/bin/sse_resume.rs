//! Resume: how long a reconnecting client takes to get the events it missed. A client
//! reads one event, disconnects; `missed` events are published on the Redis bus; the client
//! reconnects with `Last-Event-ID` and the time until the last missed event has arrived is
//! recorded. See `bench/resume.sh`.
//!
//! ```sh
//! sse_resume <gateway addr> <redis url> <flow> <missed> <rounds>
//! ```

#![allow(clippy::print_stdout)]

use std::time::Instant;

use flowsync_bus::redis::RedisBus;
use flowsync_bus::{Bus, BusConfig};
use flowsync_protocol::{Event, FlowId};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn event(flow: &FlowId, i: u64) -> anyhow::Result<Event> {
    flowsync_bench::log_event(flow, i, format!("chunk {i} of a streamed answer"))
}

/// Opens the stream (resuming after `last`) and reads until `events` events arrived;
/// returns the id of the last one. `ready` is told when `READY` came (subscribed).
async fn read(
    addr: &str,
    flow: &FlowId,
    last: Option<&str>,
    events: usize,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let resume = last
        .map(|id| format!("Last-Event-ID: {id}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!(
            "GET /v1/flows/{flow}/events?types=LOG_STREAM HTTP/1.1\r\nHost: bench\r\n{resume}\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let (mut text, mut buf) = (String::new(), vec![0u8; 64 * 1024]);
    let mut seen = 0;
    let mut last_id = String::new();
    while seen < events {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream closed after {seen} events");
        text.push_str(std::str::from_utf8(&buf[..n])?);
        let Some(end) = text.rfind('\n') else {
            continue;
        };
        for line in text[..=end].lines() {
            if line == "event: READY" {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if let Some(id) = line.strip_prefix("id: ") {
                last_id = id.to_owned();
            } else if line == "event: LOG_STREAM" {
                seen += 1;
            }
        }
        text.drain(..=end);
    }
    Ok(last_id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: sse_resume ADDR REDIS_URL FLOW MISSED ROUNDS"
    );
    let (addr, flow) = (&args[0], FlowId::parse(&args[2])?);
    let (missed, rounds): (u64, usize) = (args[3].parse()?, args[4].parse()?);
    let bus = RedisBus::connect(&args[1], BusConfig::default())?;
    let mut took = Histogram::<u64>::new(3)?;
    let mut n = 0;
    for _ in 0..rounds {
        // Follow live for one event, then go away.
        let (subscribed, ready) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn({
            let (addr, flow) = (addr.clone(), flow.clone());
            async move { read(&addr, &flow, None, 1, Some(subscribed)).await }
        });
        ready.await?;
        bus.publish(&event(&flow, n)?).await?;
        n += 1;
        let last = reader.await??;
        let batch: Vec<Event> = (0..missed)
            .map(|i| event(&flow, n + i))
            .collect::<Result<_, _>>()?;
        for chunk in batch.chunks(100) {
            bus.publish_all(chunk).await?;
        }
        n += missed;
        let start = Instant::now();
        read(addr, &flow, Some(&last), missed as usize, None).await?;
        took.record(start.elapsed().as_micros() as u64)?;
    }
    let ms = |q: f64| took.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "resume of {missed} missed events, {rounds} rounds: connect → last event p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({:.0} events/s at p50)",
        ms(0.5),
        ms(0.99),
        took.max() as f64 / 1000.0,
        missed as f64 / (ms(0.5) / 1000.0)
    );
    Ok(())
}
