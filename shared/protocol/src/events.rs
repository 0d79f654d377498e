//! Events: what the gateway streams to clients over SSE (DESIGN §3).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, ConnectionId, EdgeId, ExecutionId, FlowId, NodeId, OpId};
use crate::model::{Actor, Data, Edge, Node};
use crate::ops::{FieldPath, Op};

/// One event as it travels on the bus and in an SSE `data:` line.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Event {
    /// The event's type and type-specific data: `"type"` and `"data"` on the wire.
    #[serde(flatten)]
    pub body: EventBody,
    /// The flow the event belongs to.
    pub flow_id: FlowId,
    /// The flow's delivery sequence; absent on unsequenced events (`READY`, `RESYNC`,
    /// `PRESENCE`), which are not kept in history and carry no SSE `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the event was made.
    pub ts: DateTime<Utc>,
    /// Who caused it.
    pub actor: Actor,
    /// The W3C trace context (`traceparent`) of the request that caused it, when traced:
    /// the gateway continues the trace from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Read field by field: derived, the flattened body would make serde buffer every event
/// whole before parsing it again (JSON was 18 % of all CPU in `op_fanout`, server
/// included; BENCHMARKS.md "The one binary"). `data` is parsed straight into its type's struct when
/// `type` came first, as every flowsync server writes it; otherwise it is buffered.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

/// An event's keys, read without allocating; others are skipped.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EventField {
    Type,
    Data,
    FlowId,
    Seq,
    Ts,
    Actor,
    Traceparent,
    #[serde(other)]
    Other,
}

/// Reads a string (borrowed or not, never copied) as `parse` makes of it.
fn parse_str<'de, D, T, E>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: fmt::Display,
{
    struct Str<T, E> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, E>,
    }
    impl<T, E: fmt::Display> serde::de::Visitor<'_> for Str<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<Er: serde::de::Error>(self, s: &str) -> Result<T, Er> {
            (self.parse)(s).map_err(Er::custom)
        }
    }
    d.deserialize_str(Str { expecting, parse })
}

/// An event's `type`, read without allocating.
struct TypeName(EventType);

impl<'de> Deserialize<'de> for TypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an event type", |name| {
            EventType::from_str(name).map(TypeName)
        })
    }
}

