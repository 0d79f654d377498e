//! The API service binary: load settings, build, serve.

use anyhow::Context;
use flowsync_api::startup::Application;
use flowsync_config::{Program, Settings};

/// mimalloc: the write path allocates per op (request, ops, events) from many threads,
/// where glibc's malloc spent a quarter of the CPU at 100 flows (BENCHMARKS.md "Ops").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Program::Api.read_command_line();
    let _telemetry = flowsync_telemetry::init("flowsync-api");
    let settings = Settings::load(Program::Api).context("reading the configuration")?;
    let app = Application::build(&settings).await?;
    tracing::info!(port = app.port(), "flowsync API listening");
    app.run_until_stopped().await.context("serving")
}
