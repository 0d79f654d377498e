//! Logs and traces, set up once per process: every binary calls [`init`] first and keeps
//! the returned [`Telemetry`] until it exits (dropping it flushes the traces).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`), as JSON when
//! `FLOWSYNC_LOG_JSON` is set. Traces are exported by OTLP over HTTP when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; without
//! it nothing is traced and [`traceparent`] is `None`, so untraced deployments pay nothing.
//! The W3C trace context crosses process boundaries as a `traceparent` string: the API
//! takes it from the request header and puts its own on the events it publishes, and the
//! gateway continues from there ([`continue_from`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Whether spans are exported (OTLP configured and [`init`] ran).
static TRACING: AtomicBool = AtomicBool::new(false);

/// The process's telemetry; dropping it flushes and stops the trace exporter.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports every finished span now (tests; a clean shutdown does it on drop).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Sets up logging, and trace export when OTLP is configured, for the service named
/// `service`. A second call (tests) keeps the first subscriber.
pub fn init(service: &'static str) -> Telemetry {
    init_with(
        service,
        otlp_configured().then_some(Export::FromEnvironment),
    )
}

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Export {
    /// The standard `OTEL_EXPORTER_OTLP_*` variables.
    FromEnvironment,
    /// An OTLP/HTTP collector's base URL (`/v1/traces` is appended).
    Endpoint(String),
}

/// [`init`] with the export chosen by the caller (tests).
pub fn init_with(service: &'static str, export: Option<Export>) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![if std::env::var_os("FLOWSYNC_LOG_JSON").is_some() {
            fmt.json().boxed()
        } else {
            fmt.boxed()
        }];
    let provider = export.and_then(|e| exporter(service, e));
    if let Some(p) = &provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer(service))
                .boxed(),
        );
    }
    let installed = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        TRACING.store(true, Ordering::Relaxed);
    }
    Telemetry { provider }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|e| !e.is_empty()))
}

/// An OTLP/HTTP exporter (endpoint, headers and timeout from the standard `OTEL_*`
/// variables) behind a batching provider.
fn exporter(service: &'static str, export: Export) -> Option<SdkTracerProvider> {
    let builder = opentelemetry_otlp::SpanExporter::builder().with_http();
    let builder = match export {
        Export::FromEnvironment => builder,
        Export::Endpoint(base) => builder.with_endpoint(format!("{base}/v1/traces")),
    };
    let exporter = match builder.build() {
        Ok(e) => e,
        Err(e) => {
            // Logging is not set up yet: this is the one place a binary prints directly.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("flowsync: OTLP trace export disabled: {e}");
            }
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder_empty()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    )
}

/// Whether spans are exported: callers skip trace work on hot paths otherwise.
pub fn enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// The W3C `traceparent` of the current span, when traced.
pub fn traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span named by `traceparent` (a request header, or
/// an event's field). Call it before the span is first entered. Malformed values are
/// ignored: the span then starts a trace of its own.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Resolves when the process is asked to stop: SIGINT (Ctrl-C) or SIGTERM (`docker stop`,
/// Kubernetes). Every binary's serving loop ends on it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
