//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::startup::AppState;

/// Alive: the process answers.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the store and the bus answer. The body says which is not, the log why.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.ping().await.inspect_err(|e| {
        tracing::warn!(error = %e, "readyz: the store is unavailable");
    });
    let bus = state.bus.ping().await.inspect_err(|e| {
        tracing::warn!(error = %e, "readyz: the bus is unavailable");
    });
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let body = json!({"store": word(store.is_ok()), "bus": word(bus.is_ok())});
    if store.is_ok() && bus.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
