//! The runner binary: load settings, open the backends, run jobs until SIGTERM.

use anyhow::Context;
use flowsync_config::Backends;
use flowsync_runner::{Runner, ServiceConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = flowsync_telemetry::init("flowsync-runner");
    let config: ServiceConfig = flowsync_config::load().context("reading the configuration")?;
    let backends = Backends::open(
        &config.store,
        &config.write_path,
        &config.bus,
        &config.bus_tuning,
        &config.presence,
        &config.jobs,
    )
    .await?;
    let runner = Runner::new(backends.store, backends.bus, backends.jobs, config.runner);
    tracing::info!(?runner, "flowsync runner taking jobs");
    runner
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}
