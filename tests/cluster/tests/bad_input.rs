//! Hostile requests to the running cluster, each answered with the documented status and
//! error code, and the flow unchanged afterwards.

use flowsync_cluster_tests::{Cluster, Shape, server_canvas, token, token_signed};
use flowsync_protocol::FlowId;
use reqwest::Method;
use serde_json::{Value, json};

/// One hostile request and the answer it must get.
struct Case {
    name: &'static str,
    method: Method,
    /// Path on the API (or the gateway, for `/events`).
    path: String,
    token: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, method: Method, path: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        token: None,
        headers: vec![],
        body: None,
        status,
        code,
    }
}

impl Case {
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }
    fn json(self, value: &Value) -> Self {
        self.body(serde_json::to_vec(value).unwrap())
    }
    fn token(mut self, token: String) -> Self {
        self.token = Some(token);
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

fn ops(ops: &Value) -> Value {
    json!({"client_id": "hostile", "ops": ops})
}

fn mv(op_id: &str) -> Value {
    json!({"op_id": op_id, "type": "node.move", "id": "n1", "position": {"x": 1, "y": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_their_documented_answers_and_change_nothing() {
    let _serial = flowsync_cluster_tests::serial().await;
    let cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 1,
            runners: 0,
        },
        &[],
    );
    let admin = cluster.client("admin", "user");
    let flow = FlowId::parse("target").unwrap();
    let other = FlowId::parse("other").unwrap();
    admin.create_flow(Some(&flow), "Target").await.unwrap();
    admin.create_flow(Some(&other), "Other").await.unwrap();
    let add = json!({"op_id": "add", "type": "node.add",
        "node": {"id": "n1", "type": "delay", "position": {"x": 0, "y": 0}}});
    let request = serde_json::from_value(ops(&json!([add]))).unwrap();
    admin.post_ops(&flow, &request, None).await.unwrap();
    let execution = admin.start_execution(&other).await.unwrap();
    let before = server_canvas(&admin, &flow).await;

    let writer = cluster.token("hostile", "agent");
    let reader = token("reader", "user", &["target"], "read", 3600);
    let elsewhere = token(
        "stranger",
        "user",
        &["other"],
        "read write execute publish",
        3600,
    );
    let expired = token("late", "user", &["*"], "read write", -120);
    let foreign = token_signed(
        "spy",
        "user",
        &["*"],
        "read write",
        3600,
        "another-issuers-secret-32-bytes!!",
    );
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let ten_thousand: Vec<Value> = (0..10_000).map(|i| mv(&format!("o{i}"))).collect();
    let o = "/v1/flows/target/ops";
    let post = Method::POST;
    let get = Method::GET;
    let cases = vec![
        case("malformed JSON", post.clone(), o, 400, "invalid_body").token(writer.clone()).body("{\"client_id\": \"c\", \"ops\": ["),
        case("not UTF-8", post.clone(), o, 400, "invalid_body").token(writer.clone()).body(b"{\"client_id\": \"\xff\xfe\", \"ops\": []}".to_vec()),
        case("deep nesting", post.clone(), o, 400, "invalid_body").token(writer.clone()).body(format!("{{\"client_id\": \"c\", \"ops\": {deep}}}")),
        case("wrong type", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([
            {"op_id": "w", "type": "node.move", "id": "n1", "position": {"x": "far", "y": 0}}]))),
        case("unknown op", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([
            {"op_id": "u", "type": "node.teleport", "id": "n1"}]))),
        case("unknown field", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([
            {"op_id": "f", "type": "node.move", "id": "n1", "position": {"x": 1, "y": 1}, "colour": "red"}]))),
        case("ops not an array", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&json!({"client_id": "c", "ops": {}})),
        case("invalid op id", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([mv(&"x".repeat(200))]))),
        case("unicode node id", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([
            {"op_id": "i", "type": "node.move", "id": "nöde\u{202e}", "position": {"x": 1, "y": 1}}]))),
        case("repeated op id", post.clone(), o, 400, "invalid_body").token(writer.clone()).json(&ops(&json!([mv("same"), mv("same")]))),
        case("10,000 ops", post.clone(), o, 413, "too_many_ops").token(writer.clone()).json(&ops(&json!(ten_thousand))),
        case("huge body", post.clone(), o, 413, "body_too_large").token(writer.clone()).body(vec![b' '; 3 << 20]),
        case("bad If-Match", post.clone(), o, 400, "invalid_if_match").token(writer.clone()).header("if-match", "yesterday").json(&ops(&json!([mv("im")]))),
        case("invalid flow id", post.clone(), "/v1/flows/..%2F..%2Fetc/ops", 400, "invalid_id").token(writer.clone()).json(&ops(&json!([mv("p")]))),
        case("flow id too long", get.clone(), &format!("/v1/flows/{}", "f".repeat(300)), 400, "invalid_id").token(writer.clone()),
        case("no token", post.clone(), o, 401, "unauthorized").json(&ops(&json!([mv("t1")]))),
        case("garbage token", post.clone(), o, 401, "unauthorized").token("not.a.jwt".into()).json(&ops(&json!([mv("t2")]))),
        case("expired token", post.clone(), o, 401, "token_expired").token(expired.clone()).json(&ops(&json!([mv("t3")]))),
        case("foreign token", post.clone(), o, 401, "unauthorized").token(foreign.clone()).json(&ops(&json!([mv("t4")]))),
        case("read-only token writes", post.clone(), o, 403, "forbidden").token(reader.clone()).json(&ops(&json!([mv("t5")]))),
        case("another flow's token", post.clone(), o, 403, "forbidden").token(elsewhere.clone()).json(&ops(&json!([mv("t6")]))),
        case("another flow's token reads", get.clone(), "/v1/flows/target/history", 403, "forbidden").token(elsewhere.clone()),
        case("another flow's execution", get.clone(), &format!("/v1/flows/target/executions/{execution}"), 404, "execution_not_found").token(writer.clone()),
        case("worker event into another flow's execution", post.clone(), &format!("/v1/flows/target/executions/{execution}/events"), 404, "execution_not_found").token(writer.clone()).json(&json!(
            {"type": "LOG_STREAM", "data": {"execution_id": execution, "node_id": "n1", "index": 0, "chunk": "x", "done": false}})),
        case("unknown flow", post.clone(), "/v1/flows/nowhere/ops", 404, "flow_not_found").token(writer.clone()).json(&ops(&json!([mv("nf")]))),
        case("stream: bad Last-Event-ID", get.clone(), "/v1/flows/target/events", 400, "invalid_last_event_id").token(writer.clone()).header("last-event-id", "garbage"),
        case("stream: Last-Event-ID without seq", get.clone(), "/v1/flows/target/events", 400, "invalid_last_event_id").token(writer.clone()).header("last-event-id", "abc-"),
        case("stream: Last-Event-ID huge", get.clone(), "/v1/flows/target/events", 400, "invalid_last_event_id").token(writer.clone()).header("last-event-id", format!("a-{}", "9".repeat(60))),
        case("stream: last_event_id query", get.clone(), "/v1/flows/target/events?last_event_id=%F0%9F%99%82-1", 400, "invalid_last_event_id").token(writer.clone()),
        case("stream: bad types", get.clone(), "/v1/flows/target/events?types=BOGUS", 400, "invalid_types").token(writer.clone()),
        case("stream: no token", get.clone(), "/v1/flows/target/events", 401, "unauthorized"),
        case("stream: expired token", get.clone(), "/v1/flows/target/events", 401, "token_expired").token(expired),
        case("stream: foreign token", get.clone(), "/v1/flows/target/events", 401, "unauthorized").token(foreign),
        case("stream: another flow's token", get.clone(), "/v1/flows/target/events", 403, "forbidden").token(elsewhere),
        case("stream: unknown flow", get.clone(), "/v1/flows/nowhere/events", 404, "flow_not_found").token(writer.clone()),
    ];

    let http = reqwest::Client::new();
    let mut wrong = vec![];
    for c in cases {
        let base = if c.path.contains("/events") && !c.path.contains("/executions/") {
            cluster.gateways[0].url()
        } else {
            cluster.apis[0].url()
        };
        let mut r = http.request(c.method, format!("{base}{}", c.path));
        if let Some(t) = &c.token {
            r = r.bearer_auth(t);
        }
        for (name, value) in &c.headers {
            r = r.header(*name, value);
        }
        if let Some(body) = c.body {
            r = r.header("content-type", "application/json").body(body);
        }
        let answer = r.send().await.unwrap();
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("<no error body>");
        if status != c.status || code != c.code {
            wrong.push(format!(
                "{}: got {status} {code}, want {} {} ({})",
                c.name, c.status, c.code, body["error"]["message"]
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let after = server_canvas(&admin, &flow).await;
    assert_eq!(after, before, "the flow is unchanged");
    assert_eq!(admin.history(&flow, 0, 100).await.unwrap().len(), 1);
}
