//! HTTP routes (DESIGN §3 "Other endpoints").

mod flows;
mod health;
mod ops;
mod presence;

use actix_web::{HttpResponse, web};
use bytes_body::read_body;
use flowsync_protocol::{ErrorBody, FlowId};

use crate::error::ApiError;
use crate::startup::AppState;

/// Mounts every route with the shared state (also used by the one binary).
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state)
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(health::metrics))
            .service(
                web::scope("/v1/flows")
                    .route("", web::post().to(flows::create))
                    .route("", web::get().to(flows::list))
                    .route("/{flow_id}", web::get().to(flows::get))
                    .route("/{flow_id}", web::delete().to(flows::delete))
                    .route("/{flow_id}/history", web::get().to(flows::history))
                    .route("/{flow_id}/ops", web::post().to(ops::post))
                    .route("/{flow_id}/presence", web::post().to(presence::post)),
            )
            .default_service(web::to(not_found));
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody::new("route_not_found", "no such route"))
}

/// A flow id from the path.
fn flow_id(raw: &str) -> Result<FlowId, ApiError> {
    FlowId::parse(raw).map_err(|e| ApiError::invalid("invalid_id", format!("flow id {e}")))
}

mod bytes_body {
    use actix_web::web;
    use futures::StreamExt;

    use crate::error::ApiError;

    /// The request body, refused with 413 once it passes `limit` bytes (without buffering
    /// more than that).
    pub(crate) async fn read_body(
        mut payload: web::Payload,
        limit: usize,
    ) -> Result<web::BytesMut, ApiError> {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge {
                    code: "body_too_large",
                    message: format!("the body is over the {limit}-byte limit"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Parses a JSON body into `T`, naming the offending field on error.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." || inner.is_syntax() || inner.is_eof() {
            String::new()
        } else {
            path
        };
        ApiError::InvalidBody(flowsync_protocol::ParseError {
            path,
            message: inner.to_string(),
        })
    })
}
