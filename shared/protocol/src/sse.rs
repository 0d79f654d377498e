//! Reading a `text/event-stream`: the event stream interpretation of the WHATWG HTML
//! standard (§9.2.6), for clients that read the gateway's streams or an LLM endpoint's.
//!
//! [`Decoder`] takes the bytes as they arrive, in chunks cut anywhere, and shows each event
//! as borrowed slices of its own buffers: no allocation per event once its buffers have
//! grown to the stream's largest event. An event whose data is larger than the decoder's
//! bound, or a line longer than the bound and its field's name, is an error, not unbounded
//! memory — the same error however the bytes were cut.
//!
//! ```
//! use flowsync_protocol::sse::Decoder;
//!
//! let mut sse = Decoder::new(1 << 20);
//! sse.push(b"id: 7-1\nevent: SYNC_CANVAS\ndata: {\"a\":\ndata: 1}\n\n: ping\n\n");
//! assert!(sse.advance()?);
//! let event = sse.event().expect("one event");
//! assert_eq!((event.id, event.event, event.data), ("7-1", "SYNC_CANVAS", &b"{\"a\":\n1}"[..]));
//! assert!(!sse.advance()?);
//! # Ok::<(), flowsync_protocol::sse::TooLarge>(())
//! ```

use std::borrow::Cow;

/// An event: its type (`message` when it named none), its data (its `data` lines joined
/// by `\n`) and the stream's last event id (the latest `id` field so far, kept across
/// events as the standard says; empty before any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field, or `message`.
    pub event: &'a str,
    /// The `data` lines, joined by `\n`.
    pub data: &'a [u8],
    /// The last event id.
    pub id: &'a str,
}

/// An event's data, or a line, exceeded the decoder's bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream event exceeds {limit} bytes")]
pub struct TooLarge {
    /// The bound, in bytes.
    pub limit: usize,
}

/// An event-stream decoder: [`push`](Self::push) bytes, then [`advance`](Self::advance)
/// to each event and read it with [`event`](Self::event), until `advance` says no event is
/// complete.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes received; those before `read` are consumed.
    buf: Vec<u8>,
    read: usize,
    /// The last line ended in `\r`: a `\n` next is part of that line ending.
    after_cr: bool,
    /// Nothing read yet: a byte order mark may come first.
    at_start: bool,
    data: Vec<u8>,
    event: String,
    id: String,
    /// `advance` stopped at an event: its data and type are cleared on the next.
    dispatched: bool,
    limit: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a line may hold beyond the bound: the field's name, its colon and a space.
const FIELD: usize = "data: ".len();

impl Decoder {
    /// A decoder that refuses an event whose data is larger than `limit` bytes (its
    /// `data` lines joined), or any line longer than `limit` and `data: `.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            read: 0,
            after_cr: false,
            at_start: true,
            data: Vec::new(),
            event: String::new(),
            id: String::new(),
            dispatched: false,
            limit,
        }
    }

    /// Adds the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was read, so the buffer holds at most one event's bytes past a chunk.
        if self.read == self.buf.len() {
            self.buf.clear();
        } else if self.read > 0 {
            self.buf.drain(..self.read);
        }
        self.read = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The event [`advance`](Self::advance) stopped at, until it is called again.
    pub fn event(&self) -> Option<Event<'_>> {
        self.dispatched.then(|| Event {
            event: if self.event.is_empty() {
                "message"
            } else {
                &self.event
            },
            data: &self.data,
            id: &self.id,
        })
    }

    /// Reads what was pushed up to the end of the next event: `true` when one is complete
    /// (then [`event`](Self::event) is it), `false` when more bytes are needed. After
    /// [`TooLarge`] the rest of the stream cannot be read: drop the decoder.
    pub fn advance(&mut self) -> Result<bool, TooLarge> {
        if std::mem::take(&mut self.dispatched) {
            self.data.clear();
            self.event.clear();
        }
        if self.at_start {
            let rest = &self.buf[self.read..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) {
                return Ok(false); // Too few bytes yet to tell.
            }
            if rest.starts_with(BOM) {
                self.read += BOM.len();
            }
            self.at_start = false;
        }
        loop {
            let rest = &self.buf[self.read..];
            if self.after_cr && !rest.is_empty() {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    self.read += 1;
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                // A line too long to be allowed once complete is refused already.
                if rest.len() > self.limit + FIELD {
                    return Err(TooLarge { limit: self.limit });
                }
                return Ok(false);
            };
            self.after_cr = rest[end] == b'\r';
            let line = &rest[..end];
            if line.len() > self.limit + FIELD {
                return Err(TooLarge { limit: self.limit });
            }
            self.read += end + 1;
            if line.is_empty() {
                // A blank line ends the event; one without data is no event.
                if self.data.pop().is_some() {
                    self.dispatched = true;
                    return Ok(true);
                }
                self.event.clear();
                continue;
            }
            let (name, value) = match memchr::memchr(b':', line) {
                Some(0) => continue, // A comment.
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match name {
                b"data" => {
                    // What the event's data would be if this line were its last.
                    if self.data.len() + value.len() > self.limit {
                        return Err(TooLarge { limit: self.limit });
                    }
                    self.data.extend_from_slice(value);
                    self.data.push(b'\n');
                }
                b"event" => {
                    self.event.clear();
                    self.event.push_str(&utf8(value));
                }
                b"id" if !value.contains(&0) => {
                    self.id.clear();
                    self.id.push_str(&utf8(value));
                }
                // `retry` (a reconnection delay) and unknown fields: the caller keeps its
                // own backoff.
                _ => {}
            }
        }
    }
}

