//! Tests of the canvas domain, in one binary: a harness that plays the store's part
//! (log, idempotency), then one module per concern.

mod agents;
mod ops;
mod props;
mod support;
mod text_ops;
mod undo;
