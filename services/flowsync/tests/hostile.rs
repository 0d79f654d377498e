//! Flows written to hurt, run by the one binary and watched as a browser would (HTTP for
//! intents, SSE for results): one flow's long run does not hold another's back, retries
//! end, outputs are bounded, and `http` nodes cannot reach inside the machine. What an
//! `http` node calls is the test kit's `HttpStub` (outside the product).

use std::time::Duration;

use eventsource_stream::Eventsource;
use flowsync::{Settings, System};
use flowsync_testkit::{HttpStub, StubReply};
use futures::StreamExt;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

type Events = std::pin::Pin<Box<dyn futures::Stream<Item = (String, Value)> + Send>>;

struct Binary {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Binary {
    async fn start(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_owned(),
            ..Settings::default()
        };
        configure(&mut settings);
        let system = System::build(settings).await.unwrap();
        let base = format!("http://127.0.0.1:{}", system.port());
        tokio::spawn(system.run_until_stopped());
        Self {
            base,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// A flow of these nodes (`[id, type, data]`), chained by `edges`, and its stream
    /// (opened before anything runs, past `READY`).
    async fn flow(
        &self,
        id: &str,
        nodes: &[(String, &str, Value)],
        edges: &[(String, String)],
    ) -> Events {
        let r = self
            .http
            .post(format!("{}/v1/flows", self.base))
            .json(&json!({"id": id, "name": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = self
            .http
            .post(format!("{}/v1/flows/{id}/ops", self.base))
            .json(&flowsync_testkit::canvas_ops(nodes, edges))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let r = self
            .http
            .get(format!("{}/v1/flows/{id}/events", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut events: Events = r
            .bytes_stream()
            .eventsource()
            .map(|e| {
                let e = e.unwrap();
                (e.event, with_id(&e.data, e.id))
            })
            .boxed();
        next(&mut events, |kind, _| kind == "READY").await;
        events
    }

    async fn start_execution(&self, flow: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/flows/{flow}/executions", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["execution_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn execution(&self, flow: &str, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/flows/{flow}/executions/{id}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs the flow's execution to its end (seen on the stream); its record.
    async fn run(&self, flow: &str, events: &mut Events) -> Value {
        let id = self.start_execution(flow).await;
        ended(events, &id).await;
        self.execution(flow, &id).await
    }
}

/// An event's JSON, with its SSE id as `_id`.
fn with_id(data: &str, id: String) -> Value {
    let mut value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("_id".into(), Value::String(id));
    }
    value
}

/// The next event `wanted` accepts (it sees every event before).
async fn next(events: &mut Events, mut wanted: impl FnMut(&str, &Value) -> bool) -> Value {
    loop {
        let (kind, data) = tokio::time::timeout(PATIENCE, events.next())
            .await
            .expect("an event in time")
            .expect("the stream is open");
        if wanted(&kind, &data) {
            return data;
        }
    }
}

/// Whether `e` is the execution's final `EXECUTION_UPDATE`.
fn is_end(kind: &str, e: &Value, execution: &str) -> bool {
    kind == "EXECUTION_UPDATE"
        && e["data"]["execution_id"] == execution
        && e["data"]["node_id"].is_null()
        && ["succeeded", "failed", "cancelled"]
            .contains(&e["data"]["status"].as_str().unwrap_or(""))
}

/// Waits for the execution's final `EXECUTION_UPDATE`.
async fn ended(events: &mut Events, execution: &str) -> Value {
    next(events, |kind, e| is_end(kind, e, execution)).await
}

fn node(id: &str, kind: &'static str, data: Value) -> (String, &'static str, Value) {
    (id.to_owned(), kind, data)
}

fn node_error(execution: &Value, node: &str) -> String {
    execution["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == node)
        .and_then(|n| n["error"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_of_one_flow_does_not_hold_another_flow_back() {
    let binary = Binary::start(|_| {}).await;
    let mut slow = binary
        .flow(
            "slow",
            &[node("wait", "delay", json!({"ms": 600_000}))],
            &[],
        )
        .await;
    let mut quick = binary
        .flow(
            "quick",
            &[node("t", "template", json!({"template": "done"}))],
            &[],
        )
        .await;
    let long = binary.start_execution("slow").await;
    next(&mut slow, |kind, e| {
        kind == "EXECUTION_UPDATE" && e["data"]["node_status"] == "running"
    })
    .await;
    // The one binary has one runner: before, the quick flow waited the whole delay.
    let done = binary.run("quick", &mut quick).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let still = binary.execution("slow", &long).await;
    assert_eq!(still["status"], "running", "{still}");
    let r = binary
        .http
        .post(format!(
            "{}/v1/flows/slow/executions/{long}/cancel",
            binary.base
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(ended(&mut slow, &long).await["data"]["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_capped_and_spaced() {
    let failing = HttpStub::start("127.0.0.1", StubReply::Status(500));
    let binary = Binary::start(|s| {
        s.runner.http_allow = vec!["127.0.0.1/32".parse().unwrap()];
        s.runner.max_retries = 3;
        s.runner.retry_backoff = Duration::from_millis(10);
    })
    .await;
    let mut events = binary
        .flow(
            "spin",
            &[node(
                "h",
                "http",
                json!({"url": failing.url, "retries": 1_000_000}),
            )],
            &[],
        )
        .await;
    let e = binary.run("spin", &mut events).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert!(node_error(&e, "h").contains("500"), "{e}");
    assert_eq!(
        failing.hits(),
        4,
        "one attempt and runner.max_retries retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_bounded_whatever_makes_them() {
    let streamed = HttpStub::start(
        "127.0.0.1",
        StubReply::Body {
            len: 48 << 20,
            content_length: false,
        },
    );
    let announced = HttpStub::start(
        "127.0.0.1",
        StubReply::Body {
            len: 48 << 20,
            content_length: true,
        },
    );
    let binary = Binary::start(|s| {
        s.runner.http_allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let nodes = [
        node("streamed", "http", json!({"url": streamed.url})),
        node("announced", "http", json!({"url": announced.url})),
    ];
    let mut events = binary.flow("big", &nodes, &[]).await;
    let id = binary.start_execution("big").await;
    let largest = largest_event_until_ended(&mut events, &id).await;
    let e = binary.execution("big", &id).await;
    for n in ["streamed", "announced"] {
        assert!(node_error(&e, n).contains("output_too_large"), "{n}: {e}");
    }
    assert!(largest < 64 << 10, "an event of {largest} bytes");

    // Each template doubles its input: thirty of them would need a terabyte.
    let mut nodes = vec![node("t0", "template", json!({"template": "x".repeat(64)}))];
    let mut edges = vec![];
    for i in 1..30 {
        let prev = format!("t{i}", i = i - 1);
        nodes.push(node(
            &format!("t{i}"),
            "template",
            json!({"template": format!("{{{{{prev}}}}}{{{{{prev}}}}}")}),
        ));
        edges.push((prev, format!("t{i}")));
    }
    let mut events = binary.flow("double", &nodes, &edges).await;
    let id = binary.start_execution("double").await;
    let largest = largest_event_until_ended(&mut events, &id).await;
    let e = binary.execution("double", &id).await;
    assert_eq!(e["status"], "failed");
    // 64 · 2^14 bytes is exactly runner.max_output_bytes (1 MiB): t15 is the first past.
    assert!(node_error(&e, "t14").is_empty(), "{e}");
    assert!(node_error(&e, "t15").contains("output_too_large"), "{e}");
    // Outputs up to runner.max_inline_output_bytes (64 KiB: t10's) travel inline, larger
    // ones (t14's whole megabyte is stored) by reference.
    assert!(largest < (64 << 10) + 1024, "an event of {largest} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_output_travels_by_reference() {
    let body = HttpStub::start(
        "127.0.0.1",
        StubReply::Body {
            len: 200 << 10,
            content_length: true,
        },
    );
    let binary = Binary::start(|s| {
        s.runner.http_allow = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut events = binary
        .flow("ref", &[node("h", "http", json!({"url": body.url}))], &[])
        .await;
    let id = binary.start_execution("ref").await;
    let update = next(&mut events, |kind, e| {
        kind == "EXECUTION_UPDATE"
            && e["data"]["node_id"] == "h"
            && e["data"]["node_status"] == "succeeded"
    })
    .await;
    assert_eq!(update["data"]["output_bytes"], 200 << 10, "{update}");
    assert_eq!(update["data"]["output"].as_str().unwrap().len(), 1024);
    ended(&mut events, &id).await;
    let whole = binary.execution("ref", &id).await;
    assert_eq!(
        whole["nodes"][0]["output"].as_str().unwrap().len(),
        200 << 10
    );
}

/// The size of the largest event until the execution ends.
async fn largest_event_until_ended(events: &mut Events, id: &str) -> usize {
    let mut largest = 0;
    next(events, |kind, e| {
        largest = largest.max(e.to_string().len());
        is_end(kind, e, id)
    })
    .await;
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_nodes_cannot_reach_inside_the_machine() {
    let inside = HttpStub::start("127.0.0.1", StubReply::Status(200));
    let port = inside.port;
    // An allowed server (the operator named 127.0.0.2) that redirects inside.
    let redirector = HttpStub::start(
        "127.0.0.2",
        StubReply::Redirect(format!("{}/x", inside.url)),
    );
    let binary = Binary::start(|s| {
        s.runner.http_allow = vec!["127.0.0.2/32".parse().unwrap()];
        // All at once: a failure stops new starts.
        s.runner.max_parallel = 16;
    })
    .await;
    let urls = [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        format!("http://169.254.169.254:{port}/latest/meta-data"),
        format!("http://10.0.0.1:{port}/"),
        format!("http://[fd00::1]:{port}/"),
        format!("{}/", redirector.url),
    ];
    let nodes: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| node(&format!("h{i}"), "http", json!({"url": url})))
        .collect();
    let mut events = binary.flow("ssrf", &nodes, &[]).await;
    let e = binary.run("ssrf", &mut events).await;
    assert_eq!(e["status"], "failed");
    for (i, url) in urls.iter().enumerate() {
        let error = node_error(&e, &format!("h{i}"));
        assert!(error.contains("forbidden_address"), "{url}: {error}");
    }
    assert_eq!(redirector.hits(), 1, "the allowed server was reached");
    assert_eq!(inside.hits(), 0, "nothing reached the loopback server");
}

/// Sends `head` (and no more) on a raw connection; the response's status line.
async fn answer_to(base: &str, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![];
    let mut chunk = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(PATIENCE, socket.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    text.lines().next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_bodies_are_answered_not_waited_for() {
    let binary = Binary::start(|s| {
        s.http.body_timeout = Duration::from_millis(300);
    })
    .await;
    let _events = binary.flow("bodies", &[], &[]).await;
    for path in [
        "/v1/flows",
        "/v1/flows/bodies/ops",
        "/v1/flows/bodies/presence",
    ] {
        // One byte of four thousand, then nothing: before, no answer for 90 s and more.
        let slow = answer_to(
            &binary.base,
            &format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: 4000\r\n\r\n{{"
            ),
        )
        .await;
        assert!(slow.contains(" 408 "), "{path}: {slow}");
        // A length past the limit is refused before a byte of the body is sent.
        let large = answer_to(
            &binary.base,
            &format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\n\r\n",
                64 << 20
            ),
        )
        .await;
        assert!(large.contains(" 413 "), "{path}: {large}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_at_its_cap_waits_while_other_flows_run() {
    let binary = Binary::start(|s| s.runner.max_executions_per_flow = 1).await;
    let mut busy = binary
        .flow(
            "busy",
            &[node("wait", "delay", json!({"ms": 600_000}))],
            &[],
        )
        .await;
    let mut other = binary
        .flow(
            "other",
            &[node("t", "template", json!({"template": "done"}))],
            &[],
        )
        .await;
    let first = binary.start_execution("busy").await;
    let running = |id: String| {
        move |kind: &str, e: &Value| {
            kind == "EXECUTION_UPDATE"
                && e["data"]["execution_id"] == id.as_str()
                && e["data"]["node_status"] == "running"
        }
    };
    next(&mut busy, running(first.clone())).await;
    let second = binary.start_execution("busy").await;
    let done = binary.run("other", &mut other).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let held = binary.execution("busy", &second).await;
    assert_eq!(held["status"], "queued", "the flow's cap holds it: {held}");
    // The first ends: the second runs.
    let cancel = format!("{}/v1/flows/busy/executions/{first}/cancel", binary.base);
    assert!(
        binary
            .http
            .post(cancel)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    next(&mut busy, running(second.clone())).await;
    let cancel = format!("{}/v1/flows/busy/executions/{second}/cancel", binary.base);
    assert!(
        binary
            .http
            .post(cancel)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    assert_eq!(
        ended(&mut busy, &second).await["data"]["status"],
        "cancelled"
    );
}

/// A stream of `flow` resuming after `last_event_id`.
async fn resume(binary: &Binary, flow: &str, last_event_id: &str) -> Events {
    let r = binary
        .http
        .get(format!("{}/v1/flows/{flow}/events", binary.base))
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status != 200 {
        panic!("{last_event_id}: {status} {}", r.text().await.unwrap());
    }
    r.bytes_stream()
        .eventsource()
        .map(|e| {
            let e = e.unwrap();
            (e.event, with_id(&e.data, e.id))
        })
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_flow_shares_nothing_with_its_old_life() {
    let binary = Binary::start(|_| {}).await;
    let post_op = |op_id: &'static str| {
        binary
            .http
            .post(format!("{}/v1/flows/life/ops", binary.base))
            .json(
                &json!({"client_id": "c", "ops": [{"op_id": op_id, "type": "node.add",
                "node": {"id": op_id, "type": "note", "position": {"x": 0, "y": 0}}}]}),
            )
            .send()
    };
    let mut old = binary.flow("life", &[], &[]).await;
    assert_eq!(post_op("old1").await.unwrap().status(), 202);
    let old_position = next(&mut old, |kind, _| kind == "SYNC_CANVAS").await["_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = binary
        .http
        .delete(format!("{}/v1/flows/life", binary.base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    next(&mut old, |kind, _| kind == "FLOW_DELETED").await;

    // Created again while a stream of the old life is still open: streams open at once.
    let r = binary
        .http
        .post(format!("{}/v1/flows", binary.base))
        .json(&json!({"id": "life", "name": "again"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut fresh = resume(&binary, "life", "0-0").await;
    next(&mut fresh, |kind, _| kind == "READY").await;
    assert_eq!(post_op("new1").await.unwrap().status(), 202);
    // (A `RESYNC` may come first: the hub that served the old life sees a new epoch.)
    let first = next(&mut fresh, |kind, _| {
        !["PRESENCE", "RESYNC"].contains(&kind)
    })
    .await;
    assert_eq!(first["data"]["ops"][0]["op_id"], "new1", "{first}");

    // Resuming from the old life's position crosses into nothing of it.
    let mut stale = resume(&binary, "life", &old_position).await;
    let ready = next(&mut stale, |kind, _| kind == "READY").await;
    let then = next(&mut stale, |kind, _| kind != "PRESENCE").await;
    assert!(
        ready["data"]["resumed"] == false || then["type"] == "RESYNC",
        "{old_position}: {ready} then {then}"
    );
    assert_ne!(then["data"]["ops"][0]["op_id"], "old1", "{then}");
    // From the start of whatever life exists now: the new one only.
    let mut start = resume(&binary, "life", "0-0").await;
    next(&mut start, |kind, _| kind == "READY").await;
    let replayed = next(&mut start, |kind, _| kind != "PRESENCE").await;
    assert_eq!(replayed["type"], "SYNC_CANVAS", "{replayed}");
    assert_eq!(replayed["data"]["ops"][0]["op_id"], "new1", "{replayed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_a_url_would_rewrite_are_refused() {
    let binary = Binary::start(|_| {}).await;
    for id in [".", ".."] {
        let r = binary
            .http
            .post(format!("{}/v1/flows", binary.base))
            .json(&json!({"id": id, "name": "dots"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{id}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_body", "{id}: {body}");
    }
    // Raw: a URL library would resolve `%2E%2E` away before sending.
    let answer = answer_to(
        &binary.base,
        "GET /v1/flows/%2E%2E/events HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert!(answer.contains(" 400 "), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_cannot_grow_the_metrics_label_sets() {
    let binary = Binary::start(|_| {}).await;
    for i in 0..20 {
        let answer = answer_to(
            &binary.base,
            &format!("METHOD{i} /v1/flows HTTP/1.1\r\nhost: x\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        let path = format!("/made/up/path/{i}");
        let r = binary
            .http
            .get(format!("{}{path}", binary.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let metrics = binary
        .http
        .get(format!("{}/metrics", binary.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("METHOD"), "{metrics}");
    assert!(!metrics.contains("made/up"), "{metrics}");
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_strings_answer_the_json_error_body() {
    let binary = Binary::start(|_| {}).await;
    let _events = binary.flow("q", &[], &[]).await;
    for path in [
        "/v1/flows?limit=many",
        "/v1/flows/q?at=-1",
        "/v1/flows/q/history?after=x",
        "/v1/flows/q/executions?limit=99999999999999999999999",
    ] {
        let r = binary
            .http
            .get(format!("{}{path}", binary.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.expect("a JSON body");
        assert_eq!(body["error"]["code"], "invalid_query", "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_nested_deeper_than_clients_parse_is_refused() {
    let binary = Binary::start(|_| {}).await;
    let nested = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    };
    let r = binary
        .http
        .post(format!("{}/v1/flows", binary.base))
        .json(&json!({"id": "deepmeta", "name": "d", "meta": nested(40)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let mut events = binary.flow("deep", &[], &[]).await;
    let op = |op_id: &str, levels: usize| {
        json!({"client_id": "c", "ops": [{"op_id": op_id, "type": "node.add",
            "node": {"id": op_id, "type": "note", "position": {"x": 0, "y": 0},
                     "data": {"x": nested(levels)}}}]})
    };
    for (op_id, levels) in [("too_deep", 40), ("fine", 20)] {
        let r = binary
            .http
            .post(format!("{}/v1/flows/deep/ops", binary.base))
            .json(&op(op_id, levels))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let refused = next(&mut events, |kind, _| kind == "CONFLICT").await;
    assert_eq!(refused["data"]["op_id"], "too_deep", "{refused}");
    assert!(
        refused["data"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("levels deep"),
        "{refused}"
    );
    let applied = next(&mut events, |kind, _| kind == "SYNC_CANVAS").await;
    assert_eq!(applied["data"]["ops"][0]["op_id"], "fine");
}
