//! `kill -9` of the one binary while 64 writers send ops (group commits in flight): after a
//! restart on the same data directory every op a client was told about — its `202`, or
//! its `SYNC_CANVAS` on a stream — is in the log, once; nothing announced was lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use flowsync_client::{Client, ClientConfig};
use flowsync_cluster_tests::{PATIENCE, binary};
use flowsync_protocol::{ClientId, EventBody, FlowId, Op, OpsRequest};
use flowsync_testkit::{Process, free_port};
use serde_json::json;

fn start(dir: &std::path::Path, port: u16) -> Process {
    let env = vec![
        ("FLOWSYNC_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        (
            "FLOWSYNC_DATA_DIR".to_owned(),
            dir.to_string_lossy().into_owned(),
        ),
    ];
    let mut process = Process::start("flowsync", &binary("flowsync"), &env);
    process.wait_for_port(port);
    process
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_one_binary_loses_no_acknowledged_or_announced_op() {
    let _serial = flowsync_cluster_tests::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut process = start(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::new(ClientConfig::new(&base)).unwrap();
    let flow = FlowId::parse("crash").unwrap();
    client.create_flow(Some(&flow), "crash").await.unwrap();

    // Every op id a stream announced as applied.
    let announced: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = client
        .events(&flow)
        .only(&[flowsync_protocol::EventType::SyncCanvas]);
    events.next().await.unwrap(); // READY
    let watching = tokio::spawn({
        let announced = announced.clone();
        async move {
            while let Ok(event) = events.next().await {
                if let EventBody::SyncCanvas(sync) = event.body {
                    let mut seen = announced.lock().unwrap();
                    seen.extend(sync.ops.iter().map(|op| op.op_id.to_string()));
                }
            }
        }
    });

    // 64 writers, one op per request, until the process dies under them.
    let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
    let http = reqwest::Client::new();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..64 {
        let (http, base, acknowledged) = (http.clone(), base.clone(), acknowledged.clone());
        writers.spawn(async move {
            for i in 0.. {
                let op_id = format!("w{w}-{i}");
                let request = OpsRequest {
                    client_id: ClientId::parse(format!("w{w}")).unwrap(),
                    ops: vec![
                        Op::from_value(json!({"op_id": op_id, "type": "node.add",
                            "node": {"id": op_id, "type": "note", "position": {"x": 0, "y": 0}}}))
                        .unwrap(),
                    ],
                };
                match http
                    .post(format!("{base}/v1/flows/crash/ops"))
                    .json(&request)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        acknowledged.lock().unwrap().insert(op_id);
                    }
                    Ok(r) => assert_eq!(r.status(), 503, "only a 202 or a 503 before the crash"),
                    Err(_) => return, // the process is gone
                }
            }
        });
    }
    // Kill it mid-load: once a few hundred ops are acknowledged.
    tokio::time::timeout(PATIENCE, async {
        while acknowledged.lock().unwrap().len() < 300 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("300 ops acknowledged");
    process.kill9();
    while writers.join_next().await.is_some() {}
    watching.abort();

    // Started again on the same data.
    let _process = start(dir.path(), port);
    let mut history = vec![];
    loop {
        let page = client
            .history(&flow, history.len() as u64, 1000)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        history.extend(page);
    }
    let logged: Vec<String> = history.iter().map(|e| e.op_id.to_string()).collect();
    let unique: HashSet<&String> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len(), "an op logged twice");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let announced = announced.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);
    let lost: Vec<&String> = acknowledged
        .iter()
        .chain(&announced)
        .filter(|op| !unique.contains(op))
        .collect();
    let version = client.flow(&flow).await.unwrap().version;
    assert!(
        lost.is_empty(),
        "acknowledged or announced, then lost: {lost:?} ({} logged, flow at {version}, {} acknowledged)",
        logged.len(),
        acknowledged.len()
    );
    let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=history.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
}
