//! Property tests over random op sequences:
//! (a) inverses applied in reverse order restore the canvas exactly;
//! (b) a replica applying only the emitted changes with the dumb reducer equals the server,
//!     order included, for every op type;
//! (c) a batch never leaves a half-applied op: the canvas after it is the canvas before it
//!     plus exactly the changes of the ops reported applied.

use flowsync_canvas::{Canvas, OpOutcome};
use flowsync_protocol::{Flow, OpKind};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::*;

fn node_id() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("n{i}"))
}

fn edge_id() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("e{i}"))
}

/// Short texts with the characters that make offsets interesting.
fn text() -> impl Strategy<Value = String> {
    "[ab👍é\u{301}\n#]{0,6}"
}

fn path() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["/text", "/text", "/o/t", "/num"])
}

fn base() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.3, 0..15u64)
}

fn small() -> impl Strategy<Value = f64> {
    (-50i32..50).prop_map(f64::from)
}

/// One random op of any type, as JSON (op_id added by the harness).
fn any_op() -> impl Strategy<Value = Value> {
    let data = prop::collection::btree_map(
        "[a-c]",
        prop_oneof![
            Just(Value::Null),
            any::<u8>().prop_map(Value::from),
            text().prop_map(Value::from)
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    prop_oneof![
        3 => (node_id(), text(), data.clone()).prop_map(|(id, t, d)| json!({"type":"node.add","node":{"id":id,"type":"note","position":{"x":0,"y":0},"data":{"text":t,"o":{},"num":1,"d":d}}})),
        1 => Just(json!({"type":"node.add","node":{"type":"note","position":{"x":1,"y":1}}})),
        2 => (node_id(), data.clone(), prop::option::of("[xy]")).prop_map(|(id, p, t)| {
            let mut v = json!({"type":"node.update","id":id,"patch":p});
            if let Some(t) = t { v["node_type"] = t.into(); }
            v
        }),
        2 => (node_id(), small(), small()).prop_map(|(id, x, y)| json!({"type":"node.move","id":id,"position":{"x":x,"y":y}})),
        1 => (node_id(), 0..9u8, 0..9u8).prop_map(|(id, w, h)| json!({"type":"node.resize","id":id,"size":{"w":w,"h":h}})),
        1 => node_id().prop_map(|id| json!({"type":"node.delete","id":id})),
        3 => (edge_id(), node_id(), node_id()).prop_map(|(id, s, t)| json!({"type":"edge.add","edge":{"id":id,"source":s,"target":t}})),
        1 => (edge_id(), data.clone()).prop_map(|(id, p)| json!({"type":"edge.update","id":id,"patch":p})),
        1 => edge_id().prop_map(|id| json!({"type":"edge.delete","id":id})),
        1 => (prop::option::of("[A-Z]{1,3}"), prop::option::of(data)).prop_map(|(n, m)| {
            let mut v = json!({"type":"flow.update"});
            if let Some(n) = n { v["name"] = n.into(); }
            if let Some(m) = m { v["meta_patch"] = m; }
            v
        }),
        3 => (node_id(), path(), text()).prop_map(|(id, p, t)| json!({"type":"text.append","id":id,"path":p,"text":t})),
        2 => (node_id(), path(), 0..8u64, text()).prop_map(|(id, p, at, t)| json!({"type":"text.insert","id":id,"path":p,"at":at,"text":t})),
        2 => (node_id(), path(), 0..8u64, 0..4u64).prop_map(|(id, p, at, len)| json!({"type":"text.delete","id":id,"path":p,"at":at,"len":len})),
        1 => (node_id(), path(), 0..8u64, 0..4u64, text()).prop_map(|(id, p, at, len, t)| json!({"type":"text.replace","id":id,"path":p,"target":{"range":[at,len]},"text":t})),
        1 => (node_id(), path(), prop::sample::select(vec!["a+", "👍", "^.", "b$", "x*"]), any::<bool>(), text()).prop_map(|(id, p, re, all, t)| json!({"type":"text.replace","id":id,"path":p,"target":{"regex":re,"all":all},"text":t})),
        1 => (node_id(), path(), text()).prop_map(|(id, p, t)| json!({"type":"text.replace","id":id,"path":p,"target":{"heading":"a"},"text":t})),
        1 => prop::option::of(1..20u64).prop_map(|v| match v { Some(v) => json!({"type":"undo","version":v}), None => json!({"type":"undo"}) }),
        1 => Just(json!({"type":"redo"})),
    ]
    .prop_flat_map(|op| (Just(op), base()))
    .prop_map(|(mut op, base)| {
        if let Some(b) = base {
            op["base_version"] = b.into();
        }
        op
    })
}

fn who() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["u1", "u2", "agent"])
}

fn ordered(c: &Canvas) -> Flow {
    let t = "2026-01-01T00:00:00Z".parse().unwrap();
    c.to_flow(t, t)
}

