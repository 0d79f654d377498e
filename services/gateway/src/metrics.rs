//! Prometheus metrics of the gateway (`/metrics`).

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The gateway's counters. Cheap to clone; clones share the values.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Streams open now.
    pub connections: IntGauge,
    /// Streams opened since start.
    pub connections_total: IntCounter,
    /// Streams refused, by reason (`unauthorized`, `forbidden`, `not_found`, `limit`…).
    pub refused: IntCounterVec,
    /// Flows with at least one stream here.
    pub flows: IntGauge,
    /// Events received from the bus (once per flow, not per client).
    pub events_in: IntCounter,
    /// Events written to clients (one per client per event).
    pub events_out: IntCounter,
    /// Bytes written to clients.
    pub bytes_out: IntCounter,
    /// Clients disconnected for falling behind.
    pub slow_disconnects: IntCounter,
    /// Streams that resumed from a `Last-Event-ID` without a gap.
    pub resumes: IntCounter,
    /// `RESYNC`s sent (resume impossible, or the bus lost events).
    pub resyncs: IntCounter,
}

impl Metrics {
    /// Fresh counters in a registry of their own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique");
            c
        };
        let refused = IntCounterVec::new(
            Opts::new(
                "flowsync_gateway_refused_total",
                "Streams refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(refused.clone()))
            .expect("unique");
        Self {
            connections: gauge("flowsync_gateway_connections", "Streams open now"),
            connections_total: counter(
                "flowsync_gateway_connections_total",
                "Streams opened since start",
            ),
            flows: gauge("flowsync_gateway_flows", "Flows with a stream here"),
            events_in: counter(
                "flowsync_gateway_events_in_total",
                "Events received from the bus",
            ),
            events_out: counter(
                "flowsync_gateway_events_out_total",
                "Events written to clients",
            ),
            bytes_out: counter(
                "flowsync_gateway_bytes_out_total",
                "Bytes written to clients",
            ),
            slow_disconnects: counter(
                "flowsync_gateway_slow_disconnects_total",
                "Clients disconnected for falling behind",
            ),
            resumes: counter(
                "flowsync_gateway_resumes_total",
                "Streams resumed without a gap",
            ),
            resyncs: counter("flowsync_gateway_resyncs_total", "RESYNC events sent"),
            refused,
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = vec![];
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