/// An event's `ts`: what every flowsync server writes (`YYYY-MM-DDTHH:MM:SS.fZ`) read
/// directly — chrono's parser was 1.5 % of `op_fanout`'s CPU — and anything else by
/// chrono, so the two accept exactly the same.
struct Timestamp(DateTime<Utc>);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "an RFC 3339 timestamp", |s| match utc_z(s) {
            Some(ts) => Ok(Timestamp(ts)),
            None => s.parse().map(Timestamp),
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z`, a fraction of 1–9 digits; `None` for anything else (an
/// offset, a leap second, more digits …), which chrono then reads.
fn utc_z(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let [
        y0,
        y1,
        y2,
        y3,
        b'-',
        mo0,
        mo1,
        b'-',
        d0,
        d1,
        b'T',
        h0,
        h1,
        b':',
        mi0,
        mi1,
        b':',
        s0,
        s1,
        rest @ ..,
    ] = b
    else {
        return None;
    };
    let fraction = rest.strip_suffix(b"Z")?;
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let nanos = match fraction {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let second = number(&[*s0, *s1])?;
    if second >= 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(number(&[*y0, *y1, *y2, *y3])?).ok()?,
        number(&[*mo0, *mo1])?,
        number(&[*d0, *d1])?,
    )?;
    let time =
        date.and_hms_nano_opt(number(&[*h0, *h1])?, number(&[*mi0, *mi1])?, second, nanos)?;
    Some(time.and_utc())
}

impl<'de> serde::de::Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        use serde::de::Error;
        let (mut kind, mut body, mut early_data) = (None, None, None);
        let (mut flow_id, mut seq, mut ts, mut actor, mut traceparent) =
            (None, None, None, None, None);
        while let Some(key) = map.next_key::<EventField>()? {
            match key {
                EventField::Type => kind = Some(map.next_value::<TypeName>()?.0),
                EventField::Data => match kind {
                    Some(kind) => body = Some(EventBody::next_from(kind, &mut map)?),
                    None => early_data = Some(map.next_value::<serde_json::Value>()?),
                },
                EventField::FlowId => flow_id = Some(map.next_value()?),
                EventField::Seq => seq = map.next_value()?,
                EventField::Ts => ts = Some(map.next_value::<Timestamp>()?.0),
                EventField::Actor => actor = Some(map.next_value()?),
                EventField::Traceparent => traceparent = map.next_value()?,
                EventField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        let body = match (body, early_data) {
            (Some(body), _) => body,
            (None, Some(data)) => EventBody::from_data(kind, data).map_err(A::Error::custom)?,
            (None, None) => return Err(A::Error::missing_field("data")),
        };
        Ok(Event {
            body,
            flow_id: flow_id.ok_or_else(|| A::Error::missing_field("flow_id"))?,
            seq,
            ts: ts.ok_or_else(|| A::Error::missing_field("ts"))?,
            actor: actor.ok_or_else(|| A::Error::missing_field("actor"))?,
            traceparent,
        })
    }
}

impl Event {
    /// The event's type: its SSE `event:` name.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }
}

/// An event's type, spelled on the wire (`"type"`, the SSE `event:` name) as
/// [`EventType::as_str`] gives: the one list of event types the crates share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventType {
    /// `READY`: first event of every stream.
    Ready,
    /// `SYNC_CANVAS`: ops were applied.
    SyncCanvas,
    /// `CONFLICT`: an op was refused.
    Conflict,
    /// `EXECUTION_UPDATE`: an execution or one of its nodes changed status.
    ExecutionUpdate,
    /// `LOG_STREAM`: a chunk of a node's streamed output.
    LogStream,
    /// `PRESENCE`: someone joined, left or moved their cursor.
    Presence,
    /// `RESYNC`: the client must reload the flow and go on.
    Resync,
    /// `FLOW_DELETED`: the flow was deleted.
    FlowDeleted,
}

impl EventType {
    /// Every event type, in [`EventType::index`] order.
    pub const ALL: [Self; 8] = [
        Self::Ready,
        Self::SyncCanvas,
        Self::Conflict,
        Self::ExecutionUpdate,
        Self::LogStream,
        Self::Presence,
        Self::Resync,
        Self::FlowDeleted,
    ];

    /// The name on the wire, e.g. `SYNC_CANVAS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "READY",
            Self::SyncCanvas => "SYNC_CANVAS",
            Self::Conflict => "CONFLICT",
            Self::ExecutionUpdate => "EXECUTION_UPDATE",
            Self::LogStream => "LOG_STREAM",
            Self::Presence => "PRESENCE",
            Self::Resync => "RESYNC",
            Self::FlowDeleted => "FLOW_DELETED",
        }
    }

    /// The type's place in [`EventType::ALL`] (a bit index for filters).
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// Whether the bus gives events of this type a `seq` and keeps them in history.
    /// Presence is ephemeral (cursor moves would flush history), READY and RESYNC are per
    /// connection.
    pub const fn is_sequenced(self) -> bool {
        !matches!(self, Self::Ready | Self::Resync | Self::Presence)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not an event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownEventType(s.to_owned()))
    }
}

/// The type-specific part of an [`Event`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum EventBody {
    /// First event of every stream.
    #[serde(rename = "READY")]
    Ready(Ready),
    /// Ops were applied.
    #[serde(rename = "SYNC_CANVAS")]
    SyncCanvas(SyncCanvas),
    /// An op was refused.
    #[serde(rename = "CONFLICT")]
    Conflict(Conflict),
    /// An execution or one of its nodes changed status.
    #[serde(rename = "EXECUTION_UPDATE")]
    ExecutionUpdate(ExecutionUpdate),
    /// A chunk of a node's streamed output.
    #[serde(rename = "LOG_STREAM")]
    LogStream(LogStream),
    /// Someone joined, left or moved their cursor.
    #[serde(rename = "PRESENCE")]
    Presence(Presence),
    /// The client must reload the flow and go on.
    #[serde(rename = "RESYNC")]
    Resync(Resync),
    /// The flow was deleted.
    #[serde(rename = "FLOW_DELETED")]
    FlowDeleted(FlowDeleted),
}

