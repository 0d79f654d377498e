//! Node kinds: what a node of each `type` does when it runs (DESIGN §6).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowsync_client::llm::chat_tokens;
use flowsync_protocol::{Node, NodeId};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::plan::render;

/// Where a running node streams its output (`LOG_STREAM` chunks).
#[async_trait]
pub trait LogSink: Send {
    /// Streams one chunk.
    async fn chunk(&mut self, text: &str);
}

/// What a node sees when it runs.
#[allow(missing_debug_implementations)] // holds a `dyn LogSink`
pub struct NodeInput<'a> {
    /// The node, with its `data`.
    pub node: &'a Node,
    /// The outputs of its upstream nodes.
    pub upstream: &'a HashMap<NodeId, Value>,
    /// Where to stream output.
    pub log: &'a mut dyn LogSink,
}

/// One kind of node. Returns the node's output, or why it failed.
#[async_trait]
pub trait NodeKind: Send + Sync {
    /// Runs the node once (the runner applies timeouts and retries).
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String>;
}

pub use flowsync_config::LlmConfig;

/// The built-in kinds: `delay`, `template`, `http`, `llm`.
pub fn builtins(llm: LlmConfig) -> HashMap<String, Arc<dyn NodeKind>> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    HashMap::from([
        ("delay".to_owned(), Arc::new(Delay) as Arc<dyn NodeKind>),
        ("template".to_owned(), Arc::new(Template) as _),
        ("http".to_owned(), Arc::new(Http(http.clone())) as _),
        ("llm".to_owned(), Arc::new(Llm { http, config: llm }) as _),
    ])
}

fn text(data: &flowsync_protocol::Data, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The upstream outputs as one value: the single one itself, else an object by node id.
fn passthrough(upstream: &HashMap<NodeId, Value>) -> Value {
    match upstream.len() {
        0 => Value::Null,
        1 => upstream.values().next().cloned().unwrap_or(Value::Null),
        _ => Value::Object(
            upstream
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        ),
    }
}

/// `delay`: waits `ms`, then passes its upstream outputs on.
struct Delay;

#[async_trait]
impl NodeKind for Delay {
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String> {
        let ms = input
            .node
            .data
            .get("ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(passthrough(input.upstream))
    }
}

/// `template`: renders `template` with upstream outputs.
struct Template;

#[async_trait]
impl NodeKind for Template {
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String> {
        let template = text(&input.node.data, "template").unwrap_or_default();
        Ok(Value::String(render(&template, input.upstream)))
    }
}

/// `http`: a request to the templated `url` (and `body`); the response body is the output.
struct Http(reqwest::Client);

#[async_trait]
impl NodeKind for Http {
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String> {
        let data = &input.node.data;
        let url = render(
            &text(data, "url").ok_or("http: data.url is required")?,
            input.upstream,
        );
        let method = text(data, "method").unwrap_or_else(|| "GET".into());
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
            .map_err(|_| format!("http: unknown method {method:?}"))?;
        let mut req = self.0.request(method, &url);
        if let Some(body) = text(data, "body") {
            req = req.body(render(&body, input.upstream));
        }
        let r = req.send().await.map_err(|e| format!("http: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("http: {e}"))?;
        if !status.is_success() {
            return Err(format!("http: {url} answered {status}"));
        }
        Ok(Value::String(body))
    }
}

/// `llm`: an OpenAI-compatible streaming chat completion of the templated `prompt`; each
/// token delta is a chunk, the whole text the output.
struct Llm {
    http: reqwest::Client,
    config: LlmConfig,
}

#[async_trait]
impl NodeKind for Llm {
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String> {
        let data = &input.node.data;
        let prompt = render(
            &text(data, "prompt").ok_or("llm: data.prompt is required")?,
            input.upstream,
        );
        let mut messages = vec![];
        if let Some(system) = text(data, "system") {
            messages.push(json!({"role": "system", "content": render(&system, input.upstream)}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        let body = json!({
            "model": text(data, "model").unwrap_or_else(|| self.config.model.clone()),
            "messages": messages,
        });
        // An empty key (a Secret left blank) is no key.
        let key = (self.config.api_key.as_ref())
            .map(|k| k.expose())
            .filter(|k| !k.is_empty());
        let mut tokens = chat_tokens(&self.http, &self.config.base_url, key, body)
            .await
            .map_err(|e| e.to_string())?;
        let mut full = String::new();
        while let Some(token) = tokens.next().await {
            let token = token.map_err(|e| e.to_string())?;
            input.log.chunk(&token).await;
            full.push_str(&token);
        }
        Ok(Value::String(full))
    }
}
