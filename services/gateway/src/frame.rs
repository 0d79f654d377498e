//! SSE framing: each bus message becomes its wire bytes once, shared by every client.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use flowsync_bus::Message;
use flowsync_protocol::{Event, EventType};

/// Which event types a client wants (`?types=`), one bit per [`EventType::index`],
/// and how it wants its heartbeats (`?heartbeat=event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeFilter(u16);

/// The filter bit that asks for heartbeats as `event: PING` (a browser's `EventSource`
/// cannot see comments, so a watchdog there needs an event).
const PING_EVENTS: u16 = 1 << 15;
const _: () = assert!(EventType::ALL.len() < 15, "a type bit would collide");

/// The heartbeat for streams that asked for it as an event.
static PING_EVENT: LazyLock<Arc<Frame>> = LazyLock::new(|| {
    Arc::new(Frame {
        kind: HEARTBEAT,
        bytes: Bytes::from_static(b"event: PING\ndata: {}\n\n"),
    })
});

impl TypeFilter {
    /// Every type.
    pub const ALL: Self = Self(!PING_EVENTS);

    /// Parses `SYNC_CANVAS,LOG_STREAM`; names the first unknown type.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut bits = 0u16;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind: EventType = name.parse().map_err(|e| format!("{e}"))?;
            bits |= 1 << kind.index();
        }
        if bits == 0 {
            return Err("types names no event type".into());
        }
        Ok(Self(bits))
    }

    /// The same filter, with heartbeats as `event: PING` instead of comments.
    pub fn with_ping_events(self) -> Self {
        Self(self.0 | PING_EVENTS)
    }

    /// Whether a frame passes (control frames and heartbeats always do).
    pub fn admits(self, frame: &Frame) -> bool {
        frame.kind >= HEARTBEAT || self.0 & (1 << frame.kind) != 0
    }

    /// The frame to write for `frame`: itself, or the heartbeat event in place of the
    /// heartbeat comment for a stream that asked for it. Both are shared, static bytes.
    pub fn dress(self, frame: Arc<Frame>) -> Arc<Frame> {
        if frame.kind == HEARTBEAT && self.0 & PING_EVENTS != 0 {
            PING_EVENT.clone()
        } else {
            frame
        }
    }
}

/// The kind of frames every client receives whatever its filter: `READY`, `RESYNC`.
const CONTROL: u8 = u8::MAX;
/// The heartbeat's kind: every client receives it too.
const HEARTBEAT: u8 = u8::MAX - 1;

/// One SSE frame, ready to write.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The event type's [`EventType::index`], or [`CONTROL`] or [`HEARTBEAT`].
    kind: u8,
    /// The bytes on the wire, `id:`/`event:`/`data:` lines and the blank line.
    pub bytes: Bytes,
}

impl Frame {
    /// Frames a bus message: `id: <epoch>-<seq>` (sequenced only), `event:`, `data:`.
    pub fn message(m: &Message) -> Self {
        let kind = m.kind.as_str();
        let mut out = Vec::with_capacity(m.json.len() + kind.len() + 64);
        if let Some(p) = &m.position {
            out.extend_from_slice(format!("id: {p}\n").as_bytes());
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // The bus carries compact JSON: no raw newline can end the data line early.
        out.extend_from_slice(&m.json);
        out.extend_from_slice(b"\n\n");
        Self {
            kind: m.kind.index(),
            bytes: Bytes::from(out),
        }
    }

    /// Frames an event made here (`READY`, `RESYNC`): no `id`, so a browser keeps the
    /// last real position as its `Last-Event-ID`.
    pub fn event(event: &Event) -> Self {
        let json = serde_json::to_vec(event).expect("events serialise");
        let mut out = Vec::with_capacity(json.len() + 40);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.event_type().as_str().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Self {
            kind: CONTROL,
            bytes: Bytes::from(out),
        }
    }

    /// Whether this is an event (not a heartbeat or a control frame made here).
    pub fn is_event(&self) -> bool {
        self.kind < HEARTBEAT
    }

    /// The heartbeat comment.
    pub fn ping() -> Self {
        Self {
            kind: HEARTBEAT,
            bytes: Bytes::from_static(b": ping\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(position: Option<flowsync_bus::Position>, kind: EventType) -> Message {
        Message {
            position,
            kind,
            version: None,
            traceparent: None,
            json: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn filter_parses_and_admits() {
        let f = TypeFilter::parse("SYNC_CANVAS, LOG_STREAM").unwrap();
        assert!(f.admits(&Frame::message(&message(None, EventType::SyncCanvas))));
        assert!(!f.admits(&Frame::message(&message(None, EventType::Conflict))));
        assert!(f.admits(&Frame::ping()));
        assert!(TypeFilter::parse("NOPE").unwrap_err().contains("NOPE"));
        assert!(TypeFilter::parse(",").is_err());
    }

    #[test]
    fn heartbeats_are_comments_unless_asked_as_events() {
        let ping = Arc::new(Frame::ping());
        for filter in [TypeFilter::ALL, TypeFilter::parse("LOG_STREAM").unwrap()] {
            assert_eq!(&filter.dress(ping.clone()).bytes[..], b": ping\n\n");
            let dressed = filter.with_ping_events().dress(ping.clone());
            assert_eq!(&dressed.bytes[..], b"event: PING\ndata: {}\n\n");
            assert!(filter.with_ping_events().admits(&dressed));
            assert!(!dressed.is_event(), "not counted as an event");
        }
        let event = Arc::new(Frame::message(&message(None, EventType::SyncCanvas)));
        let dressed = TypeFilter::ALL.with_ping_events().dress(event.clone());
        assert!(Arc::ptr_eq(&dressed, &event), "events pass as they are");
    }

    #[test]
    fn message_frame_has_id_event_and_data() {
        let m = message(Some("ep1-7".parse().unwrap()), EventType::LogStream);
        assert_eq!(
            &Frame::message(&m).bytes[..],
            b"id: ep1-7\nevent: LOG_STREAM\ndata: {}\n\n"
        );
    }
}
