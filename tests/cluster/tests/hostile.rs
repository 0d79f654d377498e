//! Hostile flows on the distributed topology (processes, Redis, MongoDB): a 48 MiB
//! response is bounded by the runner, so no event large enough to make Redis drop the
//! gateways' or runners' subscriber connections is ever published — the same plain reader
//! sees later events, and the runner runs the next execution.

use flowsync_cluster_tests::{Cluster, Shape, next_seen, plain_reader};
use flowsync_testkit::{HttpStub, StubReply};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_fails_its_node_and_every_subscriber_stays_connected() {
    let _serial = flowsync_cluster_tests::serial().await;
    let huge = HttpStub::start(
        "127.0.0.1",
        StubReply::Body {
            len: 48 << 20,
            content_length: false,
        },
    );
    let cluster = Cluster::start(
        Shape {
            apis: 1,
            gateways: 1,
            runners: 1,
        },
        &[
            ("FLOWSYNC_RUNNER__HTTP_ALLOW", "127.0.0.1/32"),
            ("FLOWSYNC_RUNNER__POLL", "1"),
        ],
    );
    let http = reqwest::Client::new();
    let api = cluster.apis[0].url();
    let token = cluster.token("tester", "user");
    let post = |path: &str, body: Value| {
        http.post(format!("{api}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post("/v1/flows", json!({"id": "huge", "name": "huge"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let add = |op_id: &str, kind: &str, data: Value| {
        json!({"client_id": "c", "ops": [{"op_id": op_id, "type": "node.add",
            "node": {"id": op_id, "type": kind, "position": {"x": 0, "y": 0}, "data": data}}]})
    };
    let r = post(
        "/v1/flows/huge/ops",
        add("big", "http", json!({"url": huge.url})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let mut reader = plain_reader(
        format!("{}/v1/flows/huge/events", cluster.gateways[0].url()),
        token.clone(),
    )
    .await;
    assert_eq!(next_seen(&mut reader).await.0, "READY");

    let run = |flow: &'static str| {
        let post = &post;
        async move {
            let r = post(&format!("/v1/flows/{flow}/executions"), json!({}))
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["execution_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let id = run("huge").await;
    let mut largest = 0;
    let ended = loop {
        let (kind, _, data) = next_seen(&mut reader).await;
        largest = largest.max(data.to_string().len());
        assert_ne!(kind, "RESYNC", "the gateway lost its subscription: {data}");
        if kind == "EXECUTION_UPDATE"
            && data["data"]["execution_id"] == id.as_str()
            && data["data"]["node_id"].is_null()
            && ["succeeded", "failed"].contains(&data["data"]["status"].as_str().unwrap_or(""))
        {
            break data;
        }
    };
    assert_eq!(ended["data"]["status"], "failed", "{ended}");
    assert!(largest < 64 << 10, "an event of {largest} bytes");
    let stored: Value = http
        .get(format!("{api}/v1/flows/huge/executions/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        stored["nodes"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("output_too_large")),
        "{stored}"
    );

    // The same reader goes on (the gateway's subscriber is connected), and the runner
    // (its subscriber too) runs the next execution.
    let r = post(
        "/v1/flows/huge/ops",
        json!({"client_id": "c", "ops": [{"op_id": "gone", "type": "node.delete", "id": "big"}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let r = post(
        "/v1/flows/huge/ops",
        add("t", "template", json!({"template": "ok"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    for op in ["gone", "t"] {
        let (kind, _, data) = next_seen(&mut reader).await;
        assert_eq!(kind, "SYNC_CANVAS", "{data}");
        assert_eq!(data["data"]["ops"][0]["op_id"], op);
    }
    let next = run("huge").await;
    loop {
        let (kind, _, data) = next_seen(&mut reader).await;
        if kind == "EXECUTION_UPDATE"
            && data["data"]["execution_id"] == next.as_str()
            && data["data"]["node_id"].is_null()
            && data["data"]["status"] == "succeeded"
        {
            break;
        }
        assert!(
            !(kind == "EXECUTION_UPDATE" && data["data"]["status"] == "failed"),
            "{data}"
        );
    }
}
