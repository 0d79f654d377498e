//! What the gateway needs of the store, and no more: whether a flow exists, its version.

use std::fmt;

use async_trait::async_trait;
use flowsync_protocol::FlowId;
use flowsync_store::{Store, StoreError};

/// The store as the gateway sees it: read once per flow (for `READY`'s version and
/// `404`s) and pinged by `/readyz`.
#[async_trait]
pub trait FlowVersions: Send + Sync + fmt::Debug {
    /// The flow's version; `None` when there is no such flow.
    async fn flow_version(&self, flow: &FlowId) -> Result<Option<u64>, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl FlowVersions for Store {
    async fn flow_version(&self, flow: &FlowId) -> Result<Option<u64>, StoreError> {
        Store::flow_version(self, flow).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Store::ping(self).await
    }
}
