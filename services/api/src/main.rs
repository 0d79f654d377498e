//! The API service binary: load settings, build, serve.

use anyhow::Context;
use flowsync_api::config::ApiConfig;
use flowsync_api::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = flowsync_telemetry::init("flowsync-api");
    let config = ApiConfig::load().context("reading the configuration")?;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "flowsync API listening");
    app.run_until_stopped().await.context("serving")
}