/// The standard decodes the stream as UTF-8, invalid sequences replaced.
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (String, String, String);

    /// Every event `chunks` decode to, pushed one chunk at a time.
    fn decode(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut sse = Decoder::new(1024);
        let mut events = Vec::new();
        for chunk in chunks {
            sse.push(chunk);
            while sse.advance().expect("within the bound") {
                let e = sse.event().expect("an event");
                let data = String::from_utf8(e.data.to_vec()).expect("utf-8");
                events.push((e.event.to_owned(), data, e.id.to_owned()));
            }
        }
        events
    }

    fn owned(event: &str, data: &str, id: &str) -> Owned {
        (event.into(), data.into(), id.into())
    }

    #[test]
    fn events_are_the_same_however_the_bytes_are_cut() {
        let stream: &[u8] = b"\xEF\xBB\xBFretry: 10\r\n: ping\r\n\r\nid: 1-1\r\nevent: A\r\ndata: x\r\ndata:  y\r\n\r\ndata\rdata: z\r\rid: 1-2\nevent: B\ndata: {}\n\nunknown: q\nevent: C\n\n";
        let want = vec![
            owned("A", "x\n y", "1-1"),
            owned("message", "\nz", "1-1"),
            owned("B", "{}", "1-2"),
        ];
        assert_eq!(decode(&[stream]), want);
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(decode(&[a, b]), want, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes), want, "a byte at a time");
    }

    #[test]
    fn each_rule_of_the_standard() {
        let cases: [(&str, &[u8], Vec<Owned>); 3] = [
            (
                "an event without data is none, and its type does not carry over",
                b"event: A\n\ndata: 1\n\n",
                vec![owned("message", "1", "")],
            ),
            (
                "an id with a NUL is ignored, an empty id clears it",
                b"id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid\ndata: c\n\n",
                vec![
                    owned("message", "a", "1"),
                    owned("message", "b", "1"),
                    owned("message", "c", ""),
                ],
            ),
            (
                "a line without a colon is a field with an empty value",
                b"data\ndata\n\n",
                vec![owned("message", "\n", "")],
            ),
        ];
        for (rule, stream, want) in cases {
            assert_eq!(decode(&[stream]), want, "{rule}");
        }
    }

    #[test]
    fn the_bound_is_the_same_however_the_bytes_are_cut() {
        /// The events' data, or the refusal.
        type Decoded = Result<Vec<Vec<u8>>, TooLarge>;
        /// Whether `stream` decodes within a bound of 8, pushed in two parts cut at `cut`.
        fn fits(stream: &[u8], cut: usize) -> Decoded {
            let mut sse = Decoder::new(8);
            let mut events = vec![];
            for part in [&stream[..cut], &stream[cut..]] {
                sse.push(part);
                while sse.advance()? {
                    events.push(sse.event().expect("an event").data.to_vec());
                }
            }
            Ok(events)
        }
        let cases: [(&[u8], Decoded); 5] = [
            (b"data: 12345678\n\n", Ok(vec![b"12345678".to_vec()])),
            (
                b"data: 1234\ndata: 567\n\n",
                Ok(vec![b"1234\n567".to_vec()]),
            ),
            (b"data: 123456789\n\n", Err(TooLarge { limit: 8 })),
            (b"data: 1234\ndata: 5678\n\n", Err(TooLarge { limit: 8 })),
            // Lines other than data are bounded too (a comment, an id, a type).
            (b": 1234567890123\ndata: 1\n\n", Err(TooLarge { limit: 8 })),
        ];
        for (stream, want) in cases {
            for cut in 0..=stream.len() {
                let got = fits(stream, cut);
                assert_eq!(
                    got,
                    want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    #[test]
    fn consumed_bytes_are_dropped_as_the_stream_goes_on() {
        let mut sse = Decoder::new(64);
        for _ in 0..1000 {
            sse.push(b"data: 0123456789\n\ndata: 01");
            assert_eq!(sse.advance(), Ok(true));
            assert_eq!(sse.advance(), Ok(false));
            assert_eq!(sse.event(), None);
            sse.push(b"23456789\n\n");
            assert_eq!(sse.advance(), Ok(true));
        }
        assert!(sse.buf.capacity() < 256, "{}", sse.buf.capacity());
    }
}
