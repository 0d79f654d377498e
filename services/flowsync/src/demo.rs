//! The demo page at `/`: a canvas built on the TypeScript SDK (`clients/typescript/demo`).
//! The page and its style are embedded from there; the script is bundled there (`npm run
//! build:demo`) and committed under `assets/`, so the binary needs no Node — the
//! TypeScript tests check the bundle matches its sources.

use actix_web::HttpResponse;
use actix_web::http::header;

const INDEX: &str = include_str!("../../../clients/typescript/demo/index.html");
const SCRIPT: &str = include_str!("../assets/demo.js");
const STYLE: &str = include_str!("../../../clients/typescript/demo/demo.css");

/// Same-origin scripts, styles and connections only: the page talks to this server alone.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

pub(crate) async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}
