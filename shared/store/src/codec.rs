//! How both backends store values: canvas JSON as text, status enums by their wire names.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// A value as the JSON text stored beside the queried fields.
pub(crate) fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(value)?)
}

/// A value back from its stored JSON text.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_str(text)?)
}

/// The snake_case wire name of a status enum.
pub(crate) fn name<T: Serialize>(value: &T) -> Result<String, StoreError> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(StoreError::corrupt(format!("{other} is not a status name"))),
    }
}

/// The wire names of the statuses an execution ends in (its status stays once in one).
pub(crate) fn ended_names() -> Result<[String; 3], StoreError> {
    let [succeeded, failed, cancelled] = flowsync_protocol::ExecutionStatus::ENDED;
    Ok([name(&succeeded)?, name(&failed)?, name(&cancelled)?])
}

/// A status enum from its wire name.
pub(crate) fn from_name<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    Ok(serde_json::from_value(serde_json::Value::String(
        s.to_owned(),
    ))?)
}
