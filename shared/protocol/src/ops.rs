//! Canvas ops: what clients send to `POST /v1/flows/{id}/ops` (DESIGN §3).
//!
//! Ops are deserialised by hand through [`serde_json::Value`] rather than with a derived
//! internally tagged enum: serde buffers such enums and loses the field path, and every error
//! here must name it (`ops[2].node.position.x: invalid type …`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::error::ParseError;
use crate::ids::{ClientId, EdgeId, NodeId, OpId};
use crate::model::{Data, Position, Size};

/// The body of `POST /v1/flows/{id}/ops`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpsRequest {
    /// The sending client; echoed in `SYNC_CANVAS` and `CONFLICT`.
    pub client_id: ClientId,
    /// Applied in order; the first refusal makes the rest `skipped`.
    pub ops: Vec<Op>,
}

impl OpsRequest {
    /// Parses a request body, naming the offending field on error. Op ids must be distinct
    /// within a request (a repeat could never mean anything but a client bug).
    pub fn from_slice(body: &[u8]) -> Result<Self, ParseError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError::new("", format!("malformed JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Like [`from_slice`](Self::from_slice), from a parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let mut map = into_object(value)?;
        let client_id = take_required(&mut map, "client_id")?;
        let ops = match map.remove("ops") {
            Some(Value::Array(ops)) => ops,
            Some(_) => return Err(ParseError::new("ops", "expected an array of ops")),
            None => return Err(ParseError::new("ops", "missing field")),
        };
        deny_rest(&map, &["client_id", "ops"])?;
        let mut seen = HashSet::with_capacity(ops.len());
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| {
                let op = Op::from_value(op).map_err(|e| e.under(&format!("ops[{i}]")))?;
                if !seen.insert(op.op_id.clone()) {
                    return Err(ParseError::new(
                        format!("ops[{i}].op_id"),
                        format!("op_id {} is repeated in this request", op.op_id),
                    ));
                }
                Ok(op)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { client_id, ops })
    }
}

impl<'de> Deserialize<'de> for OpsRequest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl JsonSchema for OpsRequest {
    fn schema_name() -> Cow<'static, str> {
        "OpsRequest".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let client_id = generator.subschema_for::<ClientId>();
        let op = generator.subschema_for::<Op>();
        json_schema!({
            "type": "object",
            "description": "The body of POST /v1/flows/{id}/ops.",
            "properties": {
                "client_id": client_id,
                "ops": {"type": "array", "items": op},
            },
            "required": ["client_id", "ops"],
            "additionalProperties": false,
        })
    }
}

/// One op: a client's intent to change the canvas.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    /// Client-made id; a retry with the same id is applied at most once.
    pub op_id: OpId,
    /// The flow version the client saw; enables the per-entity conflict check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<u64>,
    /// What to do.
    #[serde(flatten)]
    pub kind: OpKind,
}

impl Op {
    /// Parses one op from JSON, naming the offending field on error.
    pub fn from_value(value: Value) -> Result<Self, ParseError> {
        let mut map = into_object(value)?;
        let kind = match map.remove("type") {
            Some(Value::String(kind)) => kind,
            Some(_) => return Err(ParseError::new("type", "expected a string")),
            None => return Err(ParseError::new("type", "missing field")),
        };
        let op_id = take_required(&mut map, "op_id")?;
        let base_version = take_optional(&mut map, "base_version")?;
        let kind = OpKind::from_parts(&kind, map)?;
        Ok(Self {
            op_id,
            base_version,
            kind,
        })
    }

    /// The op's wire type, e.g. `node.add`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl JsonSchema for Op {
    fn schema_name() -> Cow<'static, str> {
        "Op".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let variants = OpKind::variant_schemas(generator);
        json_schema!({
            "description": "One canvas op. Every op has `op_id` and may have `base_version`.",
            "oneOf": variants,
        })
    }
}

