//! JSON Schemas generated from the wire types. The committed copies under `schemas/` are
//! checked against these by `tests/schemas.rs` (`UPDATE_SCHEMAS=1` rewrites them).

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::{ErrorBody, Event, Execution, Flow, HistoryEntry, OpsRequest};

/// Every published schema: file name (under `schemas/`) and its JSON text.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("ops-request.schema.json", render::<OpsRequest>()),
        ("event.schema.json", render::<Event>()),
        ("flow.schema.json", render::<Flow>()),
        ("history-entry.schema.json", render::<HistoryEntry>()),
        ("execution.schema.json", render::<Execution>()),
        ("error.schema.json", render::<ErrorBody>()),
    ]
}

fn render<T: JsonSchema>() -> String {
    let schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}
