//! What can go wrong talking to flowsync.

use std::time::Duration;

use flowsync_protocol::{Conflict, ErrorBody, OpId};

/// An error of a [`Client`](crate::Client) or [`FlowSession`](crate::FlowSession) call.
///
/// A refused *op* is not an error: it is an [`Outcome::Refused`](crate::Outcome), a result
/// like an applied one (DESIGN §1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server could not be reached, or the connection broke (after the retries that
    /// were safe to make).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered the request with an error that retrying cannot fix (400, 401,
    /// 403, 404, 409, 413, 422, …).
    #[error("{status}: {}: {}", body.error.code, body.error.message)]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: Box<ErrorBody>,
    },
    /// The server kept answering 429 or 5xx for every attempt.
    #[error("{status}: the server stayed unavailable for {attempts} attempts")]
    Unavailable {
        /// The last HTTP status.
        status: u16,
        /// How many attempts were made.
        attempts: u32,
    },
    /// An op's result did not arrive on the stream within the op timeout, on every
    /// attempt. Whether it applied is unknown; sending it again with the same op id is safe.
    #[error("no result for op {op_id} within {after:?} on any of {attempts} attempts")]
    Timeout {
        /// The first op without a result.
        op_id: OpId,
        /// The timeout of one attempt.
        after: Duration,
        /// How many times the op was sent.
        attempts: u32,
    },
    /// An op was refused and retrying cannot help (see
    /// [`TextWriter`](crate::TextWriter)).
    #[error("refused: {}: {}", .0.reason, .0.message)]
    Conflict(Box<Conflict>),
    /// The session's stream ended for good (the flow was deleted, or the stream was
    /// refused on reconnect).
    #[error("the session is closed: {0}")]
    Closed(String),
    /// The server sent something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl Error {
    /// The error code of a [`Refused`](Self::Refused) request (`flow_not_found`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }
}