/// Adds the `type` tag and the fields every op shares to one op variant's object schema.
fn with_common_fields(generator: &mut SchemaGenerator, mut schema: Schema, name: &str) -> Schema {
    let op_id = generator.subschema_for::<OpId>();
    let obj = schema.ensure_object();
    let props = obj
        .entry("properties")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .expect("properties is an object");
    props.insert("type".into(), serde_json::json!({"const": name}));
    props.insert("op_id".into(), op_id.to_value());
    props.insert(
        "base_version".into(),
        serde_json::json!({"type": "integer", "minimum": 0, "description": "The flow version the client saw."}),
    );
    let required = obj
        .entry("required")
        .or_insert_with(|| Value::Array(vec![]))
        .as_array_mut()
        .expect("required is an array");
    required.insert(0, "op_id".into());
    required.insert(0, "type".into());
    schema
}

macro_rules! op_kinds {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($ty:ident), )*) => {
        /// The type-specific part of an [`Op`], tagged by `type` on the wire.
        #[derive(Debug, Clone, PartialEq, Serialize)]
        #[serde(tag = "type")]
        pub enum OpKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($ty), )*
        }

        impl OpKind {
            /// Every op type, as spelled on the wire.
            pub const TYPES: &'static [&'static str] = &[$($name),*];

            /// The op's wire type, e.g. `node.add`.
            pub fn type_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            fn from_parts(kind: &str, rest: serde_json::Map<String, Value>) -> Result<Self, ParseError> {
                match kind {
                    $( $name => Ok(Self::$variant(from_object(rest)?)), )*
                    other => Err(ParseError::new("type", UnknownType(other))),
                }
            }

            fn variant_schemas(generator: &mut SchemaGenerator) -> Vec<Schema> {
                vec![$({
                    let schema = <$ty as JsonSchema>::json_schema(generator);
                    with_common_fields(generator, schema, $name)
                }),*]
            }
        }

        $( impl From<$ty> for OpKind {
            fn from(op: $ty) -> Self { Self::$variant(op) }
        } )*
    };
}

op_kinds! {
    /// Add a node.
    "node.add" => NodeAdd(NodeAdd),
    /// Change a node's data (merge patch) and/or type.
    "node.update" => NodeUpdate(NodeUpdate),
    /// Move a node.
    "node.move" => NodeMove(NodeMove),
    /// Resize a node.
    "node.resize" => NodeResize(NodeResize),
    /// Delete a node and every edge touching it.
    "node.delete" => NodeDelete(NodeDelete),
    /// Add an edge; both ends must exist.
    "edge.add" => EdgeAdd(EdgeAdd),
    /// Change an edge's data (merge patch).
    "edge.update" => EdgeUpdate(EdgeUpdate),
    /// Delete an edge.
    "edge.delete" => EdgeDelete(EdgeDelete),
    /// Rename the flow and/or patch its meta.
    "flow.update" => FlowUpdate(FlowUpdate),
    /// Append to a string field: the streaming writer's op, never in conflict.
    "text.append" => TextAppend(TextAppend),
    /// Insert into a string field at a UTF-16 offset.
    "text.insert" => TextInsert(TextInsert),
    /// Delete a UTF-16 range of a string field.
    "text.delete" => TextDelete(TextDelete),
    /// Replace a range, regex matches or a Markdown section of a string field.
    "text.replace" => TextReplace(TextReplace),
    /// Undo the event at `version`, or the sender's latest undoable op.
    "undo" => Undo(Undo),
    /// Undo the sender's latest undo.
    "redo" => Redo(Redo),
}

/// The error message for an unknown op `type`.
struct UnknownType<'a>(&'a str);

impl fmt::Display for UnknownType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown op type {:?}, expected one of: {}",
            self.0,
            OpKind::TYPES.join(", ")
        )
    }
}

/// A node as sent in `node.add`: the id is optional (the server makes one), the version is
/// the server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    /// The node's id; the server makes one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    /// The node's kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the node sits.
    pub position: Position,
    /// Optional extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// Initial data.
    #[serde(default)]
    pub data: Data,
}

