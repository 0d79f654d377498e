//! Every op type, and every refusal reason, one by one.

use flowsync_canvas::{Canvas, Limits, OpOutcome};
use flowsync_protocol::{Change, ConflictReason, EntityKind, Position, Size};
use serde_json::json;

use crate::support::*;

#[test]
fn node_add_with_and_without_id() {
    let mut w = World::new();
    let e = w.ok("u1", add_node("n1"));
    assert_eq!(e.version, 1);
    let node = w.canvas.node("n1").unwrap();
    assert_eq!((node.kind.as_str(), node.version), ("note", 1));
    assert!(matches!(&e.changes[..], [Change::NodeUpsert { node }] if node.id.as_str() == "n1"));

    let e = w.ok(
        "u1",
        json!({"type":"node.add","node":{"type":"llm","position":{"x":1.0,"y":2.0}}}),
    );
    let Change::NodeUpsert { node } = &e.changes[0] else {
        panic!()
    };
    assert_eq!(node.id.as_str(), "gen1", "the server made the id");
    assert_eq!(w.canvas.nodes().len(), 2);
}

#[test]
fn node_add_refusals() {
    let mut w = World::with_limits(Limits {
        max_nodes: 2,
        max_data_bytes: 64,
        max_name_len: 8,
        ..Limits::default()
    });
    w.ok("u1", add_node("n1"));
    let c = w.refused("u1", add_node("n1"), ConflictReason::Duplicate);
    assert_eq!(
        c.entity
            .as_ref()
            .map(|e| (e.kind, e.id.as_str(), e.version)),
        Some((EntityKind::Node, "n1", Some(1)))
    );
    assert!(c.message.contains("n1"), "{}", c.message);
    let big = json!({"type":"node.add","node":{"id":"n2","type":"note","position":{"x":0,"y":0},"data":{"t":"x".repeat(100)}}});
    assert!(
        w.refused("u1", big, ConflictReason::Invalid)
            .message
            .contains("limit is 64")
    );
    let long_type = json!({"type":"node.add","node":{"id":"n2","type":"a-very-long-type","position":{"x":0,"y":0}}});
    w.refused("u1", long_type, ConflictReason::Invalid);
    let empty_type =
        json!({"type":"node.add","node":{"id":"n2","type":"","position":{"x":0,"y":0}}});
    w.refused("u1", empty_type, ConflictReason::Invalid);
    let negative = json!({"type":"node.add","node":{"id":"n2","type":"t","position":{"x":0,"y":0},"size":{"w":-1,"h":1}}});
    w.refused("u1", negative, ConflictReason::Invalid);
    w.ok("u1", add_node("n2"));
    let c = w.refused("u1", add_node("n3"), ConflictReason::Invalid);
    assert!(c.message.contains("2 nodes"), "{}", c.message);
}

#[test]
fn node_update_merges_data_and_type() {
    let mut w = World::new();
    w.ok("u1", json!({"type":"node.add","node":{"id":"n1","type":"note","position":{"x":0,"y":0},"data":{"a":1,"b":{"c":2,"d":3}}}}));
    w.ok("u1", json!({"type":"node.update","id":"n1","patch":{"a":null,"b":{"c":null,"e":4},"f":[1]},"node_type":"llm"}));
    let n = w.canvas.node("n1").unwrap();
    assert_eq!(
        serde_json::Value::Object(n.data.clone()),
        json!({"b":{"d":3,"e":4},"f":[1]})
    );
    assert_eq!((n.kind.as_str(), n.version), ("llm", 2));
    w.refused(
        "u1",
        json!({"type":"node.update","id":"nope","patch":{}}),
        ConflictReason::NotFound,
    );
    w.refused(
        "u1",
        json!({"type":"node.update","id":"n1","patch":{"x":"y".repeat(70_000)}}),
        ConflictReason::Invalid,
    );
}

#[test]
fn node_move_and_resize() {
    let mut w = World::new();
    w.ok("u1", add_node("n1"));
    w.ok(
        "u1",
        json!({"type":"node.move","id":"n1","position":{"x":5.5,"y":-3.0}}),
    );
    w.ok(
        "u1",
        json!({"type":"node.resize","id":"n1","size":{"w":100.0,"h":50.0}}),
    );
    let n = w.canvas.node("n1").unwrap();
    assert_eq!(n.position, Position { x: 5.5, y: -3.0 });
    assert_eq!(n.size, Some(Size { w: 100.0, h: 50.0 }));
    assert_eq!(n.version, 3);
    w.refused(
        "u1",
        json!({"type":"node.move","id":"n9","position":{"x":0,"y":0}}),
        ConflictReason::NotFound,
    );
    w.refused(
        "u1",
        json!({"type":"node.resize","id":"n1","size":{"w":1,"h":-2}}),
        ConflictReason::Invalid,
    );
}

