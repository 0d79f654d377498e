//! The runner binary: load settings, open the backends, serve the probes, run jobs until
//! SIGINT or SIGTERM (the execution it runs is finished first).

use anyhow::Context;
use flowsync_config::{Program, Settings};
use flowsync_runner::Runner;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Program::Runner.read_command_line();
    let _telemetry = flowsync_telemetry::init("flowsync-runner");
    let settings = Settings::load(Program::Runner).context("reading the configuration")?;
    let runner = Runner::new(
        settings.open_store().await?,
        settings.open_bus()?,
        settings.open_jobs()?,
        settings.runner.clone(),
    );
    let (port, probes) = flowsync_runner::health::serve(&settings.listen, &runner)?;
    let probes_handle = probes.handle();
    tokio::spawn(probes);
    tracing::info!(?runner, port, "flowsync runner taking jobs");
    runner.run(flowsync_telemetry::shutdown_signal()).await;
    probes_handle.stop(true).await;
    Ok(())
}
