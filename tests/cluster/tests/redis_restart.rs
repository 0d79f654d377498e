//! Redis restarts under a running cluster, observed by plain SSE readers — a socket and a
//! parser, no reconnect, no watchdog, none of the Rust client's recovery — on both
//! gateways. After each restart every open reader either receives every later event with
//! no gap, or a `RESYNC` (before any new event is published: the gateway checks each
//! followed flow as soon as its subscriber is back, and does not wait for traffic). A new
//! execution runs to the end, and no endpoint answers `503` once Redis has been back for
//! 2 s. Twenty restarts, alternately losing Redis's data and keeping it (AOF).

use std::time::Duration;

use flowsync_cluster_tests::{Cluster, PATIENCE, Read as Seen, Shape, plain_reader as reader};
use flowsync_protocol::{ClientId, FlowId, Op, OpsRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The next event of a reader that is not a heartbeat or presence.
async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    flowsync_cluster_tests::next_seen(rx).await
}

/// POSTs until the API accepts (`202`, its body returned): only `503` may come before,
/// while its connections recover from the restart; a client retries shortly.
async fn accepted<F, Fut>(post: &F, path: String, body: Value, round: usize) -> Value
where
    F: Fn(String, Value) -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = post(path.clone(), body.clone()).await.unwrap();
        let status = r.status();
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        if status == 202 {
            return answer;
        }
        assert_eq!(status, 503, "round {round}: {path}: {answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "round {round}: no 202 after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The final status of the execution `started` names, as the reader sees it announced.
async fn ended(rx: &mut mpsc::UnboundedReceiver<Seen>, started: &Value) -> String {
    let id = started["execution_id"].as_str().expect("an execution id");
    loop {
        let (kind, _, e) = next(rx).await;
        let status = e["data"]["status"].as_str().unwrap_or_default();
        if kind == "EXECUTION_UPDATE"
            && e["data"]["execution_id"] == id
            && e["data"]["node_id"].is_null()
            && ["succeeded", "failed", "cancelled"].contains(&status)
        {
            return status.to_owned();
        }
    }
}

fn add(op_id: &str) -> OpsRequest {
    OpsRequest {
        client_id: ClientId::parse("writer").unwrap(),
        ops: vec![
            Op::from_value(json!({"op_id": op_id, "type": "node.add",
            "node": {"id": op_id, "type": "note", "position": {"x": 0, "y": 0}}}))
            .unwrap(),
        ],
    }
}

/// `(epoch, seq)` of an SSE id.
fn position(id: &str) -> (String, u64) {
    let (epoch, seq) = id.split_once('-').expect("an epoch-seq id");
    (epoch.to_owned(), seq.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_nothing_silently_to_plain_readers() {
    let _serial = flowsync_cluster_tests::serial().await;
    let data = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with_redis(
        Shape {
            apis: 1,
            gateways: 2,
            runners: 1,
        },
        &[("FLOWSYNC_RUNNER__POLL", "1")],
        flowsync_testkit::RedisServer::start_persistent(data.path()),
    );
    let http = reqwest::Client::new();
    let api = cluster.apis[0].url();
    let token = cluster.token("tester", "user");
    let post = |path: String, body: Value| {
        http.post(format!("{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let mut slowest_resync = Duration::ZERO;
    for round in 0..20 {
        let lose = round % 2 == 0;
        let flow = FlowId::parse(format!("restart{round}")).unwrap();
        let r = post("/v1/flows".into(), json!({"id": flow, "name": "r"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        for i in 0..3 {
            let r = post(
                format!("/v1/flows/{flow}/ops"),
                json!(add(&format!("before{i}"))),
            )
            .await
            .unwrap();
            assert_eq!(r.status(), 202);
        }
        // Two plain readers on each gateway, at the flow's head.
        let mut readers = vec![];
        for gateway in &cluster.gateways {
            for _ in 0..2 {
                let mut rx = reader(
                    format!("{}/v1/flows/{flow}/events", gateway.url()),
                    token.clone(),
                )
                .await;
                let (kind, _, ready) = next(&mut rx).await;
                assert_eq!(kind, "READY");
                let head = (
                    ready["data"]["epoch"].as_str().unwrap().to_owned(),
                    ready["data"]["seq"].as_u64().unwrap(),
                );
                readers.push((rx, head));
            }
        }

        cluster.redis.kill9();
        if lose {
            cluster.redis.wipe();
        }
        cluster.redis.restart();
        let back = std::time::Instant::now();

        if lose {
            // Redis lost the flow's history: each reader is told, before anything new is
            // published.
            for (rx, head) in &mut readers {
                let (kind, _, data) = next(rx).await;
                assert_eq!(kind, "RESYNC", "round {round}: {data}");
                head.1 = 0; // a new epoch: its first event has seq 1
                head.0.clear();
            }
            // Reported, not asserted (no timing assertions): the bound in decisions.md.
            slowest_resync = slowest_resync.max(back.elapsed());
        }
        // Ops after the restart (a 503 may come while the API's connections recover; the
        // same op id again is applied once).
        for i in 0..5 {
            let path = format!("/v1/flows/{flow}/ops");
            accepted(&post, path, json!(add(&format!("after{i}"))), round).await;
        }
        for (rx, head) in &mut readers {
            let mut got = vec![];
            while got.len() < 5 {
                let (kind, id, data) = next(rx).await;
                if kind == "RESYNC" {
                    // Allowed when history kept nothing usable; then a new epoch starts.
                    assert!(!lose || !got.is_empty(), "a second RESYNC in round {round}");
                    got.clear();
                    *head = (String::new(), 0);
                    continue;
                }
                assert_eq!(kind, "SYNC_CANVAS", "round {round}: {data}");
                let (epoch, seq) = position(&id);
                if head.0.is_empty() {
                    head.0 = epoch.clone();
                }
                assert_eq!(
                    (epoch.as_str(), seq),
                    (head.0.as_str(), head.1 + 1),
                    "round {round}: a gap"
                );
                head.1 = seq;
                got.push(data["data"]["ops"][0]["op_id"].as_str().unwrap().to_owned());
            }
            assert_eq!(
                got,
                ["after0", "after1", "after2", "after3", "after4"],
                "round {round}"
            );
        }

        // A new execution runs to the end, also after Redis lost the job queue.
        let r = post(
            format!("/v1/flows/{flow}/ops"),
            json!({"client_id": "w", "ops": [{"op_id": "t", "type": "node.add",
                "node": {"id": "t", "type": "template", "position": {"x": 0, "y": 0},
                "data": {"template": "hi"}}}]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 202);
        // Like the ops above; an execution that could not be queued is failed, not left
        // queued (checked below).
        let path = format!("/v1/flows/{flow}/executions");
        let started = accepted(&post, path.clone(), json!({}), round).await;
        let (rx, _) = &mut readers[0];
        assert_eq!(ended(rx, &started).await, "succeeded", "round {round}");

        // Redis has been back for (more than) 2 s: no endpoint answers 503.
        tokio::time::sleep_until((back + Duration::from_secs(2)).into()).await;
        let check = post(path, json!({})).await.unwrap();
        assert_eq!(check.status(), 202, "round {round}");
        let check: Value = check.json().await.unwrap();
        let mut answers = vec![
            http.get(format!("{api}/readyz")).send().await.unwrap(),
            http.get(format!("{api}/v1/flows/{flow}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
            post(format!("/v1/flows/{flow}/ops"), json!(add("check")))
                .await
                .unwrap(),
            http.get(format!("{api}/v1/flows/{flow}/presence"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        ];
        for g in &cluster.gateways {
            answers.push(
                http.get(format!("{}/readyz", g.url()))
                    .send()
                    .await
                    .unwrap(),
            );
        }
        for r in answers {
            assert_ne!(r.status(), 503, "round {round}: {} answered 503", r.url());
        }

        // No execution of the round is left behind: each ran to its end, or failed because
        // it could not be queued (and its start answered 503).
        assert_eq!(ended(rx, &check).await, "succeeded", "round {round}");
        let list: Value = http
            .get(format!("{api}/v1/flows/{flow}/executions"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in list["executions"].as_array().unwrap() {
            assert!(
                e["status"] == "succeeded"
                    || e["error"]
                        .as_str()
                        .is_some_and(|w| w.starts_with("could not be queued")),
                "round {round}: {e}"
            );
        }
    }
    #[allow(clippy::print_stderr)] // the figure decisions.md quotes (with --nocapture)
    {
        eprintln!("slowest RESYNC after Redis was back: {slowest_resync:?}");
    }
}