#[test]
fn node_delete_cascades_to_edges_first() {
    let mut w = World::new();
    for n in ["a", "b", "c"] {
        w.ok("u1", add_node(n));
    }
    w.ok("u1", add_edge("ab", "a", "b"));
    w.ok("u1", add_edge("bc", "b", "c"));
    w.ok("u1", add_edge("ac", "a", "c"));
    let e = w.ok("u1", json!({"type":"node.delete","id":"b"}));
    let kinds: Vec<String> = e
        .changes
        .iter()
        .map(|c| {
            serde_json::to_value(c).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["edge.delete", "edge.delete", "node.delete"]);
    assert!(w.canvas.node("b").is_none());
    assert_eq!(
        w.canvas.edges().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["ac"]
    );
    w.refused(
        "u1",
        json!({"type":"node.delete","id":"b"}),
        ConflictReason::NotFound,
    );
}

#[test]
fn edges_add_update_delete() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    w.ok("u1", add_node("b"));
    w.ok("u1", json!({"type":"edge.add","edge":{"id":"e1","source":"a","target":"b","source_handle":"out","data":{"w":1}}}));
    w.ok(
        "u1",
        json!({"type":"edge.update","id":"e1","patch":{"w":null,"label":"x"}}),
    );
    let e = w.canvas.edge("e1").unwrap();
    assert_eq!(
        serde_json::Value::Object(e.data.clone()),
        json!({"label":"x"})
    );
    assert_eq!((e.source_handle.as_deref(), e.version), (Some("out"), 4));
    let c = w.refused("u1", add_edge("e2", "a", "zz"), ConflictReason::NotFound);
    assert_eq!(c.entity.unwrap().id, "zz");
    w.refused("u1", add_edge("e1", "a", "b"), ConflictReason::Duplicate);
    w.refused(
        "u1",
        json!({"type":"edge.update","id":"e9","patch":{}}),
        ConflictReason::NotFound,
    );
    w.ok("u1", json!({"type":"edge.delete","id":"e1"}));
    w.refused(
        "u1",
        json!({"type":"edge.delete","id":"e1"}),
        ConflictReason::NotFound,
    );
    let e = w.ok(
        "u1",
        json!({"type":"edge.add","edge":{"source":"a","target":"a"}}),
    );
    assert!(matches!(&e.changes[0], Change::EdgeUpsert { edge } if edge.id.as_str() == "gen1"));
}

#[test]
fn edge_limit() {
    let mut w = World::with_limits(Limits {
        max_edges: 1,
        ..Limits::default()
    });
    w.ok("u1", add_node("a"));
    w.ok("u1", add_edge("e1", "a", "a"));
    w.refused("u1", add_edge("e2", "a", "a"), ConflictReason::Invalid);
}

#[test]
fn flow_update_renames_and_patches_meta() {
    let mut w = World::new();
    w.ok(
        "u1",
        json!({"type":"flow.update","name":"Renamed","meta_patch":{"tags":["x"],"owner":"me"}}),
    );
    w.ok(
        "u1",
        json!({"type":"flow.update","meta_patch":{"owner":null}}),
    );
    assert_eq!(w.canvas.name(), "Renamed");
    assert_eq!(
        serde_json::Value::Object(w.canvas.meta().clone()),
        json!({"tags":["x"]})
    );
    w.refused(
        "u1",
        json!({"type":"flow.update","name":""}),
        ConflictReason::Invalid,
    );
    // The flow itself is the entity: a stale base_version conflicts, a current one applies.
    w.refused(
        "u1",
        json!({"type":"flow.update","name":"Z","base_version":1}),
        ConflictReason::VersionMismatch,
    );
    w.ok(
        "u1",
        json!({"type":"flow.update","name":"Z","base_version":2}),
    );
}

