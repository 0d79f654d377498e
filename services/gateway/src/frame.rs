//! SSE framing: each bus message becomes its wire bytes once, shared by every client.

use bytes::Bytes;
use flowsync_bus::Message;
use flowsync_protocol::{Event, EventBody};

/// Which event types a client wants (`?types=`), one bit per [`EventBody::TYPES`] entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeFilter(u16);

impl TypeFilter {
    /// Every type.
    pub const ALL: Self = Self(u16::MAX);

    /// Parses `SYNC_CANVAS,LOG_STREAM`; names the first unknown type.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut bits = 0u16;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let i = kind_index(name).ok_or_else(|| format!("unknown event type {name:?}"))?;
            bits |= 1 << i;
        }
        if bits == 0 {
            return Err("types names no event type".into());
        }
        Ok(Self(bits))
    }

    /// Whether a frame passes (control frames always do).
    pub fn admits(self, frame: &Frame) -> bool {
        frame.kind == CONTROL || self.0 & (1 << frame.kind) != 0
    }
}

/// The index of an event type in [`EventBody::TYPES`].
fn kind_index(name: &str) -> Option<u8> {
    EventBody::TYPES
        .iter()
        .position(|t| *t == name)
        .map(|i| i as u8)
}

/// The kind of frames every client receives whatever its filter: `RESYNC`, pings.
const CONTROL: u8 = u8::MAX;

/// One SSE frame, ready to write.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Index of the event type in [`EventBody::TYPES`], or [`CONTROL`].
    kind: u8,
    /// The bytes on the wire, `id:`/`event:`/`data:` lines and the blank line.
    pub bytes: Bytes,
}

impl Frame {
    /// Frames a bus message: `id: <epoch>-<seq>` (sequenced only), `event:`, `data:`.
    pub fn message(m: &Message) -> Self {
        let mut out = Vec::with_capacity(m.json.len() + m.kind.len() + 64);
        if let Some(p) = &m.position {
            out.extend_from_slice(format!("id: {p}\n").as_bytes());
        }
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(m.kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // The bus carries compact JSON: no raw newline can end the data line early.
        out.extend_from_slice(&m.json);
        out.extend_from_slice(b"\n\n");
        Self {
            kind: kind_index(&m.kind).unwrap_or(CONTROL),
            bytes: Bytes::from(out),
        }
    }

    /// Frames an event made here (`READY`, `RESYNC`): no `id`, so a browser keeps the
    /// last real position as its `Last-Event-ID`.
    pub fn event(event: &Event) -> Self {
        let json = serde_json::to_vec(event).expect("events serialise");
        let mut out = Vec::with_capacity(json.len() + 40);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.type_name().as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        Self {
            kind: CONTROL,
            bytes: Bytes::from(out),
        }
    }

    /// Whether this is an event (not a comment or a control frame made here).
    pub fn is_event(&self) -> bool {
        self.kind != CONTROL
    }

    /// The heartbeat comment.
    pub fn ping() -> Self {
        Self {
            kind: CONTROL,
            bytes: Bytes::from_static(b": ping\n\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_parses_and_admits() {
        let f = TypeFilter::parse("SYNC_CANVAS, LOG_STREAM").unwrap();
        let m = |kind: &str| Message {
            position: None,
            kind: kind.into(),
            json: Bytes::from_static(b"{}"),
        };
        assert!(f.admits(&Frame::message(&m("SYNC_CANVAS"))));
        assert!(!f.admits(&Frame::message(&m("CONFLICT"))));
        assert!(f.admits(&Frame::ping()));
        assert!(TypeFilter::parse("NOPE").unwrap_err().contains("NOPE"));
        assert!(TypeFilter::parse(",").is_err());
    }

    #[test]
    fn message_frame_has_id_event_and_data() {
        let m = Message {
            position: Some("ep1-7".parse().unwrap()),
            kind: "LOG_STREAM".into(),
            json: Bytes::from_static(b"{\"seq\":7}"),
        };
        assert_eq!(
            &Frame::message(&m).bytes[..],
            b"id: ep1-7\nevent: LOG_STREAM\ndata: {\"seq\":7}\n\n"
        );
    }
}
