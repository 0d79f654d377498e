//! The flowsync API service (DESIGN §3, §4): takes intents over HTTP, validates them
//! against the canvas in the store, persists them and announces the results on the bus.
//! `POST …/ops` answers `202` with the accepted op ids; whether each op applied reaches
//! every client, the sender too, as `SYNC_CANVAS` or `CONFLICT` over SSE.
//!
//! # Layout
//! - [`config`]: the API's sections of the settings model.
//! - [`startup`]: `Application::build` binds, `run_until_stopped` serves.
//! - [`handoff`]: serving connections the one binary accepted itself.
//! - [`routes`]: the handlers; [`commits`]: per-flow group commit; [`announce`] turns a
//!   commit's outcome into events.
//! - [`caller`]: the token check every flow route goes through.
//! - [`error`]: route errors with their status and stable code.
//! - [`limits`]: per-subject rate limits; [`metrics`]: Prometheus metrics.
//! - [`openapi`]: `/openapi.json`, generated from the route table and the wire types.
//! - `pages`: the editor at `/editor/` (`/` leads there) and the light demo at `/demo/`.

pub mod announce;
pub mod caller;
pub mod commits;
pub mod config;
pub mod error;
pub mod handoff;
pub mod limits;
pub mod metrics;
pub mod openapi;
mod pages;
pub mod routes;
pub mod startup;