impl EventBody {
    /// The body of type `kind` from the map's next value (an event's `data`).
    fn next_from<'de, A: serde::de::MapAccess<'de>>(
        kind: EventType,
        map: &mut A,
    ) -> Result<Self, A::Error> {
        Ok(match kind {
            EventType::Ready => Self::Ready(map.next_value()?),
            EventType::SyncCanvas => Self::SyncCanvas(map.next_value()?),
            EventType::Conflict => Self::Conflict(map.next_value()?),
            EventType::ExecutionUpdate => Self::ExecutionUpdate(map.next_value()?),
            EventType::LogStream => Self::LogStream(map.next_value()?),
            EventType::Presence => Self::Presence(map.next_value()?),
            EventType::Resync => Self::Resync(map.next_value()?),
            EventType::FlowDeleted => Self::FlowDeleted(map.next_value()?),
        })
    }

    /// The body of type `kind` from `data` read before the event's `type`.
    fn from_data(kind: EventType, data: serde_json::Value) -> serde_json::Result<Self> {
        use serde_json::from_value;
        Ok(match kind {
            EventType::Ready => Self::Ready(from_value(data)?),
            EventType::SyncCanvas => Self::SyncCanvas(from_value(data)?),
            EventType::Conflict => Self::Conflict(from_value(data)?),
            EventType::ExecutionUpdate => Self::ExecutionUpdate(from_value(data)?),
            EventType::LogStream => Self::LogStream(from_value(data)?),
            EventType::Presence => Self::Presence(from_value(data)?),
            EventType::Resync => Self::Resync(from_value(data)?),
            EventType::FlowDeleted => Self::FlowDeleted(from_value(data)?),
        })
    }
}

impl EventBody {
    /// The event's type. Its wire name is serde's `rename` above, the same as
    /// [`EventType::as_str`] (the crate's tests check every variant).
    pub fn event_type(&self) -> EventType {
        match self {
            Self::Ready(_) => EventType::Ready,
            Self::SyncCanvas(_) => EventType::SyncCanvas,
            Self::Conflict(_) => EventType::Conflict,
            Self::ExecutionUpdate(_) => EventType::ExecutionUpdate,
            Self::LogStream(_) => EventType::LogStream,
            Self::Presence(_) => EventType::Presence,
            Self::Resync(_) => EventType::Resync,
            Self::FlowDeleted(_) => EventType::FlowDeleted,
        }
    }

    /// Whether the bus gives this event a `seq` and keeps it in history.
    pub fn is_sequenced(&self) -> bool {
        self.event_type().is_sequenced()
    }
}

/// `READY`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Ready {
    /// This stream's connection.
    pub connection_id: ConnectionId,
    /// The epoch the flow's `seq` counts in.
    pub epoch: Epoch,
    /// The flow's head `seq` when the stream started.
    pub seq: u64,
    /// Whether the stream resumed from `Last-Event-ID` without a gap.
    pub resumed: bool,
    /// The flow's version when the stream started.
    pub version: u64,
}

/// `SYNC_CANVAS`: ops applied, in version order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncCanvas {
    /// The flow version before these ops; a client applies the event only at this version.
    pub prev_version: u64,
    /// The flow version after them.
    pub version: u64,
    /// The client that sent them.
    pub client_id: ClientId,
    /// The applied ops.
    pub ops: Vec<AppliedOp>,
}

/// One applied op in a `SYNC_CANVAS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AppliedOp {
    /// The client's op id.
    pub op_id: OpId,
    /// The op's type, e.g. `node.move`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The flow version this op produced.
    pub version: u64,
    /// Its effect, as upserts and deletes a client applies without domain logic.
    pub changes: Vec<Change>,
}

