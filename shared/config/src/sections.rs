//! The sections of the settings model that belong to one service each: `http` (the API),
//! `sse` (the event streams) and `runner`. The shared sections live beside what they
//! configure: `store` and `write_path` in `flowsync-store`, `bus`, `bus_tuning`,
//! `presence` and `jobs` in `flowsync-bus`, `auth` in `flowsync-auth`.

use std::time::Duration;

use flowsync_auth::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Limits of HTTP requests to the API (DESIGN §7).
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// Largest request body, in bytes; a `Content-Length` past it is refused (`413`)
    /// before any of the body is read.
    pub max_body_bytes: usize,
    /// Seconds a request's whole body may take to arrive, else `408 body_timeout` (a
    /// client that sends one byte of five thousand no longer holds a connection for
    /// ever). 15 s: the largest body at 70 KiB/s, a slow phone's uplink.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub body_timeout: Duration,
    /// Largest presence `state`, in bytes.
    pub max_presence_bytes: usize,
    /// Longest page of `GET /v1/flows` and `/history`.
    pub max_page: usize,
    /// Requests per second per subject (token `sub`); 0 turns the limit off. Without auth
    /// there are no subjects, and no per-subject limits.
    pub rate_per_second: u32,
    /// Requests a subject may send at once above the steady rate.
    pub rate_burst: u32,
    /// Presence updates per second per subject; 0 turns the limit off.
    pub presence_per_second: u32,
    /// Browser origins allowed by CORS (comma-separated, e.g. `https://app.example.com`);
    /// none: no CORS headers.
    pub cors_origins: Vec<String>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(15),
            max_presence_bytes: 4096,
            max_page: 1000,
            rate_per_second: 100,
            rate_burst: 200,
            presence_per_second: 30,
            cors_origins: vec![],
        }
    }
}

/// How event streams behave and what bounds them.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SseConfig {
    /// Seconds between heartbeats (`: ping` comments, or `PING` events for
    /// `?heartbeat=event`), which keep proxies from closing idle streams.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub heartbeat: Duration,
    /// The `retry:` hint: how long a browser waits before reconnecting, in ms.
    pub retry_ms: u64,
    /// Frames a client may be behind its flow before it is disconnected (it resumes with
    /// `Last-Event-ID`). Shared per flow: this bounds memory, not a per-client copy.
    pub client_queue: usize,
    /// Seconds a blocked write may take (the client stopped reading) before the client is
    /// dropped.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub write_timeout: Duration,
    /// Open streams per process; beyond, `503`.
    pub max_connections: usize,
    /// Open streams per token subject; beyond, `429`. Not applied without auth (every
    /// caller is the same local user).
    pub max_connections_per_subject: usize,
    /// Largest request head, in bytes (in the one binary, of every request on its port).
    pub max_head_bytes: usize,
    /// Seconds a client may take to send its request head (in the one binary, every
    /// request's first head).
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub head_timeout: Duration,
    /// On SIGTERM, streams are closed spread over this many seconds, so their reconnects
    /// spread over the other gateways.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub drain: Duration,
    /// Browser origins allowed to open streams cross-origin (comma-separated); none: no
    /// CORS headers.
    pub cors_origins: Vec<String>,
    /// Streams of one flow on one gateway whose joins and leaves are announced as
    /// `PRESENCE` events; beyond, streams are only listed by `GET …/presence` (each
    /// announcement reaches every stream: N viewers would cost N² deliveries).
    pub presence_announce_limit: usize,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            retry_ms: 2000,
            client_queue: 1024,
            write_timeout: Duration::from_secs(30),
            max_connections: 50_000,
            max_connections_per_subject: 100,
            max_head_bytes: 8192,
            head_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            cors_origins: vec![],
            presence_announce_limit: 100,
        }
    }
}

