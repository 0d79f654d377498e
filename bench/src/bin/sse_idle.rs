//! Idle streams: RSS growth of a gateway per open SSE connection (DESIGN §5 target ≤ 4 KiB).
//!
//! ```sh
//! bench/idle.sh 10000     # starts a gateway, runs this, prints KiB per connection
//! sse_idle <gateway addr> <flow> <connections> <gateway pid>
//! sse_idle <nginx addr> /sub/<channel> <connections> <nginx pids, comma-separated>
//! ```

#![allow(clippy::print_stdout)]

use flowsync_bench::{open_nchan, open_stream, rss_kib};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: sse_idle ADDR FLOW CONNECTIONS GATEWAY_PID"
    );
    let (addr, flow) = (&args[0], &args[1]);
    let n: usize = args[2].parse()?;
    let pids: Vec<u32> = args[3]
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rss = || -> anyhow::Result<u64> { pids.iter().map(|p| rss_kib(*p)).sum() };
    // Warm up: the flow's hub and the allocator's first arenas are not per-connection costs.
    let warm: Vec<_> = futures_open(addr, flow, 100).await?;
    let before = rss()?;
    let streams = futures_open(addr, flow, n).await?;
    // Let the gateway settle (its tasks park after READY).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let after = rss()?;
    println!(
        "{n} idle streams on {addr}: server RSS {before} KiB -> {after} KiB, {:.2} KiB per connection",
        (after.saturating_sub(before)) as f64 / n as f64
    );
    drop((warm, streams));
    Ok(())
}

/// Opens `n` streams, 200 at a time.
async fn futures_open(
    addr: &str,
    flow: &str,
    n: usize,
) -> anyhow::Result<Vec<tokio::net::TcpStream>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = (n - out.len()).min(200);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let (addr, flow) = (addr.to_owned(), flow.to_owned());
                tokio::spawn(async move {
                    if flow.starts_with("/sub/") {
                        open_nchan(&addr, &flow).await
                    } else {
                        open_stream(&addr, &flow, None).await
                    }
                })
            })
            .collect();
        for t in tasks {
            out.push(t.await??);
        }
    }
    Ok(out)
}
