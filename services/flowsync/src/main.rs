//! `cargo run --release`: the whole system on http://127.0.0.1:8080.

use anyhow::Context;
use clap::Parser;
use flowsync::System;
use flowsync::config::Cli;

/// mimalloc: the write path allocates per op (request, ops, events) from many threads,
/// where glibc's malloc spent a quarter of the CPU at 100 flows (BENCHMARKS.md "Ops").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = flowsync_telemetry::init("flowsync");
    let settings = cli.settings().context("reading the configuration")?;
    let auth = settings.auth.mode;
    let host = settings
        .listen
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h)
        .to_owned();
    let system = System::build(settings).await?;
    let base = format!("http://{host}:{}", system.port());
    tracing::info!(%base, auth = ?auth, "flowsync listening");
    // The one place the binary talks to a person rather than to the logs.
    #[allow(clippy::print_stdout)]
    {
        println!(
            "\nflowsync is listening on {base} (API and event streams)\n\n\
             Open the flow editor in two browser windows: {base}/?flow=demo\n\n\
             Or try it by hand:\n  \
             curl -X POST {base}/v1/flows -H 'content-type: application/json' -d '{{\"id\":\"demo\",\"name\":\"Demo\"}}'\n  \
             curl -N {base}/v1/flows/demo/events &\n  \
             curl -X POST {base}/v1/flows/demo/ops -H 'content-type: application/json' \\\n    \
             -d '{{\"client_id\":\"cli\",\"ops\":[{{\"op_id\":\"o1\",\"type\":\"node.add\",\"node\":{{\"id\":\"n1\",\"type\":\"note\",\"position\":{{\"x\":0,\"y\":0}}}}}}]}}'\n\n\
             In a browser:\n  \
             new EventSource('{base}/v1/flows/demo/events').addEventListener('SYNC_CANVAS', e => console.log(JSON.parse(e.data)))\n"
        );
    }
    system.run_until_stopped().await.context("serving")
}
