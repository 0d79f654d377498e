//! The pages every API instance serves — the one binary's, and the distributed install's
//! behind its proxy (with auth on, a page takes its token as `?token=`):
//!
//! - `/editor/`: the reference flow editor, the Angular app in `clients/angular`, embedded as
//!   its production build (`npm run build` there). `/` leads there, so the editor is the UI
//!   of the one binary and of the distributed install alike (no proxy rule needed).
//! - `/demo/`: the light demo canvas on the TypeScript SDK alone (`clients/typescript/demo`);
//!   its page and style are embedded from there, its script is bundled there
//!   (`npm run build:demo`).
//!
//! The built files are committed under `assets/`, so the binaries need no Node; the
//! client tests check they match their sources.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, guard, web};

const INDEX: &str = include_str!("../../../clients/typescript/demo/index.html");
const SCRIPT: &str = include_str!("../assets/demo.js");
const STYLE: &str = include_str!("../../../clients/typescript/demo/demo.css");

const EDITOR_INDEX: &str = include_str!("../assets/editor/index.html");
const EDITOR_SCRIPT: &str = include_str!("../assets/editor/main.js");
const EDITOR_STYLE: &str = include_str!("../assets/editor/styles.css");
const EDITOR_LICENSES: &str = include_str!("../assets/editor/3rdpartylicenses.txt");

/// Same-origin scripts, styles and connections only: the page talks to this server alone,
/// and no other site may frame it (its buttons change flows; its URL may hold a token).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The editor's: the same, except that Angular components (the node editor's own) add
/// their styles as `<style>` elements. Scripts stay same-origin files only.
const EDITOR_POLICY: &str = "default-src 'none'; script-src 'self'; \
                             style-src 'self' 'unsafe-inline'; connect-src 'self'; \
                             img-src 'self' data:; base-uri 'self'; form-action 'none'; \
                             frame-ancestors 'none'";

fn asset(policy: &'static str, content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, policy))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // A page's URL may carry `?token=`: never sent on as a referrer.
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// A redirect to `path`, the query kept (`?flow=…&token=…`).
fn redirect(
    path: &'static str,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone {
    move |request: HttpRequest| {
        let location = match request.query_string() {
            "" => path.to_owned(),
            query => format!("{path}?{query}"),
        };
        std::future::ready(
            HttpResponse::TemporaryRedirect()
                .insert_header((header::LOCATION, location))
                .finish(),
        )
    }
}

/// `GET`, and `HEAD`: the same status and headers, no body (actix leaves it out), as
/// link checkers and `curl -I` expect of a page.
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Mounts the pages and their assets (public: a page load carries no token).
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    let page =
        |policy, kind, body| get_or_head().to(move || async move { asset(policy, kind, body) });
    cfg.route("/", get_or_head().to(redirect("/editor/")))
        .route("/editor", get_or_head().to(redirect("/editor/")))
        .route("/editor/", page(EDITOR_POLICY, HTML, EDITOR_INDEX))
        .route("/editor/main.js", page(EDITOR_POLICY, JS, EDITOR_SCRIPT))
        .route("/editor/styles.css", page(EDITOR_POLICY, CSS, EDITOR_STYLE))
        .route(
            "/editor/3rdpartylicenses.txt",
            page(EDITOR_POLICY, TEXT, EDITOR_LICENSES),
        )
        .route("/demo", get_or_head().to(redirect("/demo/")))
        .route("/demo/", page(POLICY, HTML, INDEX))
        .route("/demo.js", page(POLICY, JS, SCRIPT))
        .route("/demo.css", page(POLICY, CSS, STYLE));
}
