//! HTTP routes (DESIGN §3 "Other endpoints").

mod executions;
mod flows;
mod health;
mod ops;
mod presence;

pub(crate) use flows::CreateFlow;
pub(crate) use presence::{PresenceList, PresenceUpdate};

use actix_web::{HttpResponse, web};
use bytes_body::{read_body, read_body_up_to};
use flowsync_protocol::{ErrorBody, FlowId};

use crate::error::ApiError;
use crate::startup::AppState;

/// One documented route: how it is served and how `/openapi.json` describes it. Serving
/// goes through this table only, so no route is served undocumented.
#[derive(Clone, Copy)]
pub struct Route {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path, with `{flow_id}` parameters (the same syntax in actix and OpenAPI).
    pub path: &'static str,
    /// One line for the docs.
    pub summary: &'static str,
    /// Schema name of the JSON request body, if any.
    pub body: Option<&'static str>,
    /// Success status and the schema name of its JSON body, if any.
    pub ok: (u16, Option<&'static str>),
    /// Whether a bearer token is required (when auth is on).
    pub auth: bool,
    /// The handler, set on the route of `method` and `path`.
    serve: fn(actix_web::Route) -> actix_web::Route,
}

impl Route {
    /// Mounts the route: its handler at its method and path.
    fn mount(&self, cfg: &mut web::ServiceConfig) {
        let method = match self.method {
            "get" => web::get(),
            "post" => web::post(),
            "delete" => web::delete(),
            other => unreachable!("a route of method {other}: add it here"),
        };
        cfg.route(self.path, (self.serve)(method));
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        summary: "Alive",
        body: None,
        ok: (200, None),
        auth: false,
        serve: |r| r.to(health::healthz),
    },
    Route {
        method: "get",
        path: "/readyz",
        summary: "Store and bus reachable",
        body: None,
        ok: (200, None),
        auth: false,
        serve: |r| r.to(health::readyz),
    },
    Route {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        body: None,
        ok: (200, None),
        auth: false,
        serve: |r| r.to(health::metrics),
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        body: None,
        ok: (200, None),
        auth: false,
        serve: |r| r.to(crate::openapi::serve),
    },
    Route {
        method: "post",
        path: "/v1/flows",
        summary: "Create a flow",
        body: Some("CreateFlow"),
        ok: (201, Some("Flow")),
        auth: true,
        serve: |r| r.to(flows::create),
    },
    Route {
        method: "get",
        path: "/v1/flows",
        summary: "List flows (cursor `after`, `limit`)",
        body: None,
        ok: (200, None),
        auth: true,
        serve: |r| r.to(flows::list),
    },
    Route {
        method: "get",
        path: "/v1/flows/{flow_id}",
        summary: "A flow's state; ETag, If-None-Match, `?at=<version>`",
        body: None,
        ok: (200, Some("Flow")),
        auth: true,
        serve: |r| r.to(flows::get),
    },
    Route {
        method: "delete",
        path: "/v1/flows/{flow_id}",
        summary: "Delete a flow",
        body: None,
        ok: (204, None),
        auth: true,
        serve: |r| r.to(flows::delete),
    },
    Route {
        method: "get",
        path: "/v1/flows/{flow_id}/history",
        summary: "Applied ops after `after`, at most `limit`",
        body: None,
        ok: (200, None),
        auth: true,
        serve: |r| r.to(flows::history),
    },
    Route {
        method: "post",
        path: "/v1/flows/{flow_id}/ops",
        summary: "Send ops; results arrive as SYNC_CANVAS/CONFLICT events",
        body: Some("OpsRequest"),
        ok: (202, None),
        auth: true,
        serve: |r| r.to(ops::post),
    },
    Route {
        method: "get",
        path: "/v1/flows/{flow_id}/presence",
        summary: "Who is connected to the flow now, across every gateway",
        body: None,
        ok: (200, Some("PresenceList")),
        auth: true,
        serve: |r| r.to(presence::get),
    },
    Route {
        method: "post",
        path: "/v1/flows/{flow_id}/presence",
        summary: "Publish my cursor/selection (PRESENCE update)",
        body: Some("PresenceUpdate"),
        ok: (202, None),
        auth: true,
        serve: |r| r.to(presence::post),
    },
    Route {
        method: "post",
        path: "/v1/flows/{flow_id}/executions",
        summary: "Start an execution of the flow's current version → 202 {execution_id}",
        body: None,
        ok: (202, None),
        auth: true,
        serve: |r| r.to(executions::start),
    },
    Route {
        method: "get",
        path: "/v1/flows/{flow_id}/executions",
        summary: "The flow's executions, newest first (`limit`)",
        body: None,
        ok: (200, None),
        auth: true,
        serve: |r| r.to(executions::list),
    },
    Route {
        method: "get",
        path: "/v1/flows/{flow_id}/executions/{execution_id}",
        summary: "An execution: status, per-node status, outputs, errors, logs",
        body: None,
        ok: (200, Some("Execution")),
        auth: true,
        serve: |r| r.to(executions::get),
    },
    Route {
        method: "post",
        path: "/v1/flows/{flow_id}/executions/{execution_id}/cancel",
        summary: "Cancel a queued or running execution",
        body: None,
        ok: (202, None),
        auth: true,
        serve: |r| r.to(executions::cancel),
    },
    Route {
        method: "post",
        path: "/v1/flows/{flow_id}/executions/{execution_id}/events",
        summary: "An external worker publishes EXECUTION_UPDATE or LOG_STREAM ({type, data})",
        body: None,
        ok: (202, None),
        auth: true,
        serve: |r| r.to(executions::publish),
    },
];

/// The path pattern of the documented route that `path` falls under, matched as actix
/// matches it (`{name}`: one non-empty segment) but without its regexes: the request
/// counter labels every request with it, and walking actix's resource map for the label
/// cost as much as routing the request.
pub fn documented_pattern(path: &str) -> Option<&'static str> {
    ROUTES.iter().map(|r| r.path).find(|pattern| {
        let (mut want, mut got) = (pattern.split('/'), path.split('/'));
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
                _ => return false,
            }
        }
    })
}

