//! Fan-out: `clients` SSE streams on one channel, events published at a fixed rate;
//! deliveries/s and publish→client latency. The same generator drives the flowsync gateway
//! (events published on the Redis bus, as the API does) and nginx + Nchan (events POSTed
//! to its publisher location), so the two are measured alike. See `bench/fanout.sh`.
//!
//! ```sh
//! sse_fanout flowsync <gateway addr> <redis url> <clients> <rate/s> <seconds> [pids]
//! sse_fanout ops      <flowsync addr> -          <clients> <rate/s> <seconds> [pids]
//! sse_fanout nchan    <nginx addr>   -           <clients> <rate/s> <seconds> [pids]
//! sse_fanout floor    -              -           <clients> <rate/s> <seconds>
//! ```
//!
//! `ops` measures a flowsync that both takes the ops and streams (the one binary, see
//! `bench/onebinary.sh`): each event is a `node.update` of node `n` POSTed to its API, and
//! what the clients read is the `SYNC_CANVAS` it commits to.
//!
//! `floor` is no server at all: this process writes each event to every client's socket
//! from a task per client (a tokio broadcast, as the gateway's streams do, and nothing
//! else: no HTTP parsing, no JSON, no history). It measures what 1,000 loopback streams
//! cost this machine's kernel and runtime — the floor under any server measured here
//! with its clients on the same cores.
//!
//! Each event carries its publish time as `T<ns since the epoch>E` in its payload; each
//! client finds it in what it reads and records the latency. The optional pids (comma-
//! separated) are the server's processes, whose CPU time over the run is reported.

#![allow(clippy::print_stdout)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowsync_bus::redis::RedisBus;
use flowsync_bus::{Bus, BusConfig};
use flowsync_protocol::FlowId;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The channel (flow) every client follows; with `FLOWS=n` (n > 1) the clients and the
/// events spread over `fanout0` … `fanout<n-1>` (client i follows flow i mod n; events go
/// round the flows).
const CHANNEL: &str = "fanout";

