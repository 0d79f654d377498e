//! Errors: the HTTP error body (DESIGN §3) and the parse error of request bodies.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::Data;

/// Body of every HTTP error: `{"error":{"code":…,"message":…,"details":{…}}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The contents of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, snake_case, for programs.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// Structured context (e.g. `{"path": "ops[2].node.id"}`).
    #[serde(default)]
    pub details: Data,
}

impl ErrorBody {
    /// An error body with no details.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
                details: Data::new(),
            },
        }
    }
}

/// A request body that is not valid: names the field (`ops[2].node.position.x`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Path of the offending field; empty for the whole body.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(path: impl Into<String>, message: impl fmt::Display) -> Self {
        Self {
            path: path.into(),
            message: message.to_string(),
        }
    }

    /// Places this error under `prefix` (a field name or an index like `[3]`).
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.path = match (self.path.is_empty(), self.path.starts_with('[')) {
            (true, _) => prefix.to_owned(),
            (false, true) => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }

    /// Converts a `serde_path_to_error` failure, keeping its path.
    pub(crate) fn from_path_error(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Self::new(path, err.into_inner())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ParseError {}
