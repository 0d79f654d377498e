//! The flowsync canvas domain: applies ops to a canvas under the rules of DESIGN §3. Pure:
//! no I/O, no clock, no randomness (time and new ids come in from the caller).
//!
//! Every applied op yields the `changes` clients apply with a dumb reducer (upsert, delete,
//! splice) and the `inverse` changes that restore the state before it; `undo` and `redo`
//! apply a logged entry's inverse after checking nobody changed its entities since.
//!
//! # Layout
//! - [`canvas`]: the canvas state, the dumb reducer, inverse changes.
//! - [`apply`]: the op engine: conflict rules, sequential batches, undo/redo.
//! - [`history`]: log entries and the lookups undo/redo need.
//! - [`text`]: UTF-16 offsets, splices, Markdown sections.
//! - [`limits`]: size limits (DESIGN §7).

pub mod apply;
pub mod canvas;
pub mod history;
pub mod limits;
pub mod text;

pub use apply::{Batch, BatchResult, Env, OpOutcome, apply_batch};
pub use canvas::{Canvas, FlowError, ReduceError};
pub use history::{History, LogEntry};
pub use limits::Limits;
