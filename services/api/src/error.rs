//! Route errors, each with its HTTP status and stable `code` (DESIGN §3 error body).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use flowsync_auth::{AuthError, Denied};
use flowsync_bus::BusError;
use flowsync_protocol::{ErrorBody, ParseError};
use flowsync_store::StoreError;

/// Why a request failed. Validation variants are 4xx; `Unexpected` is 500 and logs its
/// whole source chain.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body does not parse; names the field.
    #[error("{0}")]
    InvalidBody(ParseError),
    /// A header, path or query value is not valid.
    #[error("{message}")]
    Invalid {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No or a bad token.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// The token does not allow this.
    #[error(transparent)]
    Forbidden(#[from] Denied),
    /// The thing named is another caller's (a presence update for their stream).
    #[error("{0}")]
    NotYours(String),
    /// Nothing there.
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// The flow id is taken.
    #[error("{0}")]
    Exists(String),
    /// Over a size limit.
    #[error("{message}")]
    TooLarge {
        /// Stable code.
        code: &'static str,
        /// Which limit.
        message: String,
    },
    /// The flow cannot do what was asked (e.g. run: a cycle); names the node.
    #[error("{message}")]
    Unprocessable {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// The node in the way.
        node: String,
    },
    /// The execution has already ended.
    #[error("{0}")]
    Finished(String),
    /// The subject sent too many requests; retry after the wait.
    #[error("too many requests: retry in {} ms", .0.as_millis())]
    RateLimited(std::time::Duration),
    /// The store or the bus is down: retry later. Says which, never the driver's error
    /// (that is logged where it happened).
    #[error("the {0} is unavailable")]
    Unavailable(&'static str),
    /// Too many ops wait to commit to the flow: retry shortly.
    #[error("{0}")]
    Busy(String),
    /// The request body did not all arrive within the body timeout.
    #[error("the request body did not arrive within {} s", .0.as_secs_f64())]
    SlowBody(std::time::Duration),
    /// A bug or corrupt data.
    #[error("internal error")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 with `code`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidBody(_) => "invalid_body",
            Self::Invalid { code, .. }
            | Self::NotFound { code, .. }
            | Self::TooLarge { code, .. } => code,
            Self::Unauthorized(e) => e.code(),
            Self::Forbidden(e) => e.code(),
            Self::NotYours(_) => "not_yours",
            Self::Exists(_) => "flow_exists",
            Self::Unprocessable { code, .. } => code,
            Self::Finished(_) => "execution_finished",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) => "unavailable",
            Self::Busy(_) => "flow_busy",
            Self::SlowBody(_) => "body_timeout",
            Self::Unexpected(_) => "internal",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::from_store(&e)
    }
}

impl ApiError {
    /// What a store error means to the caller (shared by every request of a group).
    pub fn from_store(e: &StoreError) -> Self {
        match e {
            StoreError::FlowNotFound(id) => Self::NotFound {
                code: "flow_not_found",
                message: format!("flow {id} does not exist"),
            },
            StoreError::ExecutionNotFound(id) => Self::NotFound {
                code: "execution_not_found",
                message: format!("execution {id} does not exist"),
            },
            e @ StoreError::VersionAhead { .. } => Self::NotFound {
                code: "version_not_found",
                message: e.to_string(),
            },
            StoreError::FlowExists(id) => Self::Exists(format!("flow {id} already exists")),
            e @ StoreError::ExecutionEnded { .. } => Self::Finished(e.to_string()),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "store unavailable");
                Self::Unavailable("store")
            }
            e => Self::Unexpected(anyhow::anyhow!("{e}")),
        }
    }
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        Self::from_bus(&e)
    }
}

impl ApiError {
    /// What a bus error means to the caller (shared by every request of a group).
    pub fn from_bus(e: &BusError) -> Self {
        match e {
            BusError::Unavailable(_) | BusError::Closed => {
                tracing::warn!(error = %e, "bus unavailable");
                Self::Unavailable("event bus")
            }
            BusError::Invalid(_) | BusError::Malformed(_) => {
                Self::Unexpected(anyhow::anyhow!("bus: {e}"))
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidBody(_) | Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::NotYours(_) => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Exists(_) | Self::Finished(_) => StatusCode::CONFLICT,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::SlowBody(_) => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Unexpected(e) = self {
            tracing::error!(error = ?e, "unexpected error");
        }
        let mut body = ErrorBody::new(self.code(), self.to_string());
        if let Self::InvalidBody(e) = self {
            body.error
                .details
                .insert("path".into(), e.path.clone().into());
        }
        if let Self::Unprocessable { node, .. } = self {
            body.error
                .details
                .insert("node".into(), node.clone().into());
        }
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, Self::Unauthorized(_)) {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        match self {
            Self::Unavailable(_) | Self::Busy(_) => {
                response.insert_header(("Retry-After", "1"));
            }
            // Whole seconds, rounded up: a client that waits that long gets through.
            Self::RateLimited(wait) => {
                response.insert_header((
                    "Retry-After",
                    wait.as_secs_f64().ceil().max(1.0).to_string(),
                ));
            }
            _ => {}
        }
        response.json(body)
    }
}