/// An edge as sent in `edge.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEdge {
    /// The edge's id; the server makes one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<EdgeId>,
    /// The upstream node (must exist).
    pub source: NodeId,
    /// The downstream node (must exist).
    pub target: NodeId,
    /// Which output of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_handle: Option<String>,
    /// Which input of the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_handle: Option<String>,
    /// Initial data.
    #[serde(default)]
    pub data: Data,
}

/// `node.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeAdd {
    /// The node to add.
    pub node: NewNode,
}

/// `node.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpdate {
    /// The node.
    pub id: NodeId,
    /// RFC 7396 JSON merge patch of the node's `data` (`null` removes a key).
    #[serde(default)]
    pub patch: Data,
    /// A new node type. Named `node_type` on the wire: `type` is the op's own tag.
    #[serde(rename = "node_type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `node.move`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeMove {
    /// The node.
    pub id: NodeId,
    /// The new position.
    pub position: Position,
}

/// `node.resize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeResize {
    /// The node.
    pub id: NodeId,
    /// The new size.
    pub size: Size,
}

/// `node.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDelete {
    /// The node.
    pub id: NodeId,
}

/// `edge.add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeAdd {
    /// The edge to add.
    pub edge: NewEdge,
}

/// `edge.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeUpdate {
    /// The edge.
    pub id: EdgeId,
    /// RFC 7396 JSON merge patch of the edge's `data`.
    #[serde(default)]
    pub patch: Data,
}

/// `edge.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeDelete {
    /// The edge.
    pub id: EdgeId,
}

/// `flow.update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowUpdate {
    /// A new name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// RFC 7396 JSON merge patch of the flow's `meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_patch: Option<Data>,
}

/// A JSON pointer (RFC 6901) to a string field inside a node's `data`, e.g. `/body`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldPath(String);

impl FieldPath {
    /// Longest accepted pointer, in bytes.
    pub const MAX_LEN: usize = 1024;

    /// Validates a JSON pointer: non-empty, starting with `/`, `~` only as `~0` or `~1`.
    pub fn parse(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        if !s.starts_with('/') {
            return Err("a JSON pointer into the node's data must start with '/'".into());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!(
                "is {} bytes long, the limit is {}",
                s.len(),
                Self::MAX_LEN
            ));
        }
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err("'~' must be followed by '0' or '1' in a JSON pointer".into());
            }
        }
        Ok(Self(s))
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unescaped reference tokens (`/a~1b/c` → `a/b`, `c`).
    pub fn tokens(&self) -> impl Iterator<Item = Cow<'_, str>> {
        self.0[1..].split('/').map(|t| {
            if t.contains('~') {
                Cow::Owned(t.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(t)
            }
        })
    }
}

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({:?})", self.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for FieldPath {
    fn schema_name() -> Cow<'static, str> {
        "FieldPath".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "JSON pointer (RFC 6901) to a string field inside the node's data.",
            "pattern": "^/",
            "maxLength": Self::MAX_LEN,
        })
    }
}

/// `text.append`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextAppend {
    /// The node.
    pub id: NodeId,
    /// The string field.
    pub path: FieldPath,
    /// Text to append.
    pub text: String,
}

/// `text.insert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextInsert {
    /// The node.
    pub id: NodeId,
    /// The string field.
    pub path: FieldPath,
    /// Offset in UTF-16 code units.
    pub at: u64,
    /// Text to insert.
    pub text: String,
}

/// `text.delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextDelete {
    /// The node.
    pub id: NodeId,
    /// The string field.
    pub path: FieldPath,
    /// Offset in UTF-16 code units.
    pub at: u64,
    /// Length in UTF-16 code units.
    pub len: u64,
}

/// `text.replace`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TextReplace {
    /// The node.
    pub id: NodeId,
    /// The string field.
    pub path: FieldPath,
    /// What to replace.
    pub target: TextTarget,
    /// The replacement.
    pub text: String,
}

