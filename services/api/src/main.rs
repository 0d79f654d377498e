//! The API service binary: load settings, build, serve.

use anyhow::Context;
use flowsync_api::startup::Application;
use flowsync_config::{Program, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Program::Api.read_command_line();
    let _telemetry = flowsync_telemetry::init("flowsync-api");
    let settings = Settings::load(Program::Api).context("reading the configuration")?;
    let app = Application::build(&settings).await?;
    tracing::info!(port = app.port(), "flowsync API listening");
    app.run_until_stopped().await.context("serving")
}