/// The effect of an op on one entity, in its full new state (or a text splice).
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "kind")]
pub enum Change {
    /// A node was added or changed; here is its new state.
    #[serde(rename = "node.upsert")]
    NodeUpsert {
        /// The node's new state.
        node: Node,
    },
    /// A node was deleted.
    #[serde(rename = "node.delete")]
    NodeDelete {
        /// The deleted node.
        id: NodeId,
    },
    /// An edge was added or changed.
    #[serde(rename = "edge.upsert")]
    EdgeUpsert {
        /// The edge's new state.
        edge: Edge,
    },
    /// An edge was deleted.
    #[serde(rename = "edge.delete")]
    EdgeDelete {
        /// The deleted edge.
        id: EdgeId,
    },
    /// The flow's name or meta changed; here are both in their new state.
    #[serde(rename = "flow.update")]
    FlowUpdate {
        /// The flow's name.
        name: String,
        /// The flow's meta.
        meta: Data,
    },
    /// A string field of a node was spliced.
    #[serde(rename = "node.splice")]
    NodeSplice {
        /// The node.
        id: NodeId,
        /// The string field (JSON pointer into `data`).
        path: FieldPath,
        /// Offset in UTF-16 code units.
        at: u64,
        /// How many UTF-16 code units were removed at `at`.
        delete: u64,
        /// What was inserted at `at`.
        insert: String,
        /// The node's new version.
        version: u64,
    },
}

/// Read field by field, whatever the order of the keys: derived, the internal tag made
/// serde buffer every change before parsing it again (most of what was left of a
/// `SYNC_CANVAS` event's parse). Keys that belong to no change are skipped.
impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ChangeVisitor)
    }
}

struct ChangeVisitor;

/// A change's `kind`, read without allocating.
#[derive(Deserialize)]
enum ChangeKind {
    #[serde(rename = "node.upsert")]
    NodeUpsert,
    #[serde(rename = "node.delete")]
    NodeDelete,
    #[serde(rename = "edge.upsert")]
    EdgeUpsert,
    #[serde(rename = "edge.delete")]
    EdgeDelete,
    #[serde(rename = "flow.update")]
    FlowUpdate,
    #[serde(rename = "node.splice")]
    NodeSplice,
}

/// A change's keys, read without allocating.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ChangeField {
    Kind,
    Node,
    Id,
    Edge,
    Name,
    Meta,
    Path,
    At,
    Delete,
    Insert,
    Version,
    #[serde(other)]
    Other,
}

