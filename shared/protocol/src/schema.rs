//! JSON Schemas generated from the wire types. The committed copies under `schemas/` are
//! checked against these by `tests/schemas.rs` (`UPDATE_SCHEMAS=1` rewrites them).

use std::collections::BTreeMap;

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::Value;

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
    let mut text =
        serde_json::to_string_pretty(&canonical(schema.to_value())).expect("a schema serialises");
    text.push('\n');
    text
}

/// The value with every object's keys sorted. Key order otherwise depends on whether some
/// crate in the build turned on `serde_json/preserve_order` (the MongoDB driver's `bson`
/// does), and the committed files must not depend on what else is being compiled.
fn canonical(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        other => other,
    }
}