fn channel(flows: usize, i: usize) -> String {
    if flows <= 1 {
        CHANNEL.to_owned()
    } else {
        format!("{CHANNEL}{}", i % flows)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The gateway, events published on the Redis bus.
    Flowsync,
    /// A flowsync API and its streams on one address, events POSTed as ops.
    Ops,
    Nchan,
    /// This process, writing raw frames.
    Floor,
}

/// Total CPU seconds (user + system) of a process so far.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 6,
        "usage: sse_fanout flowsync|ops|nchan ADDR REDIS_URL|- CLIENTS RATE SECONDS [PID]"
    );
    let target = match args[0].as_str() {
        "flowsync" => Target::Flowsync,
        "ops" => Target::Ops,
        "nchan" => Target::Nchan,
        "floor" => Target::Floor,
        other => anyhow::bail!("unknown target {other}"),
    };
    let floor = match target {
        Target::Floor => Some(Floor::start().await?),
        _ => None,
    };
    let addr = match &floor {
        Some(floor) => floor.addr.clone(),
        None => args[1].clone(),
    };
    let clients: usize = args[3].parse()?;
    let rate: f64 = args[4].parse()?;
    let seconds: f64 = args[5].parse()?;
    // The server's processes (nginx: master and workers), comma-separated.
    let pids: Vec<u32> = match args.get(6) {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![],
    };
    let flows: usize = std::env::var("FLOWS")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(1)
        .max(1);
    let cpu_now = || -> Option<f64> {
        (!pids.is_empty()).then(|| pids.iter().filter_map(|p| cpu_seconds(*p)).sum())
    };

    let received = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = vec![];
    let mut hists = vec![];
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients.max(1));
    for i in 0..clients {
        let flow = channel(flows, i);
        let (addr, received, measuring, ready) = (
            addr.clone(),
            received.clone(),
            measuring.clone(),
            ready_tx.clone(),
        );
        let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
        hists.push(hist.clone());
        tasks.push(tokio::spawn(async move {
            subscriber(target, &addr, &flow, received, measuring, hist, ready).await
        }));
    }
    drop(ready_tx);
    for _ in 0..clients {
        ready_rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("a subscriber failed to connect"))?;
    }

    let publisher = match floor {
        Some(floor) => Publisher::Floor(floor.frames),
        None => Publisher::new(target, &addr, &args[2])?,
    };
    // Warm up, then measure a fixed number of events at the offered rate.
    for i in 0..20 {
        publisher.publish(&channel(flows, i)).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    received.store(0, Ordering::SeqCst);
    measuring.store(true, Ordering::SeqCst);
    let cpu0 = cpu_now();
    let total = (rate * seconds).round() as u64;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let publisher = Arc::new(publisher);
    let mut inflight = tokio::task::JoinSet::new();
    while sent < total {
        tick.tick().await;
        let (p, flow) = (publisher.clone(), channel(flows, sent as usize));
        inflight.spawn(async move { p.publish(&flow).await });
        sent += 1;
        while inflight.len() > 256 {
            inflight.join_next().await;
        }
    }
    while inflight.join_next().await.is_some() {}
    // Each event reaches the clients of its flow.
    let expected = (0..total as usize)
        .map(|e| (0..clients).filter(|c| c % flows == e % flows).count() as u64)
        .sum::<u64>();
    // Wait for the deliveries to land (bounded), then stop measuring.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_now()) {
        (Some(a), Some(b)) => format!(", server CPU {:.0}%", (b - a) / elapsed * 100.0),
        _ => String::new(),
    };
    let rss: u64 = pids
        .iter()
        .filter_map(|p| flowsync_bench::rss_kib(*p).ok())
        .sum();
    let cpu = if pids.is_empty() {
        cpu
    } else {
        format!("{cpu}, RSS {:.1} MiB", rss as f64 / 1024.0)
    };
    measuring.store(false, Ordering::SeqCst);
    let got = received.load(Ordering::SeqCst);
    for t in &tasks {
        t.abort();
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for h in hists {
        hist.add(&*h.lock().unwrap_or_else(|p| p.into_inner()))?;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1e6;
    println!(
        "{} flows={flows} clients={clients} offered={rate:.0} msg/s sent={total}: delivered {got}/{expected} in {elapsed:.2} s = {:.0} deliveries/s; latency ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}{cpu}",
        args[0],
        got as f64 / elapsed,
        ms(0.5),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1e6
    );
    Ok(())
}

/// Publishes events stamped with their publish time.
enum Publisher {
    Bus(RedisBus),
    Ops(reqwest::Client, String, AtomicU64),
    Http(reqwest::Client, String),
    Floor(tokio::sync::broadcast::Sender<Arc<[u8]>>),
}

/// The `floor` target's server: every connection gets the response head, then each frame.
struct Floor {
    addr: String,
    frames: tokio::sync::broadcast::Sender<Arc<[u8]>>,
}

impl Floor {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let (frames, _) = tokio::sync::broadcast::channel::<Arc<[u8]>>(1024);
        let sender = frames.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut rx = sender.subscribe();
                tokio::spawn(async move {
                    let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = socket.read(&mut buf).await?;
                        anyhow::ensure!(n > 0, "closed before the end of its request");
                        head.extend_from_slice(&buf[..n]);
                    }
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
                        .await?;
                    while let Ok(frame) = rx.recv().await {
                        socket.write_all(&frame).await?;
                    }
                    anyhow::Ok(())
                });
            }
        });
        Ok(Self { addr, frames })
    }
}

/// Nchan's publisher location of `flow`.
fn nchan_pub(base: &str, flow: &str) -> String {
    format!("{base}/pub/{flow}")
}

