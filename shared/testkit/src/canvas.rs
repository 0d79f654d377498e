//! A flow's canvas for a test, as the request that builds it.

use serde_json::json;

/// The ops that build a flow's canvas for a test: a `node.add` per `(id, type, data)` (op
/// id `add-<id>`) and an `edge.add` per `(source, target)` (edge `e<i>`), in one request.
pub fn canvas_ops<N: AsRef<str>, E: AsRef<str>>(
    nodes: &[(N, &str, serde_json::Value)],
    edges: &[(E, E)],
) -> serde_json::Value {
    let mut ops = vec![];
    for (n, kind, data) in nodes {
        let n = n.as_ref();
        ops.push(json!({"op_id": format!("add-{n}"), "type": "node.add",
            "node": {"id": n, "type": kind, "position": {"x": 0, "y": 0}, "data": data}}));
    }
    for (i, (s, t)) in edges.iter().enumerate() {
        ops.push(json!({"op_id": format!("edge-{i}"), "type": "edge.add",
            "edge": {"id": format!("e{i}"), "source": s.as_ref(), "target": t.as_ref()}}));
    }
    json!({"client_id": "setup", "ops": ops})
}
