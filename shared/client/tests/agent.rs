//! The example agent, as its own process, streams 2,000 tokens into a node of the one
//! binary while a person edits another field of the same node and a third client watches.

use std::process::Stdio;
use std::time::Duration;

use flowsync::{Settings, System};
use flowsync_client::{Client, ClientConfig, FlowSession, OpExt, Outcome, SessionConfig};
use flowsync_protocol::{ClientId, ConflictReason, FieldPath, FlowId, Op};
use serde_json::{Value, json};

const TOKENS: usize = 2_000;
const EDITS: usize = 30;

/// The example's binary, built by `cargo test` next to the test binaries.
fn agent_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join(format!("agent{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test` (it builds the examples)",
        path.display()
    );
    path
}

/// Words, emoji (two UTF-16 units) and a combining accent, so offsets are exercised.
fn token(i: usize) -> String {
    match i % 50 {
        7 => "🙂 ".into(),
        23 => "e\u{301} ".into(),
        _ => format!("w{i} "),
    }
}

fn op(value: Value) -> Op {
    flowsync_client::op_from_json(value).expect("a valid op")
}

async fn session(client: &Client, flow: &FlowId, name: &str) -> FlowSession {
    let config = SessionConfig {
        client_id: ClientId::parse(name).unwrap(),
        ..SessionConfig::default()
    };
    FlowSession::open(client.clone(), flow.clone(), config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_streams_into_a_node_while_people_edit_and_watch() {
    let tokens: Vec<String> = (0..TOKENS).map(token).collect();
    let expected: String = tokens.concat();
    // A model producing ~4,000 tokens/s.
    let llm = flowsync_testkit::ChatStub::paced(tokens, Duration::from_micros(250));
    let dir = tempfile::tempdir().unwrap();
    let system = System::build(Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", system.port());
    tokio::spawn(system.run_until_stopped());
    let client = Client::new(ClientConfig::new(&base)).unwrap();
    let flow = FlowId::parse("doc").unwrap();
    client.create_flow(Some(&flow), "Doc").await.unwrap();
    let watcher = session(&client, &flow, "watcher").await;
    let editor = session(&client, &flow, "editor").await;
    let add = op(
        json!({"type": "node.add", "node": {"id": "plan", "type": "note",
        "position": {"x": 0, "y": 0}, "data": {"text": "", "title": "draft"}}}),
    );
    editor.send_one(add).await.unwrap();

    let agent = tokio::process::Command::new(agent_binary())
        .args([
            "--api", &base, "--flow", "doc", "--node", "plan", "--field", "/text",
        ])
        .args(["--prompt", "Write the plan", "--llm-base-url", &llm.url])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The person retitles the node over and over, from the version they see: the agent's
    // appends keep moving the node, so some edits are refused; each is resent from the
    // reloaded canvas, as a person would.
    let mut refused = 0;
    for i in 0..EDITS {
        loop {
            let edit = op(json!({"type": "node.update", "id": "plan",
                "patch": {"title": format!("edit {i}")}}));
            match editor
                .send_one(edit.based_on(editor.version()))
                .await
                .unwrap()
            {
                Outcome::Applied { .. } => break,
                Outcome::Refused(c) => {
                    assert_eq!(c.reason, ConflictReason::VersionMismatch);
                    refused += 1;
                    editor.reload().await.unwrap();
                }
            }
        }
    }

    let out = tokio::time::timeout(Duration::from_secs(120), agent.wait_with_output())
        .await
        .expect("the agent finishes")
        .unwrap();
    assert!(out.status.success(), "agent failed: {out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tokens"], TOKENS);
    assert!(report["ops"].as_u64().unwrap() >= 1);

    // The server, the watcher and the tokens agree.
    let state = client.flow(&flow).await.unwrap();
    let node = state
        .nodes
        .iter()
        .find(|n| n.id.as_str() == "plan")
        .unwrap();
    assert_eq!(node.data["text"], expected.as_str());
    assert_eq!(node.data["title"], format!("edit {}", EDITS - 1));
    tokio::time::timeout(
        Duration::from_secs(20),
        watcher.wait_for_version(state.version),
    )
    .await
    .expect("the watcher catches up")
    .unwrap();
    let text = FieldPath::parse("/text").unwrap();
    assert_eq!(
        watcher.text("plan", &text).as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(watcher.canvas().node("plan"), Some(node));

    // No op lost or applied twice: the log holds each append once, in order.
    let mut history = vec![];
    while history.len() < state.version as usize {
        let page = client
            .history(&flow, history.len() as u64, 500)
            .await
            .unwrap();
        assert!(
            !page.is_empty(),
            "history ends before version {}",
            state.version
        );
        history.extend(page);
    }
    let appends: Vec<_> = history
        .iter()
        .filter(|e| e.op.type_name() == "text.append")
        .collect();
    assert_eq!(appends.len() as u64, report["ops"].as_u64().unwrap());
    let mut ids: Vec<_> = history.iter().map(|e| e.op_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), history.len(), "an op id twice in the log");
    let appended: String = appends
        .iter()
        .map(|e| match &e.op.kind {
            flowsync_protocol::OpKind::TextAppend(a) => a.text.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(appended, expected);
    let edits = history
        .iter()
        .filter(|e| e.op.type_name() == "node.update")
        .count();
    assert_eq!(edits, EDITS);
    tracing::info!(%report, refused, "done");
}
