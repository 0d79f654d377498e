//! Per-actor undo and redo, and `undo_conflict`.

use flowsync_protocol::{ConflictReason, Position};
use serde_json::json;

use crate::support::*;

fn pos(w: &World, id: &str) -> Position {
    w.canvas.node(id).unwrap().position
}

fn mv(id: &str, x: f64) -> serde_json::Value {
    json!({"type":"node.move","id":id,"position":{"x":x,"y":0.0}})
}

#[test]
fn undo_and_redo_walk_the_actors_own_stack() {
    let mut w = World::new();
    w.ok("u1", add_node("a")); // v1
    w.ok("u2", add_node("b")); // v2 (someone else)
    w.ok("u1", mv("a", 10.0)); // v3
    w.ok("u1", mv("a", 20.0)); // v4
    let undo = w.ok("u1", json!({"type":"undo"}));
    assert_eq!(undo.undo_of, Some(4));
    assert_eq!(pos(&w, "a").x, 10.0);
    assert_eq!(
        w.canvas.node("a").unwrap().version,
        5,
        "an undo is a change like any other"
    );
    w.ok("u1", json!({"type":"undo"}));
    assert_eq!(pos(&w, "a").x, 0.0);
    w.ok("u1", json!({"type":"redo"}));
    assert_eq!(pos(&w, "a").x, 10.0);
    w.ok("u1", json!({"type":"redo"}));
    assert_eq!(pos(&w, "a").x, 20.0);
    w.refused("u1", json!({"type":"redo"}), ConflictReason::NotFound);
    // Undo the redo, then a new edit ends the redo chain.
    w.ok("u1", json!({"type":"undo"}));
    assert_eq!(pos(&w, "a").x, 10.0);
    w.ok("u1", mv("a", 30.0));
    w.refused("u1", json!({"type":"redo"}), ConflictReason::NotFound);
    // u2's undo only sees u2's ops.
    let undo = w.ok("u2", json!({"type":"undo"}));
    assert_eq!(undo.undo_of, Some(2));
    assert!(w.canvas.node("b").is_none());
    w.refused("u2", json!({"type":"undo"}), ConflictReason::NotFound);
}

#[test]
fn undo_conflicts_when_someone_changed_the_entity_since() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    w.ok("u1", mv("a", 10.0));
    w.ok("u2", mv("a", 99.0));
    let c = w.refused("u1", json!({"type":"undo"}), ConflictReason::UndoConflict);
    assert_eq!(c.entity.unwrap().id, "a");
    assert!(
        c.message.contains("node a changed after version 2"),
        "{}",
        c.message
    );
}

#[test]
fn undo_of_an_add_conflicts_with_a_later_edge_to_it() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    w.ok("u2", add_node("b"));
    w.ok("u2", add_edge("e", "b", "a"));
    let c = w.refused("u1", json!({"type":"undo"}), ConflictReason::UndoConflict);
    assert_eq!(c.entity.unwrap().id, "e");
    assert!(w.canvas.node("a").is_some());
}

#[test]
fn undo_of_a_delete_restores_the_node_and_its_edges() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    w.ok("u1", add_node("b"));
    w.ok("u1", add_edge("e1", "a", "b"));
    w.ok("u1", add_edge("e2", "b", "a"));
    let before = w.canvas.clone();
    w.ok("u1", json!({"type":"node.delete","id":"a"}));
    assert_eq!(w.canvas.edges().len(), 0);
    w.ok("u1", json!({"type":"undo"}));
    assert_eq!(
        w.canvas.node("a").unwrap().data,
        before.node("a").unwrap().data
    );
    assert_eq!(w.canvas.edges().len(), 2);
    // Restoring an edge whose other end is gone is a conflict, and nothing half-applies.
    w.ok("u1", json!({"type":"redo"}));
    w.ok("u2", json!({"type":"node.delete","id":"b"}));
    let snapshot = w.canvas.clone();
    let r = w.send("u1", vec![json!({"type":"undo"})]);
    let c = r.refusals().next().unwrap();
    assert_eq!(c.reason, ConflictReason::UndoConflict);
    assert_eq!(w.canvas, snapshot);
}

#[test]
fn undo_by_version_and_its_refusals() {
    let mut w = World::new();
    w.ok("u1", add_node("a")); // v1
    w.ok("u1", mv("a", 5.0)); // v2
    w.ok("u2", add_node("b")); // v3
    // Anyone may undo a given version.
    let e = w.ok("u2", json!({"type":"undo","version":2}));
    assert_eq!(e.undo_of, Some(2));
    assert_eq!(pos(&w, "a").x, 0.0);
    w.refused(
        "u2",
        json!({"type":"undo","version":2}),
        ConflictReason::UndoConflict,
    );
    w.refused(
        "u2",
        json!({"type":"undo","version":77}),
        ConflictReason::NotFound,
    );
    // u1's plain undo skips the version u2 already undid.
    let e = w.ok("u1", json!({"type":"undo"}));
    assert_eq!(e.undo_of, Some(1));
}

#[test]
fn undo_within_one_batch_sees_the_batchs_own_ops() {
    let mut w = World::new();
    let r = w.send(
        "u1",
        vec![
            add_node("a"),
            mv("a", 3.0),
            json!({"type":"undo"}),
            json!({"type":"undo"}),
        ],
    );
    assert_eq!(r.entries.len(), 4, "{:?}", r.refusals().collect::<Vec<_>>());
    assert!(w.canvas.node("a").is_none());
}

#[test]
fn flow_update_undo() {
    let mut w = World::new();
    w.ok(
        "u1",
        json!({"type":"flow.update","name":"One","meta_patch":{"k":1}}),
    );
    w.ok("u1", json!({"type":"flow.update","name":"Two"}));
    w.ok("u1", json!({"type":"undo"}));
    assert_eq!(w.canvas.name(), "One");
    w.ok("u2", json!({"type":"flow.update","meta_patch":{"k":2}}));
    w.refused("u1", json!({"type":"undo"}), ConflictReason::UndoConflict);
}