impl<'de> serde::de::Visitor<'de> for ChangeVisitor {
    type Value = Change;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a change object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Change, A::Error> {
        use serde::de::Error;
        let (mut kind, mut node, mut id, mut edge) = (None, None, None, None);
        let (mut name, mut meta, mut path) = (None, None, None);
        let (mut at, mut delete, mut insert, mut version) = (None, None, None, None);
        while let Some(key) = map.next_key::<ChangeField>()? {
            match key {
                ChangeField::Kind => kind = Some(map.next_value::<ChangeKind>()?),
                ChangeField::Node => node = Some(map.next_value()?),
                ChangeField::Id => id = Some(map.next_value::<String>()?),
                ChangeField::Edge => edge = Some(map.next_value()?),
                ChangeField::Name => name = Some(map.next_value()?),
                ChangeField::Meta => meta = Some(map.next_value()?),
                ChangeField::Path => path = Some(map.next_value()?),
                ChangeField::At => at = Some(map.next_value()?),
                ChangeField::Delete => delete = Some(map.next_value()?),
                ChangeField::Insert => insert = Some(map.next_value()?),
                ChangeField::Version => version = Some(map.next_value()?),
                ChangeField::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        fn need<T, E: Error>(field: Option<T>, name: &'static str) -> Result<T, E> {
            field.ok_or_else(|| E::missing_field(name))
        }
        let node_id = |id: Option<String>| NodeId::parse(need(id, "id")?).map_err(A::Error::custom);
        Ok(match need(kind, "kind")? {
            ChangeKind::NodeUpsert => Change::NodeUpsert {
                node: need(node, "node")?,
            },
            ChangeKind::NodeDelete => Change::NodeDelete { id: node_id(id)? },
            ChangeKind::EdgeUpsert => Change::EdgeUpsert {
                edge: need(edge, "edge")?,
            },
            ChangeKind::EdgeDelete => Change::EdgeDelete {
                id: EdgeId::parse(need(id, "id")?).map_err(A::Error::custom)?,
            },
            ChangeKind::FlowUpdate => Change::FlowUpdate {
                name: need(name, "name")?,
                meta: need(meta, "meta")?,
            },
            ChangeKind::NodeSplice => Change::NodeSplice {
                id: node_id(id)?,
                path: need(path, "path")?,
                at: need(at, "at")?,
                delete: need(delete, "delete")?,
                insert: need(insert, "insert")?,
                version: need(version, "version")?,
            },
        })
    }
}

/// Why an op was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictReason {
    /// `If-Match` or `base_version` is older than the target's last change.
    VersionMismatch,
    /// The target does not exist.
    NotFound,
    /// The id is taken.
    Duplicate,
    /// Bad shape or over a limit.
    Invalid,
    /// The entities of the op to undo changed since.
    UndoConflict,
    /// An earlier op of the same request was refused.
    Skipped,
}

impl ConflictReason {
    /// The reason as spelled on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VersionMismatch => "version_mismatch",
            Self::NotFound => "not_found",
            Self::Duplicate => "duplicate",
            Self::Invalid => "invalid",
            Self::UndoConflict => "undo_conflict",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CONFLICT`: an op was refused and applied nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Conflict {
    /// The refused op.
    pub op_id: OpId,
    /// The client that sent it.
    pub client_id: ClientId,
    /// Why.
    pub reason: ConflictReason,
    /// A sentence naming the entity.
    pub message: String,
    /// The flow's version when the op was refused.
    pub current_version: u64,
    /// The entity in the way, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityRef>,
}

/// What kind of entity an [`EntityRef`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A node.
    Node,
    /// An edge.
    Edge,
    /// The flow itself.
    Flow,
}

/// The entity a conflict is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EntityRef {
    /// Node, edge or flow.
    pub kind: EntityKind,
    /// Its id.
    pub id: String,
    /// Its current version, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// Status of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Waiting for a runner.
    Queued,
    /// A runner is executing it.
    Running,
    /// Every node ran (or was skipped) without error.
    Succeeded,
    /// A node failed.
    Failed,
    /// Cancelled by a client.
    Cancelled,
}

impl ExecutionStatus {
    /// The statuses an execution ends in; once in one, its status stays.
    pub const ENDED: [Self; 3] = [Self::Succeeded, Self::Failed, Self::Cancelled];

    /// Whether an execution in this status has ended.
    pub fn has_ended(self) -> bool {
        Self::ENDED.contains(&self)
    }
}

/// Status of a node within an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Not started yet.
    Pending,
    /// Running now.
    Running,
    /// Produced its output.
    Succeeded,
    /// Failed with an error.
    Failed,
    /// Not run: canvas-only, or an upstream node failed.
    Skipped,
    /// Stopped by a cancel.
    Cancelled,
}

/// `EXECUTION_UPDATE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionUpdate {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The execution's new status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ExecutionStatus>,
    /// The node this update is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// The node's new status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_status: Option<NodeStatus>,
    /// Progress in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// The node's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Set when the output was too large to travel in events: its size in bytes. `output`
    /// is then a preview (a string: the start of the output's text); `GET
    /// /v1/flows/{id}/executions/{eid}` serves it whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExecutionUpdate {
    /// The execution's new status (and why it failed).
    pub fn of_execution(
        execution_id: ExecutionId,
        status: ExecutionStatus,
        error: Option<String>,
    ) -> Self {
        Self {
            execution_id,
            status: Some(status),
            node_id: None,
            node_status: None,
            progress: None,
            output: None,
            output_bytes: None,
            error,
        }
    }

    /// One node's new status, with its output or error.
    pub fn of_node(
        execution_id: ExecutionId,
        node_id: NodeId,
        status: NodeStatus,
        output: Option<serde_json::Value>,
        error: Option<String>,
    ) -> Self {
        Self {
            execution_id,
            status: None,
            node_id: Some(node_id),
            node_status: Some(status),
            progress: None,
            output,
            output_bytes: None,
            error,
        }
    }
}

/// `LOG_STREAM`: a chunk of a node's streamed output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogStream {
    /// The execution.
    pub execution_id: ExecutionId,
    /// The node producing output.
    pub node_id: NodeId,
    /// 0, 1, 2… per node: the chunk's place in the node's output.
    pub index: u64,
    /// The text.
    pub chunk: String,
    /// Whether this is the node's last chunk.
    pub done: bool,
}

/// What a `PRESENCE` event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAction {
    /// A connection opened.
    Join,
    /// A connection closed.
    Leave,
    /// A connection's state (cursor, selection) changed.
    Update,
}