/// What `text.replace` replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTarget", into = "RawTarget")]
pub enum TextTarget {
    /// `{"range":[at,len]}`: UTF-16 offset and length.
    Range {
        /// Offset in UTF-16 code units.
        at: u64,
        /// Length in UTF-16 code units.
        len: u64,
    },
    /// `{"regex":"…","all"?:bool}`: the first match, or every match with `all`.
    Regex {
        /// The pattern (Rust `regex` syntax, no look-around).
        pattern: String,
        /// Replace every match instead of the first.
        all: bool,
    },
    /// `{"heading":"…"}`: the body of the Markdown section under that heading.
    Heading(String),
}

/// The wire form of [`TextTarget`]: exactly one of `range`, `regex`, `heading`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<(u64, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    heading: Option<String>,
}

impl TryFrom<RawTarget> for TextTarget {
    type Error = &'static str;
    fn try_from(raw: RawTarget) -> Result<Self, Self::Error> {
        match raw {
            RawTarget {
                range: Some((at, len)),
                regex: None,
                all: None,
                heading: None,
            } => Ok(Self::Range { at, len }),
            RawTarget {
                range: None,
                regex: Some(pattern),
                all,
                heading: None,
            } => Ok(Self::Regex {
                pattern,
                all: all.unwrap_or(false),
            }),
            RawTarget {
                range: None,
                regex: None,
                all: None,
                heading: Some(h),
            } => Ok(Self::Heading(h)),
            RawTarget {
                all: Some(_),
                regex: None,
                ..
            } => Err("`all` goes only with `regex`"),
            _ => Err("expected exactly one of `range`, `regex` or `heading`"),
        }
    }
}

impl From<TextTarget> for RawTarget {
    fn from(t: TextTarget) -> Self {
        match t {
            TextTarget::Range { at, len } => Self {
                range: Some((at, len)),
                ..Self::default()
            },
            TextTarget::Regex { pattern, all } => Self {
                regex: Some(pattern),
                all: all.then_some(true),
                ..Self::default()
            },
            TextTarget::Heading(h) => Self {
                heading: Some(h),
                ..Self::default()
            },
        }
    }
}

impl JsonSchema for TextTarget {
    fn schema_name() -> Cow<'static, str> {
        "TextTarget".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let offset = serde_json::json!({"type": "integer", "minimum": 0});
        json_schema!({
            "oneOf": [
                {
                    "type": "object",
                    "description": "A UTF-16 range: [at, len].",
                    "properties": {"range": {"type": "array", "prefixItems": [offset, offset], "items": false, "minItems": 2}},
                    "required": ["range"],
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "description": "The first match of a regular expression, or every match with `all`.",
                    "properties": {"regex": {"type": "string"}, "all": {"type": "boolean"}},
                    "required": ["regex"],
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "description": "The body of the Markdown section under this heading.",
                    "properties": {"heading": {"type": "string"}},
                    "required": ["heading"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

/// `undo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Undo {
    /// The version of the event to undo; the sender's latest undoable op when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `redo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redo {}

fn into_object(value: Value) -> Result<serde_json::Map<String, Value>, ParseError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ParseError::new(
            "",
            format!("expected an object, found {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Deserialises a JSON object into `T`, keeping the path of any error.
fn from_object<T: DeserializeOwned>(map: serde_json::Map<String, Value>) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(Value::Object(map)).map_err(ParseError::from_path_error)
}

fn take_required<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<T, ParseError> {
    let value = map
        .remove(key)
        .ok_or_else(|| ParseError::new(key, "missing field"))?;
    serde_json::from_value(value).map_err(|e| ParseError::new(key, e))
}

fn take_optional<T: DeserializeOwned>(
    map: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<T>, ParseError> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ParseError::new(key, e)),
    }
}

fn deny_rest(map: &serde_json::Map<String, Value>, expected: &[&str]) -> Result<(), ParseError> {
    match map.keys().next() {
        None => Ok(()),
        Some(key) => Err(ParseError::new(
            key.as_str(),
            format!("unknown field, expected one of: {}", expected.join(", ")),
        )),
    }
}
