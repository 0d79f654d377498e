//! Request parsing: every op type round-trips, and every error names the field path.

use flowsync_protocol::ops::{NodeMove, TextReplace};
use flowsync_protocol::*;
use serde_json::{Value, json};

fn parse(body: &Value) -> Result<OpsRequest, ParseError> {
    OpsRequest::from_slice(body.to_string().as_bytes())
}

fn err(body: &Value) -> String {
    parse(body).unwrap_err().to_string()
}

/// One valid op of every type.
fn every_op() -> Vec<Value> {
    vec![
        json!({"op_id":"o1","type":"node.add","node":{"id":"n1","type":"llm","position":{"x":1.0,"y":2.5},"data":{"prompt":"hi"}}}),
        json!({"op_id":"o2","type":"node.add","base_version":3,"node":{"type":"note","position":{"x":0.0,"y":0.0},"size":{"w":10.0,"h":5.0},"data":{}}}),
        json!({"op_id":"o3","type":"node.update","id":"n1","patch":{"prompt":null,"k":[1,2]},"type2":null}),
        json!({"op_id":"o4","type":"node.move","id":"n1","position":{"x":3.0,"y":4.0}}),
        json!({"op_id":"o5","type":"node.resize","id":"n1","size":{"w":3.0,"h":4.0}}),
        json!({"op_id":"o6","type":"node.delete","id":"n1"}),
        json!({"op_id":"o7","type":"edge.add","edge":{"source":"a","target":"b","source_handle":"out","data":{}}}),
        json!({"op_id":"o8","type":"edge.update","id":"e1","patch":{"label":"x"}}),
        json!({"op_id":"o9","type":"edge.delete","id":"e1"}),
        json!({"op_id":"o10","type":"flow.update","name":"New","meta_patch":{"tags":["a"]}}),
        json!({"op_id":"o11","type":"text.append","id":"n1","path":"/body","text":"tok"}),
        json!({"op_id":"o12","type":"text.insert","id":"n1","path":"/body","at":3,"text":"x"}),
        json!({"op_id":"o13","type":"text.delete","id":"n1","path":"/a~1b/0","at":1,"len":2}),
        json!({"op_id":"o14","type":"text.replace","id":"n1","path":"/body","target":{"range":[1,2]},"text":"y"}),
        json!({"op_id":"o15","type":"text.replace","id":"n1","path":"/body","target":{"regex":"a+","all":true},"text":"y"}),
        json!({"op_id":"o16","type":"text.replace","id":"n1","path":"/body","target":{"heading":"Plan"},"text":"y"}),
        json!({"op_id":"o17","type":"undo","version":4}),
        json!({"op_id":"o18","type":"undo"}),
        json!({"op_id":"o19","type":"redo"}),
    ]
}

#[test]
fn every_op_type_parses_and_round_trips() {
    let mut ops = every_op();
    // o3 carries an unknown field on purpose; drop it for the valid set.
    ops[2].as_object_mut().unwrap().remove("type2");
    let req = parse(&json!({"client_id":"tab-1","ops":ops})).unwrap();
    assert_eq!(req.ops.len(), 19);
    let covered: std::collections::BTreeSet<_> = req.ops.iter().map(|op| op.type_name()).collect();
    assert_eq!(
        covered.len(),
        OpKind::TYPES.len(),
        "every op type is exercised"
    );
    for (op, sent) in req.ops.iter().zip(&ops) {
        let back = serde_json::to_value(op).unwrap();
        assert_eq!(&back, sent, "round trip of {}", op.type_name());
        let again: Op = serde_json::from_value(back).unwrap();
        assert_eq!(&again, op);
    }
    assert_eq!(req.ops[1].base_version, Some(3));
    assert!(matches!(
        &req.ops[3].kind,
        OpKind::NodeMove(NodeMove { position: Position { x, y }, .. }) if *x == 3.0 && *y == 4.0
    ));
    assert!(matches!(
        &req.ops[14].kind,
        OpKind::TextReplace(TextReplace {
            target: TextTarget::Regex { all: true, .. },
            ..
        })
    ));
}

