//! The runner's health, for probes: it receives no traffic, so *ready* means it can take
//! jobs (the store and the bus answer, and its last step did not fail on them), and
//! *alive* means its job loop still turns — a runner whose loop hung is restarted, one
//! whose Redis is down is not (restarting would not help; it reports not ready instead).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;

use crate::Runner;

/// What the loop last did, shared with the health endpoints.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the loop's last turn.
    last_turn: AtomicU64,
    /// Whether the last step (a take, a job, a touch) failed on the store or the bus.
    step_failed: AtomicBool,
    /// A loop that has not turned for this long is hung.
    stale_after: Duration,
}

impl Health {
    /// Health of a loop that turns at least every `period` (its poll or touch period).
    pub fn new(period: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_turn: AtomicU64::new(0),
            step_failed: AtomicBool::new(false),
            stale_after: (period * 3).max(Duration::from_secs(30)),
        }
    }

    /// The loop turned; `ok`: whether the step succeeded.
    pub(crate) fn turned(&self, ok: bool) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_turn.store(now, Ordering::Relaxed);
        self.step_failed.store(!ok, Ordering::Relaxed);
    }

    /// Whether the loop turned recently enough.
    pub fn alive(&self) -> bool {
        let last = Duration::from_millis(self.last_turn.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) <= self.stale_after
    }

    /// Whether the last step succeeded (true before the first).
    pub fn step_ok(&self) -> bool {
        !self.step_failed.load(Ordering::Relaxed)
    }
}

/// Serves `/healthz` (alive) and `/readyz` (ready) for `runner` on `listen`; the caller
/// runs the returned server (it does not handle signals: the runner's loop does).
pub fn serve(listen: &str, runner: &Runner) -> anyhow::Result<(u16, Server)> {
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let port = listener.local_addr()?.port();
    let runner = web::Data::new(runner.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(runner.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((port, server))
}

async fn healthz(runner: web::Data<Runner>) -> HttpResponse {
    if runner.health().alive() {
        HttpResponse::Ok().body("alive")
    } else {
        HttpResponse::ServiceUnavailable().body("the job loop has not turned")
    }
}

async fn readyz(runner: web::Data<Runner>) -> HttpResponse {
    let store = runner.store().ping().await.is_ok();
    let bus = runner.bus().ping().await.is_ok();
    let step = runner.health().step_ok();
    if store && bus && step {
        HttpResponse::Ok().body("ready")
    } else {
        let down: Vec<&str> = [(store, "store"), (bus, "bus"), (step, "last step")]
            .iter()
            .filter(|(ok, _)| !ok)
            .map(|(_, name)| *name)
            .collect();
        HttpResponse::ServiceUnavailable().body(format!("not ready: {}", down.join(", ")))
    }
}
