//! How long the Rust SDK takes to read one `SYNC_CANVAS` event from its SSE `data:` line
//! (a one-op `node.move`, as a client under fan-out receives it).
//!
//! ```sh
//! cargo run --release -p flowsync-protocol --example parse_rate
//! ```

#![allow(clippy::print_stdout)]

use flowsync_protocol::Event;

const EVENT: &str = r#"{"type":"SYNC_CANVAS","data":{"prev_version":41,"version":42,"client_id":"c7","ops":[{"op_id":"c7-41","type":"node.move","version":42,"changes":[{"kind":"node.upsert","node":{"id":"n","type":"note","position":{"x":41.0,"y":7.0},"data":{"title":"hello"},"version":42}}]}]},"flow_id":"hot0","seq":42,"ts":"2026-12-07T08:00:00.123456Z","actor":{"id":"anonymous","kind":"user","name":"anonymous"}}"#;

fn main() {
    let rounds = 300_000;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let event: Event = serde_json::from_str(std::hint::black_box(EVENT)).expect("an event");
        std::hint::black_box(event);
    }
    let micros = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    println!("{micros:.2} µs per SYNC_CANVAS event");
}