#[test]
fn errors_name_the_field_path() {
    let cases = [
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"node.teleport","id":"n"}]}),
            "ops[0].type: unknown op type \"node.teleport\"",
        ),
        (
            json!({"client_id":"c","ops":[every_op()[2].clone()]}),
            "ops[0].type2: unknown field `type2`",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"node.move","id":"n","position":{"x":"1","y":2}}]}),
            "ops[0].position.x: invalid type: string \"1\", expected f64",
        ),
        (
            json!({"client_id":"c","ops":[every_op()[3].clone(), {"op_id":"b","type":"node.add","node":{"type":"t","position":{"x":1,"y":2},"colour":1}}]}),
            "ops[1].node.colour: unknown field `colour`",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"node.delete"}]}),
            "ops[0]: missing field `id`",
        ),
        (
            json!({"client_id":"c","ops":[{"type":"node.delete","id":"n"}]}),
            "ops[0].op_id: missing field",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a b","type":"node.delete","id":"n"}]}),
            "ops[0].op_id: contains ' '",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"node.delete","id":"n/1"}]}),
            "ops[0].id: contains '/'",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"node.delete","id":"n","base_version":-1}]}),
            "ops[0].base_version: invalid value: integer `-1`",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":7}]}),
            "ops[0].type: expected a string",
        ),
        (
            json!({"client_id":"c","ops":[[1]]}),
            "ops[0]: expected an object, found an array",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"text.append","id":"n","path":"body","text":"x"}]}),
            "ops[0].path: a JSON pointer",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"text.replace","id":"n","path":"/b","text":"x","target":{"range":[1,2],"heading":"h"}}]}),
            "ops[0].target: expected exactly one of",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"text.replace","id":"n","path":"/b","text":"x","target":{"range":[1,2],"all":true}}]}),
            "ops[0].target: `all` goes only with `regex`",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"redo","version":1}]}),
            "ops[0].version: unknown field `version`",
        ),
        (
            json!({"client_id":"c","ops":[{"op_id":"a","type":"redo"},{"op_id":"a","type":"redo"}]}),
            "ops[1].op_id: op_id a is repeated",
        ),
        (json!({"client_id":"c","ops":{}}), "ops: expected an array"),
        (json!({"ops":[]}), "client_id: missing field"),
        (
            json!({"client_id":"c","ops":[],"extra":1}),
            "extra: unknown field",
        ),
        (json!([]), "expected an object, found an array"),
    ];
    for (body, want) in cases {
        let got = err(&body);
        assert!(
            got.starts_with(want),
            "body {body}\n got: {got}\nwant: {want}…"
        );
    }
}

#[test]
fn malformed_and_deeply_nested_json_is_refused() {
    let e = OpsRequest::from_slice(b"{\"client_id\": ").unwrap_err();
    assert!(e.message.starts_with("malformed JSON"), "{e}");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let e = OpsRequest::from_slice(deep.as_bytes()).unwrap_err();
    assert!(e.message.contains("recursion limit"), "{e}");
}

#[test]
fn events_have_the_documented_shape() {
    let event = Event {
        body: EventBody::SyncCanvas(SyncCanvas {
            prev_version: 4,
            version: 5,
            client_id: ClientId::parse("tab-1").unwrap(),
            ops: vec![AppliedOp {
                op_id: OpId::parse("o1").unwrap(),
                kind: "node.delete".into(),
                version: 5,
                changes: vec![Change::NodeDelete {
                    id: NodeId::parse("n1").unwrap(),
                }],
            }],
        }),
        flow_id: FlowId::parse("f1").unwrap(),
        seq: Some(9),
        ts: "2026-01-02T03:04:05Z".parse().unwrap(),
        actor: Actor {
            id: ActorId::parse("u1").unwrap(),
            kind: ActorKind::Agent,
            name: "Bot".into(),
        },
        traceparent: None,
    };
    let v = serde_json::to_value(&event).unwrap();
    assert_eq!(
        v,
        json!({
            "type": "SYNC_CANVAS", "flow_id": "f1", "seq": 9, "ts": "2026-01-02T03:04:05Z",
            "actor": {"id": "u1", "kind": "agent", "name": "Bot"},
            "data": {"prev_version": 4, "version": 5, "client_id": "tab-1",
                     "ops": [{"op_id": "o1", "type": "node.delete", "version": 5,
                              "changes": [{"kind": "node.delete", "id": "n1"}]}]}
        })
    );
    let back: Event = serde_json::from_value(v).unwrap();
    assert_eq!(back, event);

    let deleted = Event {
        body: EventBody::FlowDeleted(FlowDeleted {}),
        seq: None,
        traceparent: None,
        ..event
    };
    let v = serde_json::to_value(&deleted).unwrap();
    assert_eq!(v["data"], json!({}));
    assert!(v.get("seq").is_none());
    assert_eq!(deleted.event_type(), EventType::FlowDeleted);
}

