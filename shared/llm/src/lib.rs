//! OpenAI-compatible streaming chat completions (`stream: true`) as a stream of tokens: what
//! the runner's `llm` nodes and the example agent read.

use std::pin::Pin;

use flowsync_protocol::sse::Decoder;
use futures::Stream;
use serde_json::Value;

/// Largest event the endpoint may stream (one token delta is a few hundred bytes): past it
/// the completion fails instead of buffering without bound.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

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
    /// The event stream could not be read (an event larger than the bound).
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
    let sse = Decoder::new(MAX_EVENT_BYTES);
    let tokens = futures::stream::try_unfold((r, sse), |(mut r, mut sse)| async move {
        loop {
            while sse.advance().map_err(|e| LlmError::Stream(e.to_string()))? {
                let data = sse.event().expect("advance stopped at an event").data;
                if data.trim_ascii() == b"[DONE]" {
                    return Ok(None);
                }
                let chunk: Value =
                    serde_json::from_slice(data).map_err(|e| LlmError::BadChunk(e.to_string()))?;
                if let Some(token) = chunk["choices"][0]["delta"]["content"].as_str()
                    && !token.is_empty()
                {
                    return Ok(Some((token.to_owned(), (r, sse))));
                }
            }
            match r.chunk().await? {
                Some(bytes) => sse.push(&bytes),
                None => return Ok(None),
            }
        }
    });
    Ok(Box::pin(tokens))
}
