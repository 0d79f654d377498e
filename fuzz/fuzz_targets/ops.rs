//! Any bytes as an ops request: parsing never panics; a request that parses applies to a
//! canvas without panicking, and the changes it emits, applied with the dumb reducer to a
//! copy, give the same canvas (what every client relies on).
#![no_main]

use flowsync_canvas::{Batch, Canvas, Env, History, Limits, apply_batch};
use flowsync_protocol::{Actor, Flow, OpsRequest};
use libfuzzer_sys::fuzz_target;

fn seeded() -> Canvas {
    let flow: Flow = serde_json::from_value(serde_json::json!({
        "id": "fuzz", "name": "Fuzz", "version": 3, "meta": {},
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "nodes": [
            {"id": "n0", "type": "note", "position": {"x": 0, "y": 0}, "version": 1,
             "data": {"text": "a👍b\n# h\nx", "o": {"k": [1, 2]}}},
            {"id": "n1", "type": "llm", "position": {"x": 1, "y": 1}, "version": 2, "data": {}}
        ],
        "edges": [{"id": "e0", "source": "n0", "target": "n1", "data": {}, "version": 3}]
    }))
    .expect("a valid seed flow");
    Canvas::from_flow(flow).expect("a valid seed canvas")
}

fuzz_target!(|data: &[u8]| {
    let Ok(request) = OpsRequest::from_slice(data) else {
        return;
    };
    let mut canvas = seeded();
    let before = canvas.clone();
    let (limits, history) = (Limits::default(), History::new());
    let mut ids = 0;
    let mut new_id = || {
        ids += 1;
        format!("made{ids}")
    };
    let actor = Actor::system();
    let result = apply_batch(
        &mut canvas,
        &Batch {
            actor: &actor,
            client_id: &request.client_id,
            if_match: None,
            ops: &request.ops,
            now: chrono::Utc::now(),
        },
        &mut Env {
            limits: &limits,
            history: &history,
            already_applied: &|_| false,
            new_id: &mut new_id,
        },
    );
    let mut copy = before;
    for entry in &result.entries {
        copy.apply_applied(entry.version, &entry.changes)
            .expect("the server's own changes apply");
    }
    assert_eq!(copy, canvas, "the dumb reducer and the server disagree");
});
