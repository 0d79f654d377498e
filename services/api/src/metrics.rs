//! Prometheus metrics: requests by route and status, op outcomes, commit latency and
//! retries.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

/// The API's metrics, registered in their own registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `flowsync_api_requests_total{route, method, status}`.
    pub requests: IntCounterVec,
    /// `flowsync_api_ops_total{outcome}`: `applied`, `replayed`, or the refusal reason.
    pub ops: IntCounterVec,
    /// `flowsync_api_commit_seconds`: one request's commit, retries included.
    pub commit_seconds: Histogram,
    /// `flowsync_api_commit_retries_total`: commit attempts lost to concurrent writers.
    pub commit_retries: IntCounter,
    /// `flowsync_api_commit_group_ops`: ops per group commit (one durable write each).
    pub group_ops: Histogram,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "flowsync_api_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let ops = IntCounterVec::new(
            Opts::new(
                "flowsync_api_ops_total",
                "Ops by outcome: applied, replayed or the refusal reason",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "flowsync_api_commit_seconds",
                "Time to commit one request, retries included",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets")),
        )
        .expect("valid metric");
        let commit_retries = IntCounter::new(
            "flowsync_api_commit_retries_total",
            "Commit attempts lost to concurrent writers",
        )
        .expect("valid metric");
        let group_ops = Histogram::with_opts(
            HistogramOpts::new(
                "flowsync_api_commit_group_ops",
                "Ops per group commit: requests folded into one durable write",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 11).expect("valid buckets")),
        )
        .expect("valid metric");
        for metric in [
            Box::new(group_ops.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(requests.clone()),
            Box::new(ops.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(commit_retries.clone()),
        ] {
            registry.register(metric).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            ops,
            commit_seconds,
            commit_retries,
            group_ops,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
