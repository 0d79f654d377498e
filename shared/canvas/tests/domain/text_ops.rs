//! Text ops: append, insert, delete, replace by range, regex and heading.

use flowsync_canvas::Limits;
use flowsync_protocol::{Change, ConflictReason};
use serde_json::json;

use crate::support::*;

fn text(w: &World, id: &str) -> String {
    w.canvas.node(id).unwrap().data["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn node_with(w: &mut World, id: &str, text: &str) {
    w.ok("u1", json!({"type":"node.add","node":{"id":id,"type":"note","position":{"x":0,"y":0},"data":{"text":text,"n":1}}}));
}

#[test]
fn append_emits_a_splice_and_never_conflicts() {
    let mut w = World::new();
    node_with(&mut w, "a", "héllo");
    w.ok(
        "u1",
        json!({"type":"node.move","id":"a","position":{"x":1,"y":1}}),
    );
    // A stale base_version does not matter to an append.
    let e = w.ok(
        "agent",
        json!({"type":"text.append","id":"a","path":"/text","text":" 👋","base_version":1}),
    );
    assert_eq!(
        serde_json::to_value(&e.changes[0]).unwrap(),
        json!({"kind":"node.splice","id":"a","path":"/text","at":5,"delete":0,"insert":" 👋","version":3})
    );
    assert_eq!(text(&w, "a"), "héllo 👋");
    assert_eq!(w.canvas.node("a").unwrap().version, 3);
}

#[test]
fn append_creates_a_missing_field_in_an_object() {
    let mut w = World::new();
    w.ok("u1", json!({"type":"node.add","node":{"id":"a","type":"note","position":{"x":0,"y":0},"data":{"o":{}}}}));
    let e = w.ok(
        "u1",
        json!({"type":"text.append","id":"a","path":"/o/body","text":"hi"}),
    );
    assert!(matches!(&e.changes[0], Change::NodeUpsert { .. }));
    assert_eq!(w.canvas.node("a").unwrap().data["o"]["body"], "hi");
    let e = w.ok(
        "u1",
        json!({"type":"text.append","id":"a","path":"/o/body","text":"!"}),
    );
    assert!(matches!(&e.changes[0], Change::NodeSplice { at: 2, .. }));
    w.refused(
        "u1",
        json!({"type":"text.append","id":"a","path":"/missing/deep","text":"x"}),
        ConflictReason::NotFound,
    );
    w.refused(
        "u1",
        json!({"type":"text.append","id":"a","path":"/o","text":"x"}),
        ConflictReason::Invalid,
    );
    w.refused(
        "u1",
        json!({"type":"text.append","id":"zz","path":"/o","text":"x"}),
        ConflictReason::NotFound,
    );
}

#[test]
fn insert_and_delete_count_utf16_and_refuse_stale_positions() {
    let mut w = World::new();
    node_with(&mut w, "a", "a👍b"); // v1
    w.ok(
        "u1",
        json!({"type":"text.insert","id":"a","path":"/text","at":3,"text":"X","base_version":1}),
    );
    assert_eq!(text(&w, "a"), "a👍Xb");
    w.refused(
        "u1",
        json!({"type":"text.insert","id":"a","path":"/text","at":2,"text":"!"}),
        ConflictReason::Invalid,
    );
    w.refused(
        "u1",
        json!({"type":"text.insert","id":"a","path":"/text","at":9,"text":"!"}),
        ConflictReason::Invalid,
    );
    // The node changed at v2, so a position computed at v1 is stale.
    w.refused(
        "u2",
        json!({"type":"text.delete","id":"a","path":"/text","at":0,"len":1,"base_version":1}),
        ConflictReason::VersionMismatch,
    );
    w.ok(
        "u2",
        json!({"type":"text.delete","id":"a","path":"/text","at":1,"len":2,"base_version":2}),
    );
    assert_eq!(text(&w, "a"), "aXb");
    w.refused(
        "u1",
        json!({"type":"text.delete","id":"a","path":"/n","at":0,"len":1}),
        ConflictReason::Invalid,
    );
    w.refused(
        "u1",
        json!({"type":"text.delete","id":"a","path":"/nope","at":0,"len":1}),
        ConflictReason::NotFound,
    );
}

#[test]
fn combining_characters_are_separate_code_units() {
    let mut w = World::new();
    node_with(&mut w, "a", "e\u{301}"); // é as e + combining acute
    w.ok(
        "u1",
        json!({"type":"text.insert","id":"a","path":"/text","at":2,"text":"!"}),
    );
    assert_eq!(text(&w, "a"), "e\u{301}!");
    w.ok(
        "u1",
        json!({"type":"text.delete","id":"a","path":"/text","at":1,"len":1}),
    );
    assert_eq!(text(&w, "a"), "e!");
}

#[test]
fn replace_by_range_and_regex() {
    let mut w = World::new();
    node_with(&mut w, "a", "one two two three");
    w.ok(
        "u1",
        json!({"type":"text.replace","id":"a","path":"/text","target":{"range":[0,3]},"text":"1"}),
    );
    assert_eq!(text(&w, "a"), "1 two two three");
    let e = w.ok("u1", json!({"type":"text.replace","id":"a","path":"/text","target":{"regex":"t(w)o"},"text":"$1"}));
    assert_eq!(text(&w, "a"), "1 $1 two three", "replacement is literal");
    assert!(matches!(
        &e.changes[0],
        Change::NodeSplice {
            at: 2,
            delete: 3,
            ..
        }
    ));
    w.ok("u1", json!({"type":"text.replace","id":"a","path":"/text","target":{"regex":"\\bt\\w+","all":true},"text":"T"}));
    assert_eq!(text(&w, "a"), "1 $1 T T");
    w.refused(
        "u1",
        json!({"type":"text.replace","id":"a","path":"/text","target":{"regex":"zzz"},"text":""}),
        ConflictReason::NotFound,
    );
    w.refused(
        "u1",
        json!({"type":"text.replace","id":"a","path":"/text","target":{"regex":"("},"text":""}),
        ConflictReason::Invalid,
    );
    // Regex replacement applies to the current text: a stale base_version does not matter.
    w.ok("u2", json!({"type":"text.replace","id":"a","path":"/text","target":{"regex":"1"},"text":"one","base_version":1}));
    w.refused("u2", json!({"type":"text.replace","id":"a","path":"/text","target":{"range":[0,1]},"text":"","base_version":1}), ConflictReason::VersionMismatch);
}

#[test]
fn replace_a_markdown_section() {
    let mut w = World::new();
    node_with(&mut w, "a", "# Doc\n## Plan\nold plan\n## Risks\nnone\n");
    w.ok("agent", json!({"type":"text.replace","id":"a","path":"/text","target":{"heading":"Plan"},"text":"1. write\n2. ship"}));
    assert_eq!(
        text(&w, "a"),
        "# Doc\n## Plan\n1. write\n2. ship\n## Risks\nnone\n"
    );
    w.ok("agent", json!({"type":"text.replace","id":"a","path":"/text","target":{"heading":"Risks"},"text":"many"}));
    assert_eq!(
        text(&w, "a"),
        "# Doc\n## Plan\n1. write\n2. ship\n## Risks\nmany"
    );
    w.refused("agent", json!({"type":"text.replace","id":"a","path":"/text","target":{"heading":"Budget"},"text":"x"}), ConflictReason::NotFound);
}

#[test]
fn text_fields_are_limited() {
    let mut w = World::with_limits(Limits {
        max_data_bytes: 64,
        ..Limits::default()
    });
    node_with(&mut w, "a", "");
    w.ok(
        "u1",
        json!({"type":"text.append","id":"a","path":"/text","text":"x".repeat(60)}),
    );
    w.refused(
        "u1",
        json!({"type":"text.append","id":"a","path":"/text","text":"x".repeat(5)}),
        ConflictReason::Invalid,
    );
}

#[test]
fn text_ops_undo_exactly() {
    let mut w = World::new();
    node_with(&mut w, "a", "start");
    w.ok(
        "agent",
        json!({"type":"text.append","id":"a","path":"/text","text":" more"}),
    );
    w.ok(
        "u1",
        json!({"type":"text.insert","id":"a","path":"/text","at":0,"text":">> "}),
    );
    w.ok(
        "agent",
        json!({"type":"text.append","id":"a","path":"/text","text":"!"}),
    );
    // The agent's last append is undone; the person's insertion before it stays.
    w.ok("agent", json!({"type":"undo"}));
    assert_eq!(text(&w, "a"), ">> start more");
    // The person's undo removes their insertion although the agent wrote after it.
    w.ok("u1", json!({"type":"undo"}));
    assert_eq!(text(&w, "a"), "start more");
    w.ok("u1", json!({"type":"redo"}));
    assert_eq!(text(&w, "a"), ">> start more");
    // Undo is position-based: once text under (or before) a splice moved, it conflicts.
    w.ok(
        "u2",
        json!({"type":"text.delete","id":"a","path":"/text","at":0,"len":1}),
    );
    w.refused("u1", json!({"type":"undo"}), ConflictReason::UndoConflict);
    assert_eq!(text(&w, "a"), "> start more");
}
