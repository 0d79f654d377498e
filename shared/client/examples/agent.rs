//! An LLM agent that writes into the canvas as it thinks: it asks an OpenAI-compatible model
//! (the runner's `llm` settings) and streams the answer into a node's text field with
//! `text.append` ops while people watch and edit around it. A refused op is handled like a
//! person would: reload, look again, go on.
//!
//! ```sh
//! cargo run --release -p flowsync-client --example agent -- \
//!     --flow demo --node n1 --prompt "Outline a launch plan"
//! ```
//! It prints what it did as one JSON line.

#![allow(clippy::print_stdout)]

use clap::Parser;
use flowsync_client::llm::chat_tokens;
use flowsync_client::{Client, ClientConfig, FlowSession, SessionConfig, TextWriter};
use flowsync_protocol::{ClientId, FieldPath, FlowId, NodeId};
use futures::StreamExt;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Streams an LLM's answer into a flowsync node")]
struct Args {
    /// flowsync's base URL (the one binary, or the proxy in front of the services).
    #[arg(long, env = "FLOWSYNC_URL", default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token (scopes read and write).
    #[arg(long, env = "FLOWSYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The flow.
    #[arg(long)]
    flow: String,
    /// The node to write into.
    #[arg(long)]
    node: String,
    /// The string field, a JSON pointer into the node's data.
    #[arg(long, default_value = "/text")]
    field: String,
    /// What to ask the model.
    #[arg(long)]
    prompt: String,
    /// OpenAI-compatible API (`…/v1`), as the runner's `llm` nodes use.
    #[arg(
        long,
        env = "FLOWSYNC_RUNNER__LLM__BASE_URL",
        default_value = "http://127.0.0.1:11434/v1"
    )]
    llm_base_url: String,
    /// The model.
    #[arg(
        long,
        env = "FLOWSYNC_RUNNER__LLM__MODEL",
        default_value = "gpt-4o-mini"
    )]
    model: String,
    /// The model API's key.
    #[arg(long, env = "FLOWSYNC_RUNNER__LLM__API_KEY", hide_env_values = true)]
    llm_api_key: Option<String>,
    /// Tokens arriving within this many milliseconds go out as one op.
    #[arg(long, default_value_t = 10)]
    batch_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ClientConfig::new(&args.api);
    config.token = args.token.clone();
    let client = Client::new(config)?;
    let flow = FlowId::parse(&args.flow)?;
    let node = NodeId::parse(&args.node)?;
    let field = FieldPath::parse(&args.field).map_err(anyhow::Error::msg)?;
    let session = FlowSession::open(
        client,
        flow,
        SessionConfig {
            client_id: ClientId::parse(format!("agent-{}", std::process::id()))?,
            ..SessionConfig::default()
        },
    )
    .await?;
    if session.canvas().node(node.as_str()).is_none() {
        anyhow::bail!("flow {} has no node {node}", args.flow);
    }

    let body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
    });
    let http = reqwest::Client::new();
    let tokens = chat_tokens(&http, &args.llm_base_url, args.llm_api_key.as_deref(), body).await?;
    // Write what the model produced until it stopped or failed; report a failure after.
    let failure = std::sync::Mutex::new(None);
    let text = tokens
        .take_while(|t| {
            if let Err(e) = t {
                *failure.lock().expect("not poisoned") = Some(e.to_string());
            }
            std::future::ready(t.is_ok())
        })
        .filter_map(|t| std::future::ready(t.ok()));
    let report = TextWriter::new(&session, node, field)
        .window(std::time::Duration::from_millis(args.batch_ms))
        .write(text)
        .await?;
    println!(
        "{}",
        json!({
            "tokens": report.tokens,
            "ops": report.ops,
            "bytes": report.bytes,
            "refusals": report.refusals,
            "version": session.version(),
        })
    );
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        anyhow::bail!("the model's stream failed: {e}");
    }
    Ok(())
}
