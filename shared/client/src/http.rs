//! [`Client`]: flowsync's HTTP endpoints (DESIGN §3 "Other endpoints"), with the retries
//! that are safe to make.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowsync_protocol::{
    ConnectionId, ErrorBody, EventBody, Execution, ExecutionId, Flow, FlowId, HistoryEntry,
    OpsRequest,
};
use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Error;
use crate::stream::EventStream;

/// Where the server is and how patient to be with it.
#[derive(Clone)]
pub struct ClientConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:8080` (the one binary, or the proxy in
    /// front of APIs and gateways).
    pub base_url: String,
    /// Base URL of the event streams, when the gateways are not behind the API's address
    /// (the one binary and the proxy of `deploy/` serve both on one).
    pub events_url: Option<String>,
    /// Bearer token sent with every request and stream (never logged).
    pub token: Option<String>,
    /// Attempts of a request that is safe to repeat (reads, ops — their op ids make a
    /// repeat apply nothing twice — cancel, presence) when the connection fails or the
    /// server answers 429 or 5xx. Starting an execution and publishing worker events are
    /// sent once.
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each further one, with jitter.
    pub backoff: Duration,
    /// Longest wait between attempts (and between stream reconnects).
    pub max_backoff: Duration,
    /// Timeout of one request (not of a stream).
    pub request_timeout: Duration,
    /// A stream that sends nothing for this long (the gateway pings every 15 s) is
    /// considered dead and reconnected.
    pub idle_timeout: Duration,
    /// Largest event a stream may send; a larger one fails the stream (`Error::Protocol`)
    /// instead of growing its buffer without bound.
    pub max_event_bytes: usize,
}

impl ClientConfig {
    /// Defaults for a server at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            events_url: None,
            token: None,
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            max_event_bytes: 16 * 1024 * 1024,
        }
    }

    /// With a bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("events_url", &self.events_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish()
    }
}

/// A handle on one flowsync server for one identity. Cheap to clone (the connection pool
/// is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: Arc<ClientConfig>,
}

/// Whether a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Safe: repeating it changes nothing more than sending it once.
    Safe,
    /// Sent once.
    Once,
}

impl Client {
    /// A client for the server of `config`.
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            config: Arc::new(config),
        })
    }

    /// This client's settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// `POST /v1/flows`: creates a flow (with `id`, or one the server makes).
    pub async fn create_flow(&self, id: Option<&FlowId>, name: &str) -> Result<Flow, Error> {
        let body = json!({"id": id, "name": name});
        let r = self
            .call(Repeat::Once, Method::POST, "/v1/flows", |r| r.json(&body))
            .await?;
        read_json(r).await
    }

    /// `GET /v1/flows/{id}`: the flow's current state.
    pub async fn flow(&self, id: &FlowId) -> Result<Flow, Error> {
        let r = self
            .call(Repeat::Safe, Method::GET, &format!("/v1/flows/{id}"), |r| r)
            .await?;
        read_json(r).await
    }

    /// `GET /v1/flows/{id}/history`: up to `limit` applied ops after version `after`.
    pub async fn history(
        &self,
        id: &FlowId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        let path = format!("/v1/flows/{id}/history?after={after}&limit={limit}");
        let r = self.call(Repeat::Safe, Method::GET, &path, |r| r).await?;
        read_json(r).await
    }

    /// `POST /v1/flows/{id}/ops`. `Ok` means the server committed the request and announced
    /// every op's result on the flow's stream (`202`); the results themselves arrive there.
    /// Repeated on failure with the same op ids, which apply at most once.
    pub async fn post_ops(
        &self,
        id: &FlowId,
        request: &OpsRequest,
        if_match: Option<u64>,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(request).map_err(|e| Error::Protocol(e.to_string()))?;
        self.call(
            Repeat::Safe,
            Method::POST,
            &format!("/v1/flows/{id}/ops"),
            |mut r| {
                if let Some(v) = if_match {
                    r = r.header(reqwest::header::IF_MATCH, format!("W/\"{v}\""));
                }
                r.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            },
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/flows/{id}/executions`: queues an execution of the flow as it is now.
    pub async fn start_execution(&self, id: &FlowId) -> Result<ExecutionId, Error> {
        #[derive(serde::Deserialize)]
        struct Started {
            execution_id: ExecutionId,
        }
        let path = format!("/v1/flows/{id}/executions");
        let r = self.call(Repeat::Once, Method::POST, &path, |r| r).await?;
        Ok(read_json::<Started>(r).await?.execution_id)
    }

    /// `GET /v1/flows/{id}/executions/{eid}`: status, per-node state and logs.
    pub async fn execution(&self, id: &FlowId, eid: &ExecutionId) -> Result<Execution, Error> {
        let path = format!("/v1/flows/{id}/executions/{eid}");
        let r = self.call(Repeat::Safe, Method::GET, &path, |r| r).await?;
        read_json(r).await
    }

    /// `POST /v1/flows/{id}/executions/{eid}/cancel` (409 `execution_finished` when it ended).
    pub async fn cancel_execution(&self, id: &FlowId, eid: &ExecutionId) -> Result<(), Error> {
        let path = format!("/v1/flows/{id}/executions/{eid}/cancel");
        self.call(Repeat::Safe, Method::POST, &path, |r| r).await?;
        Ok(())
    }

    /// `POST /v1/flows/{id}/executions/{eid}/events`: a worker's `EXECUTION_UPDATE` or
    /// `LOG_STREAM` (needs the `publish` scope). Sent once: a repeated chunk would be
    /// appended twice.
    pub async fn publish(
        &self,
        id: &FlowId,
        eid: &ExecutionId,
        event: &EventBody,
    ) -> Result<(), Error> {
        let path = format!("/v1/flows/{id}/executions/{eid}/events");
        self.call(Repeat::Once, Method::POST, &path, |r| r.json(event))
            .await?;
        Ok(())
    }

    /// `POST /v1/flows/{id}/presence`: this stream's ephemeral state (cursor, selection),
    /// announced to everyone as `PRESENCE update`.
    pub async fn set_presence(
        &self,
        id: &FlowId,
        connection: &ConnectionId,
        state: &Value,
    ) -> Result<(), Error> {
        let body = json!({"connection_id": connection, "state": state});
        let path = format!("/v1/flows/{id}/presence");
        self.call(Repeat::Safe, Method::POST, &path, |r| r.json(&body))
            .await?;
        Ok(())
    }

    /// The flow's event stream from now on; it reconnects by itself, resuming with
    /// `Last-Event-ID`.
    pub fn events(&self, id: &FlowId) -> EventStream {
        EventStream::new(self.clone(), id.clone(), None)
    }

    /// The flow's event stream after `last_event_id` (`<epoch>-<seq>`): what a process
    /// that restarts passes to lose nothing.
    pub fn events_after(&self, id: &FlowId, last_event_id: impl Into<String>) -> EventStream {
        EventStream::new(self.clone(), id.clone(), Some(last_event_id.into()))
    }

    /// A request to `path` of the API with the token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_to(&self.config.base_url, method, path)
    }

    /// A request for an event stream (`path` on the gateways) with the token.
    pub(crate) fn events_request(&self, path: &str) -> RequestBuilder {
        let base = self.config.events_url.as_deref();
        self.request_to(base.unwrap_or(&self.config.base_url), Method::GET, path)
    }

    fn request_to(&self, base: &str, method: Method, path: &str) -> RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", base.trim_end_matches('/')));
        match &self.config.token {
            Some(token) => r.bearer_auth(token),
            None => r,
        }
    }

    /// The wait before attempt `attempt + 1`: doubling from `backoff`, capped, with jitter
    /// (half to all of it) so that many clients do not come back in step.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let full = self
            .config
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.config.max_backoff);
        full.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Sends a request, repeating a safe one on connection failures, 429 and 5xx.
    async fn call(
        &self,
        repeat: Repeat,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, Error> {
        let attempts = match repeat {
            Repeat::Safe => self.config.attempts.max(1),
            Repeat::Once => 1,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let request =
                build(self.request(method.clone(), path)).timeout(self.config.request_timeout);
            match request.send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) if retryable(r.status()) && !last => {
                    let wait = retry_after(r.headers().get(RETRY_AFTER))
                        .unwrap_or_else(|| self.backoff(attempt));
                    tracing::debug!(status = %r.status(), path, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(r) => return Err(refusal(r, attempt).await),
                Err(e) if !last && transient(&e) => {
                    tracing::debug!(error = %e, path, "retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Statuses that a later attempt may not get: rate limited, or the server (or the proxy in
/// front of it) unavailable.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// Failures of the connection, not answers of the server.
fn transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// `Retry-After` in seconds (the API's form), capped at a minute.
fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let secs: u64 = value?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// The error for a final non-success answer.
async fn refusal(r: Response, attempts: u32) -> Error {
    let status = r.status();
    if retryable(status) {
        return Error::Unavailable {
            status: status.as_u16(),
            attempts,
        };
    }
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str::<ErrorBody>(&text).unwrap_or_else(|_| {
        ErrorBody::new(
            format!("http_{}", status.as_u16()),
            text.chars().take(300).collect::<String>(),
        )
    });
    Error::Refused {
        status: status.as_u16(),
        body: Box::new(body),
    }
}

async fn read_json<T: DeserializeOwned>(r: Response) -> Result<T, Error> {
    let bytes = r.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("unexpected body: {e}")))
}