/// The flow runner. Every bound here is a defence against a flow written to hurt (one
/// execution starving the rest, a node that retries for ever, an output of gigabytes, an
/// `http` node aimed inside the deployment) as much as a limit on honest work.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunnerConfig {
    /// Nodes of one execution running at once.
    pub max_parallel: usize,
    /// Executions one runner runs at once (they mostly wait on LLMs, HTTP and delays), so
    /// a long run does not hold the others back.
    pub max_executions: usize,
    /// Executions of one flow one runner runs at once: a job of a flow at its cap is held
    /// (still claimed) until one of them ends, while other flows' executions run.
    pub max_executions_per_flow: usize,
    /// Seconds one attempt of a node may take (a node's `data.timeout_ms` may only lower
    /// it). Ten minutes: a long LLM completion, not a hung socket.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub node_timeout: Duration,
    /// Seconds a whole execution may run before it fails. One hour.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub execution_timeout: Duration,
    /// The most retries a node's `data.retries` may ask for.
    pub max_retries: u32,
    /// Seconds before a node's first retry; each next waits twice as long (at most 30 s).
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub retry_backoff: Duration,
    /// Bytes of one node's output (an `http` response, a rendered template, an LLM's
    /// text), and of its streamed log: beyond it the node fails (`output_too_large`).
    /// 1 MiB: outputs are stored in the execution record and read whole by every client
    /// that shows them; what is larger belongs in a file or a store of its own.
    pub max_output_bytes: usize,
    /// Bytes of all node outputs of one execution together: beyond it the execution fails.
    pub max_execution_bytes: usize,
    /// Bytes of a node's output that travel in its `EXECUTION_UPDATE`: a larger one is
    /// stored whole and announced by reference — a 1 KiB preview and its size
    /// (`output_bytes`); clients read it whole from the execution. 64 KiB: an event every
    /// client receives stays small, usual outputs still arrive inline.
    pub max_inline_output_bytes: usize,
    /// Seconds a node's streamed chunks may wait to be saved together. A chunk is stored
    /// (appended to the node's log with the index it reaches) before it is published, so a
    /// client that joins mid-run reads the text so far and misses nothing; what streams in
    /// while a save is under way goes in the next one. 0: no waiting — a token's way is
    /// one store write and one publish, and under load the saves group themselves; raise it
    /// to bound the writes per streaming node (at most one per wait) at the cost of that
    /// much delay to every chunk.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub log_batch_wait: Duration,
    /// Bytes of a node's streamed chunks saved (then published) together, at most: one
    /// write and one event batch stay small whatever the stream's pace.
    pub log_batch_bytes: usize,
    /// Networks `http` nodes may reach although they are loopback, private, link-local
    /// or unique-local (CIDRs, comma-separated, e.g. `10.1.0.0/16,127.0.0.1/32`). Empty:
    /// only public addresses, checked after DNS and at every redirect.
    #[schemars(with = "Vec<String>")]
    pub http_allow: Vec<ipnet::IpNet>,
    /// Redirects an `http` node follows.
    pub http_max_redirects: usize,
    /// Seconds between touches of a running job (well within `jobs.idle_timeout`).
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub touch_every: Duration,
    /// Seconds one `take` waits for a job.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub poll: Duration,
    /// Where `llm` nodes send chat completions.
    pub llm: LlmConfig,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            max_parallel: 8,
            max_executions: 4,
            max_executions_per_flow: 2,
            node_timeout: Duration::from_secs(600),
            execution_timeout: Duration::from_secs(3600),
            max_retries: 5,
            retry_backoff: Duration::from_millis(500),
            max_output_bytes: 1 << 20,
            max_execution_bytes: 8 << 20,
            max_inline_output_bytes: 64 << 10,
            log_batch_wait: Duration::ZERO,
            log_batch_bytes: 64 << 10,
            http_allow: vec![],
            http_max_redirects: 5,
            poll: Duration::from_secs(5),
            touch_every: Duration::from_secs(5),
            llm: LlmConfig::default(),
        }
    }
}

/// Where the `llm` node kind sends chat completions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// Base URL of an OpenAI-compatible API (`…/v1`); `/chat/completions` is appended.
    pub base_url: String,
    /// Bearer key (never logged).
    pub api_key: Option<Secret>,
    /// The model when a node names none.
    pub model: String,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:11434/v1".into(),
            api_key: None,
            model: "gpt-4o-mini".into(),
        }
    }
}
