//! Liveness and readiness.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::startup::AppState;

/// Alive: the process answers.
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready: the store and the bus answer.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.ping().await.err().map(|e| e.to_string());
    let bus = state.bus.ping().await.err().map(|e| e.to_string());
    let body =
        json!({"store": store.as_deref().unwrap_or("ok"), "bus": bus.as_deref().unwrap_or("ok")});
    if store.is_none() && bus.is_none() {
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
