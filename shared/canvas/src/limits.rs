//! Size limits of a canvas (DESIGN §7), configurable by the services.

use serde::{Deserialize, Serialize};

/// Limits enforced when applying ops. Defaults are DESIGN §7's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most nodes a flow may hold.
    pub max_nodes: usize,
    /// Most edges a flow may hold.
    pub max_edges: usize,
    /// Largest serialised `data` of a node or edge, and `meta` of a flow, in bytes. A text
    /// field may not grow past it either.
    pub max_data_bytes: usize,
    /// Most ops in one request (checked by the API before anything is applied).
    pub max_ops_per_request: usize,
    /// Longest flow name, node type or edge handle, in bytes.
    pub max_name_len: usize,
    /// Longest `text.replace` regex, in bytes; compiled regexes are size-limited too.
    pub max_pattern_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nodes: 10_000,
            max_edges: 20_000,
            max_data_bytes: 64 * 1024,
            max_ops_per_request: 1_000,
            max_name_len: 256,
            max_pattern_len: 1024,
        }
    }
}
