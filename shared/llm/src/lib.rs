//! OpenAI-compatible streaming chat completions (`stream: true`) as a stream of tokens: what
//! the runner's `llm` nodes and the example agent read.

use std::pin::Pin;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// Token deltas, in order, until the model is done.
pub type Tokens = Pin<Box<dyn Stream<Item = Result<String, LlmError>> + Send>>;

/// Why a completion failed.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The endpoint could not be reached.
    #[error("llm: {0}")]
    Transport(#[from] reqwest::Error),
    /// The endpoint answered with an error.
    #[error("llm: {status}: {detail}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        detail: String,
    },
    /// The event stream broke.
    #[error("llm: stream: {0}")]
    Stream(String),
    /// A chunk was not JSON.
    #[error("llm: bad chunk: {0}")]
    BadChunk(String),
}

/// Starts a streaming chat completion: `body` is the request (`model`, `messages`, …;
/// `stream: true` is set here) posted to `<base_url>/chat/completions` with `api_key` as
/// the bearer key. Yields each non-empty `choices[0].delta.content`.
pub async fn chat_tokens(
    http: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
    mut body: Value,
) -> Result<Tokens, LlmError> {
    body["stream"] = Value::Bool(true);
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let mut request = http.post(&url).json(&body);
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await?;
    if !r.status().is_success() {
        let status = r.status().as_u16();
        let detail = r.text().await.unwrap_or_default();
        return Err(LlmError::Status {
            status,
            detail: detail.chars().take(300).collect(),
        });
    }
    let tokens = r
        .bytes_stream()
        .eventsource()
        .take_while(|event| {
            let done = matches!(event, Ok(e) if e.data.trim() == "[DONE]");
            std::future::ready(!done)
        })
        .filter_map(|event| {
            std::future::ready(match event {
                Err(e) => Some(Err(LlmError::Stream(e.to_string()))),
                Ok(event) => match serde_json::from_str::<Value>(&event.data) {
                    Err(e) => Some(Err(LlmError::BadChunk(e.to_string()))),
                    Ok(chunk) => chunk["choices"][0]["delta"]["content"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(|t| Ok(t.to_owned())),
                },
            })
        });
    Ok(Box::pin(tokens))
}
