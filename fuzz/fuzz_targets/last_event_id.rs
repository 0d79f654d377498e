//! Any string as a `Last-Event-ID`: parsing never panics, and what parses prints back to
//! an id that parses to the same position.
#![no_main]

use flowsync_protocol::EventId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<EventId>() {
        let again: EventId = id.to_string().parse().expect("a printed id parses");
        assert_eq!(again, id);
    }
});
