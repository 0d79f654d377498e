//! Node kinds: what a node of each `type` does when it runs (DESIGN §6).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowsync_llm::chat_tokens;
use flowsync_protocol::{Node, NodeId};
use futures::StreamExt;
use serde_json::{Value, json};

use flowsync_plan::{TooLarge, render};

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
    /// The most bytes its output may have (`runner.max_output_bytes`).
    pub max_output: usize,
}

/// One kind of node. Returns the node's output, or why it failed.
#[async_trait]
pub trait NodeKind: Send + Sync {
    /// Runs the node once (the runner applies timeouts and retries).
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String>;
}

pub use flowsync_config::{LlmConfig, RunnerConfig};

/// The built-in kinds: `delay`, `template`, `http` (behind the [`Guard`]), `llm` (to the
/// operator's endpoint, which may well be on loopback: not guarded).
pub fn builtins(config: &RunnerConfig) -> HashMap<String, Arc<dyn NodeKind>> {
    let guard = Arc::new(Guard {
        allow: config.http_allow.clone(),
    });
    let redirects = config.http_max_redirects;
    let policy_guard = guard.clone();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        // A proxy would resolve names itself, past the guard.
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > redirects {
                let why = format!("more than {redirects} redirects (runner.http_max_redirects)");
                return attempt.error(why);
            }
            match policy_guard.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        }))
        .build()
        .expect("an HTTP client");
    let llm = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    HashMap::from([
        ("delay".to_owned(), Arc::new(Delay) as Arc<dyn NodeKind>),
        ("template".to_owned(), Arc::new(Template) as _),
        (
            "http".to_owned(),
            Arc::new(Http {
                client: http,
                guard,
            }) as _,
        ),
        (
            "llm".to_owned(),
            Arc::new(Llm {
                http: llm,
                config: config.llm.clone(),
            }) as _,
        ),
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
        render(&template, input.upstream, input.max_output)
            .map(Value::String)
            .map_err(|e| e.to_string())
    }
}

/// Where `http` nodes may connect: public addresses, and the operator's allow-list.
#[derive(Debug)]
pub struct Guard {
    allow: Vec<ipnet::IpNet>,
}

impl Guard {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        is_public(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// A URL's scheme, and its host when it is an address (names are checked when
    /// resolved, by [`GuardedResolver`]).
    fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("http: only http and https URLs ({url})"));
        }
        // The URL parser writes every IPv4 form (`2130706433`, `0x7f.1`) dotted.
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse() else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(refused(ip))
        }
    }
}

fn refused(ip: IpAddr) -> String {
    format!(
        "forbidden_address: {ip} is not a public address (runner.http_allow names the \
         networks an http node may reach besides)"
    )
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Not loopback, private, link-local, unique-local, shared (CGNAT), unspecified,
/// broadcast, multicast or reserved: an address of the public internet.
fn is_public(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(a) => {
            let [o0, o1, ..] = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o0 == 0
                || o0 >= 240
                || (o0 == 100 && (o1 & 0xc0) == 64)
                || (o0 == 192 && o1 == 0 && a.octets()[2] == 0)
                || (o0 == 198 && (o1 & 0xfe) == 18))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            // NAT64 (64:ff9b::/96) and IPv4-compatible (::/96, so `::1` too) addresses
            // carry an IPv4 address: that one decides.
            if (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4]) || s[..6] == [0; 6] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public(IpAddr::from([a, b, c, d]));
            }
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                // Prefixes that carry (or tunnel to) an IPv4 address this guard cannot
                // judge: local-use NAT64, 6to4, Teredo.
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                || s[0] == 0x2002
                || (s[0] == 0x2001 && s[1] == 0)
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// Resolves names for `http` nodes and refuses a name any of whose addresses the guard
/// does not permit (so a name cannot mix a public address with an internal one).
struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !guard.permits(a.ip())) {
                return Err(format!("{}: {}", name.as_str(), refused(bad.ip())).into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An error and its sources, as one line (reqwest's own says only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `http`: a request to the templated `url` (and `body`); the response body is the output,
/// read up to the output bound. Only public addresses unless allowed (see [`Guard`]).
struct Http {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

#[async_trait]
impl NodeKind for Http {
    async fn run(&self, input: NodeInput<'_>) -> Result<Value, String> {
        let data = &input.node.data;
        let max = input.max_output;
        let url = render(
            &text(data, "url").ok_or("http: data.url is required")?,
            input.upstream,
            max,
        )
        .map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(&url).map_err(|e| format!("http: {url:?}: {e}"))?;
        self.guard.check_url(&url)?;
        let method = text(data, "method").unwrap_or_else(|| "GET".into());
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
            .map_err(|_| format!("http: unknown method {method:?}"))?;
        let mut req = self.client.request(method, url.clone());
        if let Some(body) = text(data, "body") {
            req = req.body(render(&body, input.upstream, max).map_err(|e| e.to_string())?);
        }
        let r = req
            .send()
            .await
            .map_err(|e| format!("http: {}", chain(&e)))?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("http: {url} answered {status}"));
        }
        let too_large = || TooLarge { max }.to_string();
        if r.content_length().is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        let mut chunks = r.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| format!("http: {}", chain(&e)))?;
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Value::String(String::from_utf8_lossy(&body).into_owned()))
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
        let max = input.max_output;
        let prompt = render(
            &text(data, "prompt").ok_or("llm: data.prompt is required")?,
            input.upstream,
            max,
        )
        .map_err(|e| e.to_string())?;
        let mut messages = vec![];
        if let Some(system) = text(data, "system") {
            let system = render(&system, input.upstream, max).map_err(|e| e.to_string())?;
            messages.push(json!({"role": "system", "content": system}));
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
            if full.len() + token.len() > max {
                return Err(TooLarge { max }.to_string());
            }
            input.log.chunk(&token).await;
            full.push_str(&token);
        }
        Ok(Value::String(full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_permits_public_addresses_only_unless_allowed() {
        let guard = Guard {
            allow: vec!["10.1.0.0/16".parse().unwrap()],
        };
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(guard.permits(public.parse().unwrap()), "{public}");
        }
        for inside in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2001:0:4136:e378::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(!guard.permits(inside.parse().unwrap()), "{inside}");
        }
        assert!(
            guard.permits("10.1.2.3".parse().unwrap()),
            "allowed by the list"
        );
        assert!(
            guard.permits("::ffff:10.1.2.3".parse().unwrap()),
            "mapped, allowed"
        );
    }
}
