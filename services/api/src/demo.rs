//! The demo page at `/`: a canvas built on the TypeScript SDK (`clients/typescript/demo`),
//! served by every API instance — the one binary's, and the distributed install's behind
//! its proxy (with auth on, the page takes its token as `?token=`). The page and its style
//! are embedded from there; the script is bundled there (`npm run build:demo`) and
//! committed under `assets/`, so the binaries need no Node — the TypeScript tests check the
//! bundle matches its sources.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

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

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// Mounts the page and its assets (public: a page load carries no token).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/demo.js", web::get().to(script))
        .route("/demo.css", web::get().to(style));
}
