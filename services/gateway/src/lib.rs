//! flowsync SSE gateway (DESIGN §3 "Events", §5): `GET /v1/flows/{id}/events` for every
//! browser, agent and worker that follows a flow.
//!
//! Each flow with a stream here has one bus subscription; every event is framed as SSE
//! bytes once and shared by all of the flow's streams through a bounded ring, which is
//! also each client's queue: a client that falls a whole ring behind is disconnected and
//! resumes from its `Last-Event-ID` (replayed from the bus history, or `RESYNC` when history
//! no longer covers it). Streams run on the raw socket once the request head is parsed.
//!
//! # Layout
//! - [`config`]: the gateway's sections of the settings model.
//! - [`server`]: the process: accept, route, answer the short requests, drain on SIGTERM.
//! - `admission`: whether a stream may open (flow id, token, scope, connection limits)
//!   and its joining the flow.
//! - [`http`]: the request head and short answers.
//! - [`stream`]: one stream: `READY`, replay, live frames, slow-client policy.
//! - [`hub`]: per-flow fan-out: one bus subscription, frames made once, the shared ring.
//! - [`membership`]: a stream's place in its flow — presence, and the hub's lifetime.
//! - `tick`: the process's timer — heartbeats, presence refreshes.
//! - [`frame`]: SSE framing and the `?types=` filter.
//! - [`flows`]: the one thing the gateway asks of the store (a flow's version).
//! - [`metrics`]: Prometheus counters.

mod admission;
pub mod config;
pub mod flows;
pub mod frame;
pub mod http;
pub mod hub;
pub mod membership;
pub mod metrics;
pub mod server;
pub mod stream;
mod tick;

pub use config::GatewayConfig;
pub use server::Gateway;