#[test]
fn base_version_is_per_entity() {
    let mut w = World::new();
    w.ok("u1", add_node("a")); // v1
    w.ok("u1", add_node("b")); // v2
    w.ok(
        "u1",
        json!({"type":"node.move","id":"a","position":{"x":1,"y":1}}),
    ); // v3: a changes
    // Edits of a different node never conflict, even from an old base.
    w.ok(
        "u2",
        json!({"type":"node.move","id":"b","position":{"x":2,"y":2},"base_version":2}),
    );
    // a changed at v3, after base 2.
    let c = w.refused(
        "u2",
        json!({"type":"node.move","id":"a","position":{"x":9,"y":9},"base_version":2}),
        ConflictReason::VersionMismatch,
    );
    assert_eq!(c.entity.unwrap().version, Some(3));
    w.ok(
        "u2",
        json!({"type":"node.move","id":"a","position":{"x":9,"y":9},"base_version":3}),
    );
    // A base from the future is nonsense.
    w.refused(
        "u2",
        json!({"type":"node.delete","id":"a","base_version":99}),
        ConflictReason::Invalid,
    );
    // Without versions: last writer wins.
    w.ok(
        "u1",
        json!({"type":"node.move","id":"a","position":{"x":0,"y":0}}),
    );
    w.ok(
        "u2",
        json!({"type":"node.move","id":"a","position":{"x":7,"y":7}}),
    );
    assert_eq!(
        w.canvas.node("a").unwrap().position,
        Position { x: 7.0, y: 7.0 }
    );
}

#[test]
fn if_match_is_a_strict_whole_canvas_check() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    let r = w.send_with("u1", Some(0), vec![add_node("b"), add_node("c")]);
    assert!(r.entries.is_empty());
    let reasons: Vec<_> = r.refusals().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [
            ConflictReason::VersionMismatch,
            ConflictReason::VersionMismatch
        ]
    );
    let r = w.send_with("u1", Some(1), vec![add_node("b"), add_node("c")]);
    assert_eq!(r.entries.len(), 2);
    assert_eq!(w.canvas.version(), 3);
}

#[test]
fn batches_stop_at_the_first_refusal() {
    let mut w = World::new();
    let r = w.send("u1", vec![add_node("a"), add_node("a"), add_node("b")]);
    assert_eq!(r.entries.len(), 1);
    let reasons: Vec<_> = r.refusals().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [ConflictReason::Duplicate, ConflictReason::Skipped]
    );
    assert!(w.canvas.node("b").is_none());
    assert_eq!(w.canvas.version(), 1);
    assert!(matches!(r.outcomes[0], OpOutcome::Applied(0)));
}

#[test]
fn a_retried_op_id_is_not_applied_again() {
    let mut w = World::new();
    let first = w.send("u1", vec![json!({"op_id":"x1","type":"node.add","node":{"id":"a","type":"t","position":{"x":0,"y":0}}})]);
    assert_eq!(first.entries.len(), 1);
    let again = w.send(
        "u1",
        vec![
            json!({"op_id":"x1","type":"node.add","node":{"id":"a","type":"t","position":{"x":0,"y":0}}}),
            json!({"op_id":"x2","type":"node.move","id":"a","position":{"x":1,"y":1}}),
        ],
    );
    assert_eq!(again.outcomes[0], OpOutcome::AlreadyApplied);
    assert_eq!(again.outcomes[1], OpOutcome::Applied(0));
    assert_eq!(w.canvas.version(), 2);
}

#[test]
fn flows_round_trip_and_bad_flows_are_refused() {
    let mut w = World::new();
    w.ok("u1", add_node("a"));
    w.ok("u1", add_edge("e", "a", "a"));
    let t = "2026-01-01T00:00:00Z".parse().unwrap();
    let flow = w.canvas.to_flow(t, t);
    let back = Canvas::from_flow(flow.clone()).unwrap();
    assert_eq!(back, w.canvas);
    let mut dangling = flow.clone();
    dangling.nodes.clear();
    assert!(Canvas::from_flow(dangling).is_err());
    let mut dup = flow;
    dup.nodes.push(dup.nodes[0].clone());
    assert!(Canvas::from_flow(dup).is_err());
}

#[test]
fn oversized_requests_are_refused_whole() {
    let mut w = World::with_limits(Limits {
        max_ops_per_request: 2,
        ..Limits::default()
    });
    let r = w.send("u1", vec![add_node("a"), add_node("b"), add_node("c")]);
    assert!(r.entries.is_empty());
    assert!(
        r.refusals()
            .all(|c| c.reason == ConflictReason::Invalid && c.message.contains("limit is 2"))
    );
    assert_eq!(r.refusals().count(), 3);
    assert_eq!(
        w.send("u1", vec![add_node("a"), add_node("b")])
            .entries
            .len(),
        2
    );
}