/// The path of the busiest route: clients POST their ops there.
const HOT_PATH: &str = "/v1/flows/{flow_id}/ops";

/// Mounts every route with the shared state (also used by the one binary).
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(state);
        // A query string that does not parse answers the API's JSON error body, like
        // every other refusal (actix's default is a plain-text 400).
        cfg.app_data(
            web::QueryConfig::default()
                .error_handler(|e, _| ApiError::invalid("invalid_query", e.to_string()).into()),
        );
        // actix tries routes in the order they are mounted, a regex per pattern with a
        // parameter; no two patterns match one path, so the order only sets the cost, and
        // the hottest route, ops, goes first.
        let (hot, rest): (Vec<&Route>, Vec<&Route>) =
            ROUTES.iter().partition(|r| r.path == HOT_PATH);
        for route in hot.into_iter().chain(rest) {
            route.mount(cfg);
        }
        crate::pages::configure(cfg);
        cfg.default_service(web::to(not_found));
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
    use std::time::Duration;

    use actix_web::{HttpRequest, http::header, web};
    use futures::StreamExt;

    use crate::error::ApiError;

    /// The request body within the API's limits (`http.max_body_bytes`,
    /// `http.body_timeout`): see [`read_body_up_to`].
    pub(crate) async fn read_body(
        req: &HttpRequest,
        payload: web::Payload,
        limits: &flowsync_config::HttpLimits,
    ) -> Result<web::BytesMut, ApiError> {
        read_body_up_to(req, payload, limits.max_body_bytes, limits.body_timeout).await
    }

    /// The request body, refused with 413 once it passes `limit` bytes (without buffering
    /// more than that) — at once when its `Content-Length` says so — and with 408 unless it
    /// has all arrived within `timeout`.
    pub(crate) async fn read_body_up_to(
        req: &HttpRequest,
        mut payload: web::Payload,
        limit: usize,
        timeout: Duration,
    ) -> Result<web::BytesMut, ApiError> {
        let too_large = || ApiError::TooLarge {
            code: "body_too_large",
            message: format!("the body is over the {limit}-byte limit"),
        };
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut body = web::BytesMut::new();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(body),
                Err(_) => return Err(ApiError::SlowBody(timeout)),
            };
            let chunk = chunk.map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_falls_under_the_pattern_actix_would_match() {
        for route in ROUTES {
            let path = route
                .path
                .replace("{flow_id}", "f-1")
                .replace("{execution_id}", "e");
            assert_eq!(documented_pattern(&path), Some(route.path), "{path}");
        }
        for path in [
            "/",
            "/v1",
            "/v1/flows/",
            "/v1/flows//ops",
            "/v1/flows/f/ops/x",
            "/v1/flows/f/opsx",
            "/editor/",
        ] {
            assert_eq!(documented_pattern(path), None, "{path}");
        }
    }
}
