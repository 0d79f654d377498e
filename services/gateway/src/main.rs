//! The gateway binary: load settings, build, serve until SIGTERM, drain.

use anyhow::Context;
use flowsync_config::{Program, Settings};
use flowsync_gateway::Gateway;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Program::Gateway.read_command_line();
    let _telemetry = flowsync_telemetry::init("flowsync-gateway");
    let settings = Settings::load(Program::Gateway).context("reading the configuration")?;
    let gateway = Gateway::build(&settings).await?;
    tracing::info!(port = gateway.port(), "flowsync gateway listening");
    gateway.run_until_stopped().await.context("serving")
}
