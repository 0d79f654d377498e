//! A stand-in for an OpenAI-compatible streaming endpoint (outside the product) that writes
//! `rate` tokens a second, each stamped `T<ns since the epoch>E` when written, so a reader
//! of the `LOG_STREAM` chunks can measure token → client latency. See `bench/log_e2e.sh`.
//!
//! ```sh
//! llm_pace <port> <tokens> <rate/s>
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(args.len() == 3, "usage: llm_pace PORT TOKENS RATE");
    let (tokens, rate) = (args[1], args[2]);
    let listener = TcpListener::bind(("127.0.0.1", args[0] as u16)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut head = vec![0u8; 16 * 1024];
            let mut got = 0;
            // The head and the (small) body: stop once the JSON body's end arrived.
            while !head[..got].ends_with(b"}") {
                match s.read(&mut head[got..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let _ = s.set_nodelay(true);
            let ok =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            if s.write_all(ok).await.is_err() {
                return;
            }
            let start = Instant::now();
            for i in 0..tokens {
                tokio::time::sleep_until(
                    (start + Duration::from_secs_f64(i as f64 / rate as f64)).into(),
                )
                .await;
                let chunk = format!(
                    "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"T{}E \"}}}}]}}\n\n",
                    flowsync_bench::now_ns()
                );
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"data: [DONE]\n\n").await;
        });
    }
}