/// `PRESENCE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Presence {
    /// Join, leave or update.
    pub action: PresenceAction,
    /// The connection.
    pub connection_id: ConnectionId,
    /// Who is behind it.
    pub actor: Actor,
    /// Ephemeral state: cursor, selection…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<serde_json::Value>,
}

/// `RESYNC`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Resync {
    /// Why the stream could not be resumed.
    pub reason: String,
}

/// `FLOW_DELETED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowDeleted {}

/// One entry of `GET /v1/flows/{id}/history`: an applied op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// The flow version this op produced.
    pub version: u64,
    /// The client's op id.
    pub op_id: OpId,
    /// Who sent it.
    pub actor: Actor,
    /// When it was applied.
    pub ts: DateTime<Utc>,
    /// The op as sent.
    pub op: Op,
    /// Its effect.
    pub changes: Vec<Change>,
}

/// Names one history of a flow's `seq`: a new epoch begins when the bus lost the flow's
/// history. Letters and digits only, so `<epoch>-<seq>` splits unambiguously.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Epoch(String);

impl Epoch {
    /// Longest accepted epoch.
    pub const MAX_LEN: usize = 32;

    /// Validates an epoch: 1–32 ASCII letters or digits.
    pub fn parse(s: impl Into<String>) -> Result<Self, EventIdError> {
        let s = s.into();
        if s.is_empty() || s.len() > Self::MAX_LEN || !s.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(EventIdError::BadEpoch);
        }
        Ok(Self(s))
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Epoch {
    type Error = EventIdError;
    fn try_from(s: String) -> Result<Self, EventIdError> {
        Self::parse(s)
    }
}

impl From<Epoch> for String {
    fn from(e: Epoch) -> String {
        e.0
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({:?})", self.0)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Epoch {
    fn schema_name() -> Cow<'static, str> {
        "Epoch".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[A-Za-z0-9]{1,32}$"})
    }
}

/// Why a `Last-Event-ID` is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    /// Not of the form `<epoch>-<seq>`.
    #[error("expected <epoch>-<seq>")]
    Shape,
    /// The epoch part is not 1–32 letters or digits.
    #[error("the epoch must be 1 to 32 letters or digits")]
    BadEpoch,
    /// The seq part is not a decimal integer.
    #[error("the seq must be a decimal integer")]
    BadSeq,
}

/// A position in a flow's event history: the SSE `id`, `<epoch>-<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The history the position belongs to.
    pub epoch: Epoch,
    /// The last event seen.
    pub seq: u64,
}

impl FromStr for EventId {
    type Err = EventIdError;