#[test]
fn events_parse_whatever_the_order_of_their_keys() {
    let text = r#"{"type":"SYNC_CANVAS","flow_id":"f1","seq":9,"ts":"2026-01-02T03:04:05Z",
        "actor":{"id":"u1","kind":"agent","name":"Bot"},"traceparent":"00-x",
        "data":{"prev_version":4,"version":5,"client_id":"tab-1","ops":[]}}"#;
    let event: Event = serde_json::from_str(text).unwrap();
    assert_eq!(event.event_type(), EventType::SyncCanvas);
    assert_eq!(
        (event.seq, event.traceparent.as_deref()),
        (Some(9), Some("00-x"))
    );
    assert!(matches!(&event.body, EventBody::SyncCanvas(s) if s.version == 5));
    // Serialised again and read back, as the SDK reads an SSE `data:` line.
    let again: Event = serde_json::from_str(&serde_json::to_string(&event).unwrap()).unwrap();
    assert_eq!(again, event);

    // `data` before `type` (not what flowsync writes, but JSON keys have no order), keys
    // it does not know, an event without `seq`.
    let mut reordered: serde_json::Map<String, Value> = serde_json::Map::new();
    let value = serde_json::to_value(&event).unwrap();
    reordered.insert("future_field".into(), json!({"a": [1]}));
    reordered.insert("data".into(), value["data"].clone());
    for (k, v) in value.as_object().unwrap() {
        if k != "data" && k != "seq" {
            reordered.insert(k.clone(), v.clone());
        }
    }
    let text = serde_json::to_string(&reordered).unwrap();
    assert!(text.find("\"data\"").unwrap() < text.find("\"type\"").unwrap());
    let back: Event = serde_json::from_str(&text).unwrap();
    assert_eq!(back, Event { seq: None, ..event });

    for (bad, says) in [
        (r#"{"type":"NOPE","data":{}}"#, "unknown event type"),
        (r#"{"flow_id":"f1","data":{}}"#, "missing field `type`"),
        (
            r#"{"type":"FLOW_DELETED","flow_id":"f1"}"#,
            "missing field `data`",
        ),
        (
            r#"{"type":"SYNC_CANVAS","data":{"version":"x"}}"#,
            "invalid type",
        ),
    ] {
        let e = serde_json::from_str::<Event>(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn every_kind_of_change_parses_whatever_the_order_of_its_keys() {
    let changes = [
        json!({"kind": "node.upsert", "node": {"id": "n1", "type": "note",
            "position": {"x": 1.0, "y": 2.0}, "data": {"t": "x"}, "version": 3}}),
        json!({"kind": "node.delete", "id": "n1"}),
        json!({"kind": "edge.upsert", "edge": {"id": "e1", "source": "n1", "target": "n2",
            "data": {}, "version": 4}}),
        json!({"kind": "edge.delete", "id": "e1"}),
        json!({"kind": "flow.update", "name": "New", "meta": {"tags": ["a"]}}),
        json!({"kind": "node.splice", "id": "n1", "path": "/body", "at": 2, "delete": 1,
            "insert": "yo", "version": 5}),
    ];
    for value in changes {
        let text = value.to_string();
        let change: Change = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&change).unwrap(), value, "{text}");
        // `kind` last, and a key no change has.
        let mut fields = value.as_object().unwrap().clone();
        let kind = fields.remove("kind").unwrap();
        let rest = serde_json::to_string(&fields).unwrap();
        let reordered = format!(
            r#"{{"later":[1],{},"kind":{kind}}}"#,
            &rest[1..rest.len() - 1]
        );
        let back: Change = serde_json::from_str(&reordered).unwrap();
        assert_eq!(back, change, "{reordered}");
    }
    for (bad, says) in [
        (
            r#"{"kind":"node.exploded","id":"n1"}"#,
            "unknown variant `node.exploded`",
        ),
        (r#"{"id":"n1"}"#, "missing field `kind`"),
        (r#"{"kind":"node.delete"}"#, "missing field `id`"),
        (
            r#"{"kind":"node.splice","id":"n1","path":"/b","at":0,"delete":0,"version":1}"#,
            "missing field `insert`",
        ),
        (r#"{"kind":"node.delete","id":""}"#, "empty"),
    ] {
        let e = serde_json::from_str::<Change>(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn error_body_has_the_documented_shape() {
    let v = serde_json::to_value(ErrorBody::new("not_found", "no flow f1")).unwrap();
    assert_eq!(
        v,
        json!({"error": {"code": "not_found", "message": "no flow f1", "details": {}}})
    );
}

#[test]
fn field_path_tokens_unescape() {
    let p = FieldPath::parse("/a~1b/c~0d/0").unwrap();
    assert_eq!(p.tokens().collect::<Vec<_>>(), ["a/b", "c~d", "0"]);
    assert!(FieldPath::parse("/a~2").is_err());
    assert!(FieldPath::parse("/a~").is_err());
    assert!(FieldPath::parse("").is_err());
}
