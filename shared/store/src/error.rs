//! What can go wrong in the store.

use flowsync_protocol::{ExecutionId, ExecutionStatus, FlowId};

/// A store failure. `Unavailable` and `Contention` are transient (the API answers 503);
/// the others are answers about the data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No flow with this id.
    #[error("flow {0} does not exist")]
    FlowNotFound(FlowId),
    /// A flow with this id exists already.
    #[error("flow {0} already exists")]
    FlowExists(FlowId),
    /// No execution with this id.
    #[error("execution {0} does not exist")]
    ExecutionNotFound(ExecutionId),
    /// An execution with this id exists already.
    #[error("execution {0} already exists")]
    ExecutionExists(ExecutionId),
    /// The execution has ended: its final status stays (the first to end it wins).
    #[error("execution {id} has already ended ({status:?})")]
    ExecutionEnded {
        /// The execution.
        id: ExecutionId,
        /// Its final status.
        status: ExecutionStatus,
    },
    /// Time travel to a version the flow has not reached.
    #[error("flow {flow} is at version {current}, version {requested} does not exist yet")]
    VersionAhead {
        /// The flow.
        flow: FlowId,
        /// The version asked for.
        requested: u64,
        /// The flow's version.
        current: u64,
    },
    /// Lost the commit race more often than configured; retry later.
    #[error("flow {flow}: gave up after losing {attempts} commit races to concurrent writers")]
    Contention {
        /// The flow.
        flow: FlowId,
        /// Attempts made.
        attempts: u32,
    },
    /// The database cannot be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data does not parse or breaks an invariant.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Contention { .. })
    }

    pub(crate) fn corrupt(what: impl std::fmt::Display) -> Self {
        Self::Corrupt(what.to_string())
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        Self::corrupt(e)
    }
}