    fn from_str(s: &str) -> Result<Self, EventIdError> {
        if s.len() > Epoch::MAX_LEN + 21 {
            return Err(EventIdError::Shape);
        }
        let (epoch, seq) = s.split_once('-').ok_or(EventIdError::Shape)?;
        let epoch = Epoch::parse(epoch)?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EventIdError::BadSeq);
        }
        let seq = seq.parse().map_err(|_| EventIdError::BadSeq)?;
        Ok(Self { epoch, seq })
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_round_trips() {
        let id: EventId = "k3x9-42".parse().unwrap();
        assert_eq!(id.epoch.as_str(), "k3x9");
        assert_eq!(id.seq, 42);
        assert_eq!(id.to_string(), "k3x9-42");
    }

    #[test]
    fn event_id_rejects_bad_values() {
        for (bad, why) in [
            ("", EventIdError::Shape),
            ("42", EventIdError::Shape),
            ("-42", EventIdError::BadEpoch),
            ("a-b-1", EventIdError::BadSeq),
            ("ep-", EventIdError::BadSeq),
            ("ep-+1", EventIdError::BadSeq),
            ("ep--1", EventIdError::BadSeq),
            ("ep-99999999999999999999", EventIdError::BadSeq),
            ("é-1", EventIdError::BadEpoch),
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(why), "{bad:?}");
        }
        assert_eq!("x".repeat(100).parse::<EventId>(), Err(EventIdError::Shape));
    }

    /// What chrono makes of a timestamp (the reading the fast path must equal).
    fn chrono(s: &str) -> Option<DateTime<Utc>> {
        s.parse().ok()
    }

    proptest::proptest! {
        /// Any timestamp shaped as the servers write it: the fast path reads it, as chrono
        /// does; when the date or time is impossible neither reads it.
        #[test]
        fn the_fast_timestamp_reads_what_chrono_reads(
            (y, mo, d, h, mi, sec) in (0u32..10_000, 0u32..14, 0u32..33, 0u32..26, 0u32..61, 0u32..62),
            fraction in proptest::option::of("[0-9]{1,12}"),
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}{fraction}Z");
            match utc_z(&s) {
                Some(fast) => proptest::prop_assert_eq!(Some(fast), chrono(&s), "{}", s),
                // Only what the fast path leaves to chrono: leap seconds, long fractions,
                // impossible dates and times.
                None => proptest::prop_assert!(
                    sec >= 60 || fraction.len() > 10 || chrono(&s).is_none(),
                    "{} left to chrono", s
                ),
            }
        }
    }

    #[test]
    fn the_servers_timestamps_and_the_edges_of_the_calendar_read_fast() {
        for s in [
            "2026-12-07T10:23:29.650335863Z",
            "2026-12-07T10:23:29Z",
            "2024-02-29T12:00:00.5Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            assert_eq!(utc_z(s), chrono(s), "{s}");
            assert!(utc_z(s).is_some(), "{s}");
        }
        assert_eq!(utc_z("2023-02-29T12:00:00Z"), None);
    }

    #[test]
    fn every_other_shape_of_timestamp_is_left_to_chrono() {
        for s in [
            "2026-12-07T10:23:29.650335863+00:00",
            "2026-12-07T10:23:29+01:00",
            "2026-12-07t10:23:29z",
            "2026-12-07 10:23:29Z",
            "2026-12-07T10:23:29.Z",
            "2026-12-07T10:23:29.1234567891Z",
            "2026-12-07T23:59:60Z",
            "+2026-12-07T10:23:29Z",
            "2026-12-07T10:23:29",
            "",
        ] {
            assert_eq!(utc_z(s), None, "{s}");
            let event = format!(
                r#"{{"type":"PRESENCE","data":{{"action":"leave","connection_id":"c","actor":{{"id":"a","kind":"user","name":"a"}}}},"flow_id":"f","ts":"{s}","actor":{{"id":"a","kind":"user","name":"a"}}}}"#
            );
            let parsed = serde_json::from_str::<Event>(&event).map(|e| e.ts);
            assert_eq!(parsed.ok(), chrono(s), "{s}");
        }
    }
}
