//! One SSE client that reads a flow's `LOG_STREAM` until `expected` stamped chunks arrived
//! and prints their stamp → client latency. See `bench/log_e2e.sh`.
//!
//! ```sh
//! sse_watch <gateway addr> <flow> <expected>
//! ```

#![allow(clippy::print_stdout)]

use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(args.len() == 3, "usage: sse_watch ADDR FLOW EXPECTED");
    let expected: u64 = args[2].parse()?;
    let mut s = TcpStream::connect(&args[0]).await?;
    s.write_all(
        format!(
            "GET /v1/flows/{}/events?types=LOG_STREAM HTTP/1.1\r\nHost: bench\r\n\r\n",
            args[1]
        )
        .as_bytes(),
    )
    .await?;
    let (mut buf, mut carry) = (vec![0u8; 64 * 1024], Vec::new());
    // Subscribed once READY arrived: only then may the execution start.
    while !carry.windows(12).any(|w| w == b"event: READY") {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream closed before READY");
        carry.extend_from_slice(&buf[..n]);
    }
    println!("watching");
    let mut hist = Histogram::<u64>::new(3)?;
    let (mut got, mut first) = (0, None);
    while got < expected {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream closed after {got} chunks");
        let now = flowsync_bench::now_ns();
        carry.extend_from_slice(&buf[..n]);
        let Some(last) = carry.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        got += flowsync_bench::record_stamps(&carry[..=last], now, &mut hist)?;
        if got > 0 {
            first.get_or_insert_with(Instant::now);
        }
        carry.drain(..=last);
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
    println!(
        "{got} LOG_STREAM chunks in {secs:.2} s ({:.0}/s); token written → SSE client p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        got as f64 / secs.max(1e-9),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1e6
    );
    Ok(())
}
