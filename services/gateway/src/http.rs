//! The little HTTP the gateway speaks: one request head per connection, parsed with
//! `httparse`, then either an SSE stream on the raw socket or a short answer and close.
//!
//! Hand-written on purpose (DESIGN §5): a general HTTP server keeps 11–12 KiB of state per
//! open stream; holding only the socket and a broadcast cursor once the head is parsed
//! keeps a stream under 4 KiB.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the gateway reads of a request.
#[derive(Debug, Default)]
pub struct Head {
    /// `GET`, `OPTIONS`…
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// Query parameters, decoded. Holds `access_token`: never log it.
    pub query: Vec<(String, String)>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
}

impl Head {
    /// The first query value named `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token: the `Authorization` header, else `?access_token=` (EventSource
    /// cannot set headers).
    pub fn token(&self) -> Option<&str> {
        self.authorization
            .as_deref()
            .and_then(flowsync_auth::bearer_token)
            .or_else(|| self.query("access_token"))
    }
}

/// Why a head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Over the configured size.
    #[error("the request head is too large")]
    TooLarge,
    /// Not HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The peer closed or the socket failed before a whole head arrived.
    #[error("connection closed: {0}")]
    Closed(#[from] std::io::Error),
}

/// Reads and parses one request head (at most `max` bytes). The buffer is freed on return.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<Head, HeadError> {
    read_request(stream, max).await.map(|(head, _)| head)
}

/// Reads and parses one request head (at most `max` bytes); also returns every byte read,
/// the head and whatever followed it, for a server that answers the request instead.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024.min(max));
    loop {
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
        let mut chunk = [0u8; 1024];
        let room = (max - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(HeadError::Closed(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                let head = head(&req);
                return Ok((head, buf));
            }
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
    }
}

fn head(req: &httparse::Request<'_, '_>) -> Head {
    Head::from_parts(req.method.unwrap_or(""), req.path.unwrap_or("/"), |name| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    })
}

impl Head {
    /// A head parsed by another HTTP server: the method, the request target (path and
    /// query) and a header lookup by name.
    pub fn from_parts(method: &str, target: &str, header: impl Fn(&str) -> Option<String>) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            authorization: header("authorization"),
            last_event_id: header("last-event-id"),
            origin: header("origin"),
        }
    }
}

/// A short answer: status, extra headers, body; the connection closes after it.
#[derive(Debug)]
pub struct Reply {
    /// e.g. `404 Not Found`.
    pub status: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// More header lines, each ending in `\r\n`.
    pub headers: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A JSON error in the DESIGN §3 shape.
    pub fn error(status: &'static str, code: &str, message: &str) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: String::new(),
            body: serde_json::to_vec(&flowsync_protocol::ErrorBody::new(code, message))
                .expect("serialisable"),
        }
    }

    /// A plain-text answer.
    pub fn text(status: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: String::new(),
            body: body.into(),
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// Writes the answer and closes the write side.
    pub async fn send<S: AsyncWrite + Unpin>(self, stream: &mut S) -> std::io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{}\r\n",
            self.status,
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        stream.write_all(&out).await?;
        stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_a_head_in_pieces() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for part in [
                "GET /v1/flows/f1/events?types=SYNC_CANVAS&access_token=a%2Bb HTTP/1.1\r\n",
                "Host: x\r\nLast-Event-ID: ep-3\r\n",
                "authorization: Bearer tok\r\n\r\n",
            ] {
                client.write_all(part.as_bytes()).await.unwrap();
            }
            client
        });
        let head = read_head(&mut server, 8192).await.unwrap();
        writer.await.unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/v1/flows/f1/events");
        assert_eq!(head.query("types"), Some("SYNC_CANVAS"));
        assert_eq!(head.query("access_token"), Some("a+b"));
        assert_eq!(head.last_event_id.as_deref(), Some("ep-3"));
        assert_eq!(head.token(), Some("tok"));
    }

    #[tokio::test]
    async fn refuses_oversized_and_malformed_heads() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(format!("GET /{} HTTP/1.1\r\n", "a".repeat(3000)).as_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_head(&mut server, 1024).await,
            Err(HeadError::TooLarge)
        ));
        let (mut client, mut server) = tokio::io::duplex(4096);
        client
            .write_all(b"\x16\x03\x01 not http\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(
            read_head(&mut server, 1024).await,
            Err(HeadError::Malformed(_))
        ));
    }
}