impl Publisher {
    fn new(target: Target, addr: &str, redis: &str) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Flowsync => Self::Bus(RedisBus::connect(redis, BusConfig::default())?),
            Target::Ops => Self::Ops(
                reqwest::Client::builder().tcp_nodelay(true).build()?,
                format!("http://{addr}"),
                AtomicU64::new(0),
            ),
            Target::Nchan => Self::Http(reqwest::Client::new(), format!("http://{addr}")),
            Target::Floor => anyhow::bail!("the floor publishes through its own server"),
        })
    }

    async fn publish(&self, flow: &str) -> anyhow::Result<()> {
        let stamp = format!("T{}E", flowsync_bench::now_ns());
        match self {
            Self::Bus(bus) => {
                bus.publish(&flowsync_bench::log_event(&FlowId::parse(flow)?, 0, stamp)?)
                    .await?;
            }
            Self::Ops(http, base, next) => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    "{{\"client_id\":\"bench\",\"ops\":[{{\"op_id\":\"b{}-{n}\",\"type\":\"node.update\",\"id\":\"n\",\"patch\":{{\"t\":\"{stamp}\"}}}}]}}",
                    std::process::id()
                );
                http.post(format!("{base}/v1/flows/{flow}/ops"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
            Self::Floor(frames) => {
                // The one binary's `SYNC_CANVAS` frame for a `node.update` (427 bytes; ~450
                // with this one's stamps in `id` and `seq`).
                let frame = format!(
                    "id: e-{n}\nevent: SYNC_CANVAS\ndata: {{\"seq\":{n},\"type\":\"SYNC_CANVAS\",\"data\":{{\"prev_version\":1,\"version\":2,\"client_id\":\"bench\",\"ops\":[{{\"op_id\":\"b1-1\",\"type\":\"node.update\",\"version\":2,\"changes\":[{{\"kind\":\"node.upsert\",\"node\":{{\"id\":\"n\",\"type\":\"note\",\"position\":{{\"x\":0.0,\"y\":0.0}},\"data\":{{\"t\":\"{stamp}\"}},\"version\":2}}}}]}}]}},\"flow_id\":\"{flow}\",\"ts\":\"2026-12-07T10:23:29.650335863Z\",\"actor\":{{\"id\":\"local\",\"kind\":\"user\",\"name\":\"local\"}}}}\n\n",
                    n = flowsync_bench::now_ns()
                );
                // No receiver yet is not an error: the clients come and go.
                let _ = frames.send(Arc::from(frame.into_bytes()));
            }
            Self::Http(http, base) => {
                // A payload of the same size as flowsync's event JSON.
                let body = format!(
                    "{{\"type\":\"LOG_STREAM\",\"data\":{{\"execution_id\":\"bench\",\"node_id\":\"n\",\"index\":0,\"chunk\":\"{stamp}\",\"done\":false}},\"flow_id\":\"{flow}\",\"ts\":\"2026-01-01T00:00:00.000000000Z\",\"actor\":{{\"id\":\"bench\",\"kind\":\"worker\",\"name\":\"bench\"}}}}"
                );
                http.post(nchan_pub(base, flow))
                    .body(body)
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }
        Ok(())
    }
}

/// One SSE client: counts events and records each one's latency while measuring.
async fn subscriber(
    target: Target,
    addr: &str,
    flow: &str,
    received: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
    hist: Arc<Mutex<Histogram<u64>>>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let path = match target {
        Target::Flowsync | Target::Ops | Target::Floor => format!("/v1/flows/{flow}/events"),
        Target::Nchan => format!("/sub/{flow}"),
    };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry: Vec<u8> = vec![];
    let mut announced = false;
    loop {
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream closed");
        if !announced {
            announced = true;
            let _ = ready.send(()).await;
        }
        let now = flowsync_bench::now_ns();
        carry.extend_from_slice(&buf[..n]);
        // Whole lines only: a stamp `T<digits>E` never spans a newline.
        let Some(last) = carry.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        if measuring.load(Ordering::Relaxed) {
            let mut hist = hist.lock().unwrap_or_else(|p| p.into_inner());
            let n = flowsync_bench::record_stamps(&carry[..=last], now, &mut hist)?;
            received.fetch_add(n, Ordering::Relaxed);
        }
        carry.drain(..=last);
    }
}