/// A canvas with some of everything, so random ops find targets.
fn seeded() -> World {
    let mut w = World::new();
    for n in ["n0", "n1", "n2"] {
        w.ok("u1", json!({"type":"node.add","node":{"id":n,"type":"note","position":{"x":0,"y":0},"data":{"text":"a👍b\n# a\nx","o":{},"num":1}}}));
    }
    w.ok("u1", add_edge("e0", "n0", "n1"));
    w.ok("u1", add_edge("e1", "n1", "n2"));
    w
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_inverses_in_reverse_restore_the_canvas(ops in prop::collection::vec((who(), any_op()), 1..40)) {
        let mut w = seeded();
        let start = w.canvas.clone();
        let mut entries = vec![];
        for (who, op) in ops {
            entries.extend(w.send(who, vec![op]).entries);
        }
        for entry in entries.iter().rev() {
            w.canvas.apply_applied(entry.version - 1, &entry.inverse).unwrap();
        }
        prop_assert_eq!(&w.canvas, &start);
    }

    #[test]
    fn b_the_dumb_reducer_equals_the_server(ops in prop::collection::vec((who(), any_op()), 1..40)) {
        let mut w = seeded();
        let mut replica = w.canvas.clone();
        for (who, op) in ops {
            for entry in w.send(who, vec![op]).entries {
                // A client sees only the wire form: round-trip the changes through JSON.
                let wire: Vec<flowsync_protocol::Change> =
                    serde_json::from_value(serde_json::to_value(&entry.changes).unwrap()).unwrap();
                replica.apply_applied(entry.version, &wire).unwrap();
                prop_assert_eq!(ordered(&replica), ordered(&w.canvas), "after {}", entry.op.type_name());
            }
        }
    }

    #[test]
    fn c_batches_never_half_apply(batches in prop::collection::vec((who(), prop::collection::vec(any_op(), 1..6)), 1..12)) {
        let mut w = seeded();
        for (who, ops) in batches {
            let before = w.canvas.clone();
            let r = w.send(who, ops);
            let mut replay = before;
            for e in &r.entries {
                prop_assert_eq!(e.version, replay.version() + 1, "versions are contiguous");
                replay.apply_applied(e.version, &e.changes).unwrap();
            }
            prop_assert_eq!(ordered(&replay), ordered(&w.canvas));
            // Once an op is refused, nothing after it applies.
            let first_refusal = r.outcomes.iter().position(|o| matches!(o, OpOutcome::Refused(_)));
            if let Some(i) = first_refusal {
                prop_assert!(r.outcomes[i..].iter().all(|o| matches!(o, OpOutcome::Refused(_))));
            }
            let applied = r.outcomes.iter().filter(|o| matches!(o, OpOutcome::Applied(_))).count();
            prop_assert_eq!(applied, r.entries.len());
        }
    }

    #[test]
    fn text_ops_and_their_inverses_restore_the_text(
        start in "[ab👍é\u{301}\n]{0,12}",
        ops in prop::collection::vec(prop_oneof![
            text().prop_map(|t| json!({"type":"text.append","id":"n","path":"/text","text":t})),
            (0..14u64, text()).prop_map(|(at, t)| json!({"type":"text.insert","id":"n","path":"/text","at":at,"text":t})),
            (0..14u64, 0..5u64).prop_map(|(at, len)| json!({"type":"text.delete","id":"n","path":"/text","at":at,"len":len})),
            (0..14u64, 0..5u64, text()).prop_map(|(at, len, t)| json!({"type":"text.replace","id":"n","path":"/text","target":{"range":[at,len]},"text":t})),
        ], 1..30),
    ) {
        let mut w = World::new();
        w.ok("u1", json!({"type":"node.add","node":{"id":"n","type":"note","position":{"x":0,"y":0},"data":{"text":start}}}));
        let mut mirror: Vec<u16> = start.encode_utf16().collect();
        let mut entries = vec![];
        for op in ops {
            for e in w.send("agent", vec![op]).entries {
                // Splices on a JavaScript-like UTF-16 string give the server's text.
                for change in &e.changes {
                    if let flowsync_protocol::Change::NodeSplice { at, delete, insert, .. } = change {
                        let at = *at as usize;
                        mirror.splice(at..at + *delete as usize, insert.encode_utf16());
                    }
                }
                prop_assert_eq!(String::from_utf16(&mirror).unwrap(), w.canvas.node("n").unwrap().data["text"].as_str().unwrap());
                entries.push(e);
            }
        }
        for e in entries.iter().rev() {
            w.canvas.apply_applied(e.version - 1, &e.inverse).unwrap();
        }
        prop_assert_eq!(w.canvas.node("n").unwrap().data["text"].as_str().unwrap(), start.as_str());
    }
}

#[test]
fn the_generator_covers_every_op_type() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2_000 {
        let v = any_op().new_tree(&mut runner).unwrap().current();
        seen.insert(
            op(json!({"op_id":"x"})
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .chain(v.as_object().unwrap().clone())
                .collect::<serde_json::Map<_, _>>()
                .into())
            .type_name(),
        );
    }
    assert_eq!(seen.len(), OpKind::TYPES.len(), "{seen:?}");
}
