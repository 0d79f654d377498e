//! Helpers shared by the load generators in `src/bin/`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set size of process `pid`, in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

/// Opens an SSE stream with a raw socket and waits for its `READY`; the socket stays open.
pub async fn open_stream(addr: &str, flow: &str, token: Option<&str>) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET /v1/flows/{flow}/events HTTP/1.1\r\nHost: bench\r\n{auth}\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(11).any(|w| w == b"event: READ") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await??;
        anyhow::ensure!(
            n > 0,
            "closed before READY: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    Ok(s)
}

/// Opens an Nchan EventSource subscription (`GET <path>`) and waits for its response head;
/// the socket stays open.
pub async fn open_nchan(addr: &str, path: &str) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    Ok(s)
}

/// Nanoseconds since the Unix epoch (the clock of `T<ns>E` stamps).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Finds every `T<ns since the epoch>E` stamp in `lines` (whole lines of an SSE stream),
/// records `now - stamp` in `hist` (ns) and returns how many it found.
pub fn record_stamps(
    lines: &[u8],
    now: u64,
    hist: &mut hdrhistogram::Histogram<u64>,
) -> anyhow::Result<u64> {
    let (mut i, mut found) = (0, 0);
    while let Some(t) = lines[i..].iter().position(|b| *b == b'T') {
        let start = i + t + 1;
        let digits = lines[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        i = start + digits;
        if digits >= 18 && lines.get(i) == Some(&b'E') {
            let sent: u64 = std::str::from_utf8(&lines[start..i])?.parse()?;
            hist.record(now.saturating_sub(sent).max(1))?;
            found += 1;
        }
    }
    Ok(found)
}

/// A `LOG_STREAM` event of `flow` as a worker publishes it: chunk `index` of node `n`.
pub fn log_event(
    flow: &flowsync_protocol::FlowId,
    index: u64,
    chunk: String,
) -> anyhow::Result<flowsync_protocol::Event> {
    use flowsync_protocol::{Actor, ActorKind, Event, EventBody, LogStream};
    Ok(Event {
        body: EventBody::LogStream(LogStream {
            execution_id: "bench".parse()?,
            node_id: "n".parse()?,
            index,
            chunk,
            done: false,
        }),
        flow_id: flow.clone(),
        seq: None,
        traceparent: None,
        ts: chrono::Utc::now(),
        actor: Actor {
            id: "bench".parse()?,
            kind: ActorKind::Worker,
            name: "bench".into(),
        },
    })
}
