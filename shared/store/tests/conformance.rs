//! One conformance suite for every store backend (STYLE: one suite, every implementation).
//! Each test gets a fresh database: a new SQLite file, or a new MongoDB database on the
//! shared test server (dropped afterwards).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flowsync_canvas::{Canvas, LogEntry};
use flowsync_protocol::{
    Actor, ActorId, ActorKind, ClientId, ConflictReason, Execution, ExecutionId, ExecutionStatus,
    FlowId, NodeId, NodeRun, NodeStatus, Op,
};
use flowsync_store::mongo::{MongoBackend, MongoConfig};
use flowsync_store::sqlite::SqliteBackend;
use flowsync_store::{
    Append, Backend, CommitRequest, FlowLog, NewFlow, NodeRunUpdate, Store, StoreConfig, StoreError,
};
use serde_json::{Value, json};

/// Where a test's data lives; makes more handles onto the same data.
enum Place {
    Sqlite(tempfile::TempDir),
    Mongo(MongoConfig),
}

impl Place {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn mongo() -> Self {
        Self::Mongo(MongoConfig {
            uri: flowsync_testkit::mongo().uri.clone(),
            database: flowsync_testkit::unique_name("t"),
            ..MongoConfig::default()
        })
    }

    /// A new handle: its own SQLite connection, or its own MongoDB client.
    async fn open(&self, config: StoreConfig) -> Store {
        let backend: Arc<dyn Backend> = match self {
            Self::Sqlite(dir) => {
                Arc::new(SqliteBackend::open(&dir.path().join("flowsync.db")).unwrap())
            }
            Self::Mongo(c) => Arc::new(MongoBackend::connect(c).await.unwrap()),
        };
        Store::new(backend, config).await.unwrap()
    }

    async fn cleanup(self) {
        if let Self::Mongo(c) = self {
            MongoBackend::connect(&c)
                .await
                .unwrap()
                .drop_database()
                .await
                .unwrap();
        }
    }
}

fn actor(id: &str) -> Actor {
    Actor {
        id: ActorId::parse(id).unwrap(),
        kind: ActorKind::User,
        name: id.into(),
    }
}

fn op(v: Value) -> Op {
    Op::from_value(v).unwrap()
}

fn request(who: &str, ops: Vec<Value>) -> CommitRequest {
    CommitRequest {
        actor: actor(who),
        client_id: ClientId::parse(format!("{who}-tab")).unwrap(),
        if_match: None,
        ops: ops.into_iter().map(op).collect(),
    }
}

fn add(op_id: &str, node: &str) -> Value {
    json!({"op_id": op_id, "type": "node.add", "node": {"id": node, "type": "note", "position": {"x": 0, "y": 0}}})
}

fn mv(op_id: &str, node: &str, x: i64) -> Value {
    json!({"op_id": op_id, "type": "node.move", "id": node, "position": {"x": x, "y": 0}})
}

async fn new_flow(store: &Store, id: &str) -> FlowId {
    let id = FlowId::parse(id).unwrap();
    store
        .create_flow(NewFlow {
            id: Some(id.clone()),
            name: "Flow".into(),
            ..NewFlow::default()
        })
        .await
        .unwrap();
    id
}

/// Replays a whole log onto an empty canvas.
fn replay(id: &FlowId, log: &[LogEntry]) -> Canvas {
    let mut canvas = Canvas::new(id.clone(), "Flow");
    for e in log {
        canvas.apply_applied(e.version, &e.changes).unwrap();
    }
    canvas
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let place = super::Place::sqlite();
                super::$name(&place).await;
                place.cleanup().await;
            } )*
        }
        mod mongo {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let place = super::Place::mongo();
                super::$name(&place).await;
                place.cleanup().await;
            } )*
        }
    };
}

conformance!(
    flows_crud_and_pagination,
    commit_history_and_conflicts,
    retried_op_ids_apply_once,
    time_travel_from_checkpoints,
    snapshot_lag_is_folded,
    undo_across_commits,
    executions_lifecycle,
    concurrent_writers_leave_a_gap_free_log,
    a_group_commit_is_each_request_in_turn,
    a_flow_held_in_memory_is_never_written_stale,
);

async fn flows_crud_and_pagination(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    for id in ["c", "a", "b", "d", "e"] {
        new_flow(&store, id).await;
    }
    let made = store
        .create_flow(NewFlow {
            name: "auto".into(),
            ..NewFlow::default()
        })
        .await
        .unwrap();
    assert_eq!(made.version, 0);
    assert!(matches!(
        store
            .create_flow(NewFlow {
                id: Some(FlowId::parse("a").unwrap()),
                ..NewFlow::default()
            })
            .await,
        Err(StoreError::FlowExists(_))
    ));
    let mut seen = vec![];
    let mut after = None;
    loop {
        let page = store.list_flows(after.as_ref(), 2).await.unwrap();
        seen.extend(page.flows.iter().map(|f| f.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut want: Vec<String> = ["a", "b", "c", "d", "e", made.id.as_str()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(seen, want);
    let a = FlowId::parse("a").unwrap();
    assert_eq!(store.get_flow(&a).await.unwrap().unwrap().name, "Flow");
    assert!(store.delete_flow(&a).await.unwrap());
    assert!(!store.delete_flow(&a).await.unwrap());
    assert!(store.get_flow(&a).await.unwrap().is_none());
    assert!(matches!(
        store.history(&a, 0, 10).await,
        Err(StoreError::FlowNotFound(_))
    ));
    assert!(matches!(
        store.commit(&a, &request("u", vec![add("o", "n")])).await,
        Err(StoreError::FlowNotFound(_))
    ));
    // A flow re-created under a deleted id starts empty.
    let b = FlowId::parse("b").unwrap();
    store
        .commit(&b, &request("u", vec![add("o1", "n")]))
        .await
        .unwrap();
    store.delete_flow(&b).await.unwrap();
    new_flow(&store, "b").await;
    let fresh = store.get_flow(&b).await.unwrap().unwrap();
    assert_eq!((fresh.version, fresh.nodes.len()), (0, 0));
    assert!(store.history(&b, 0, 10).await.unwrap().is_empty());
    store.ping().await.unwrap();
}

async fn commit_history_and_conflicts(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    let out = store
        .commit(
            &f,
            &request("u", vec![add("o1", "a"), add("o2", "b"), mv("o3", "a", 5)]),
        )
        .await
        .unwrap();
    assert_eq!(out.prev_version, 0);
    assert_eq!(
        out.applied.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(out.refused.is_empty() && out.replayed.is_empty());
    // A batch stops at its first refusal; nothing refused is logged.
    let out = store
        .commit(
            &f,
            &request(
                "u",
                vec![mv("o4", "b", 1), add("o5", "a"), mv("o6", "b", 2)],
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 1);
    let reasons: Vec<_> = out
        .refused
        .iter()
        .map(|c| (c.op_id.to_string(), c.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("o5".into(), ConflictReason::Duplicate),
            ("o6".into(), ConflictReason::Skipped)
        ]
    );
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    assert_eq!(flow.version, 4);
    assert_eq!(
        flow.nodes
            .iter()
            .map(|n| (n.id.as_str(), n.position.x))
            .collect::<Vec<_>>(),
        [("a", 5.0), ("b", 1.0)]
    );
    // If-Match.
    let mut stale = request("u", vec![mv("o7", "a", 9)]);
    stale.if_match = Some(3);
    let out = store.commit(&f, &stale).await.unwrap();
    assert_eq!(out.refused[0].reason, ConflictReason::VersionMismatch);
    // History: after/limit.
    let all = store.history(&f, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.op_id.as_str()).collect::<Vec<_>>(),
        ["o1", "o2", "o3", "o4"]
    );
    let page = store.history(&f, 1, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(replay(&f, &all), Canvas::from_flow(flow).unwrap());
}

async fn retried_op_ids_apply_once(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    let first = store
        .commit(&f, &request("u", vec![add("o1", "a"), mv("o2", "a", 1)]))
        .await
        .unwrap();
    store
        .commit(&f, &request("v", vec![mv("o3", "a", 2)]))
        .await
        .unwrap();
    // The same request again (a client retrying after a lost 202).
    let again = store
        .commit(&f, &request("u", vec![add("o1", "a"), mv("o2", "a", 1)]))
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(
        again.replayed, first.applied,
        "the original entries, same versions"
    );
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    assert_eq!((flow.version, flow.nodes[0].position.x), (3, 2.0));
    // A refused op_id is not logged, so its retry may apply.
    let out = store
        .commit(&f, &request("u", vec![add("o4", "a")]))
        .await
        .unwrap();
    assert_eq!(out.refused[0].reason, ConflictReason::Duplicate);
    let out = store
        .commit(&f, &request("u", vec![add("o4", "b")]))
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 1);
}

/// A store keeps a flow it committed to and starts its next commit from it without a read
/// (SQLite, `held_flows`): whatever changed the flow meanwhile — another handle's commit,
/// an op retried after its answer was lost, a delete, a new flow under the same id even at
/// the same version — the next commit applies on what is stored, never on the stale copy.
async fn a_flow_held_in_memory_is_never_written_stale(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let other = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    store
        .commit(&f, &request("u", vec![add("o1", "a")]))
        .await
        .unwrap();
    // Another handle (another process) moves the flow on.
    let theirs = CommitRequest {
        if_match: Some(1),
        ..request("v", vec![add("o2", "b"), mv("o3", "a", 7)])
    };
    other.commit(&f, &theirs).await.unwrap();
    let out = store
        .commit(&f, &request("u", vec![mv("o4", "b", 9)]))
        .await
        .unwrap();
    assert_eq!(
        out.applied[0].version, 4,
        "on top of the other handle's ops"
    );
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    let x = |id: &str| {
        flow.nodes
            .iter()
            .find(|n| n.id.as_str() == id)
            .unwrap()
            .position
            .x
    };
    assert_eq!((flow.version, x("a"), x("b")), (4, 7.0, 9.0));

    // Requests retried after their answers were lost, sent to the store that holds the
    // flow: one that would apply again on the copy (a move); one that the copy would
    // refuse (an add of a node that exists, an If-Match long past), in a group with a
    // request that writes. Both are replays, with their first versions.
    let out = store
        .commit(&f, &request("u", vec![mv("o4", "b", 9)]))
        .await
        .unwrap();
    assert_eq!((out.applied.len(), out.replayed.len()), (0, 1));
    assert_eq!((out.replayed[0].version, out.attempts), (4, 1));
    let outs = store
        .commit_group(&f, &[theirs, request("w", vec![add("o6", "c")])])
        .await
        .unwrap();
    assert!(outs[0].refused.is_empty(), "{:?}", outs[0].refused);
    let versions: Vec<u64> = outs[0].replayed.iter().map(|e| e.version).collect();
    assert_eq!((versions, outs[0].applied.len()), (vec![2, 3], 0));
    assert_eq!(outs[1].applied[0].version, 5);

    // Deleted and made anew under the same id, by this store and by the other one; the
    // other one brings the new flow to the very version this store holds.
    for (handle, client, op, node) in [(&store, "w", "n1", "first"), (&other, "x", "n2", "second")]
    {
        assert!(handle.delete_flow(&f).await.unwrap());
        new_flow(handle, "f").await;
        handle
            .commit(&f, &request(client, vec![add(op, node)]))
            .await
            .unwrap();
    }
    let out = store
        .commit(&f, &request("w", vec![add("n3", "third")]))
        .await
        .unwrap();
    assert_eq!(out.applied[0].version, 2, "after the other handle's op");
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    let ids: Vec<&str> = flow.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["second", "third"]);
    assert_eq!(flow.version, 2);
}

async fn time_travel_from_checkpoints(place: &Place) {
    let store = place
        .open(StoreConfig {
            snapshot_every: 3,
            ..StoreConfig::default()
        })
        .await;
    let f = new_flow(&store, "f").await;
    let mut states = vec![store.get_flow(&f).await.unwrap().unwrap()];
    store
        .commit(&f, &request("u", vec![add("o0", "a")]))
        .await
        .unwrap();
    states.push(store.get_flow(&f).await.unwrap().unwrap());
    for i in 1..10 {
        // Batches of one and two ops, so checkpoints fall inside and between batches.
        let ops = if i % 2 == 0 {
            vec![mv(&format!("o{i}"), "a", i)]
        } else {
            vec![mv(&format!("o{i}"), "a", i), mv(&format!("p{i}"), "a", -i)]
        };
        store.commit(&f, &request("u", ops)).await.unwrap();
        let now = store.get_flow(&f).await.unwrap().unwrap();
        while (states.len() as u64) < now.version {
            states.push(
                store
                    .flow_at(&f, states.len() as u64)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        states.push(now);
    }
    let head = states.last().unwrap().version;
    for v in 0..=head {
        let at = store.flow_at(&f, v).await.unwrap().unwrap();
        assert_eq!(at.version, v);
        let expected = replay(&f, &store.history(&f, 0, v as usize).await.unwrap());
        assert_eq!(Canvas::from_flow(at).unwrap(), expected, "state at {v}");
    }
    assert!(matches!(
        store.flow_at(&f, head + 1).await,
        Err(StoreError::VersionAhead { .. })
    ));
}

async fn snapshot_lag_is_folded(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    store
        .commit(&f, &request("u", vec![add("o1", "a")]))
        .await
        .unwrap();
    // A writer that crashed between append (step 3) and advance (step 4): its entry is in
    // the log, the snapshot still at version 1.
    let snapshot = store.backend().snapshot(&f).await.unwrap().unwrap();
    let mut canvas = Canvas::from_flow(snapshot.clone()).unwrap();
    let mut entry = store.history(&f, 0, 1).await.unwrap().remove(0);
    entry.version = 2;
    entry.op_id = "crashed".parse().unwrap();
    entry.changes = vec![flowsync_protocol::Change::NodeDelete {
        id: "a".parse().unwrap(),
    }];
    assert_eq!(
        store.backend().append(&f, &[entry.clone()]).await.unwrap(),
        Append::Done
    );
    assert_eq!(
        store.backend().append(&f, &[entry.clone()]).await.unwrap(),
        Append::Race,
        "the version is taken"
    );
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    assert_eq!(
        (flow.version, flow.nodes.len()),
        (2, 0),
        "readers fold the lag"
    );
    // What a commit starts from, read at once: the snapshot, the lag, the known op ids.
    let op_ids: Vec<flowsync_protocol::OpId> = ["o1", "crashed", "never"]
        .iter()
        .map(|o| o.parse().unwrap())
        .collect();
    let base = store
        .backend()
        .commit_base(&f, &op_ids)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(base.snapshot.version, 1);
    assert_eq!(
        base.log.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2]
    );
    let mut known: Vec<_> = base.known.iter().map(|e| e.op_id.to_string()).collect();
    known.sort();
    assert_eq!(known, ["crashed", "o1"]);
    let gone: FlowId = "nope".parse().unwrap();
    assert!(
        store
            .backend()
            .commit_base(&gone, &op_ids)
            .await
            .unwrap()
            .is_none()
    );
    // The conditional advance refuses a stale starting version…
    canvas.apply_applied(2, &entry.changes).unwrap();
    let t = snapshot.created_at;
    assert!(
        !store
            .backend()
            .advance(&canvas.to_flow(t, t), 0)
            .await
            .unwrap()
    );
    // …and the next commit advances over the lag.
    store
        .commit(&f, &request("u", vec![add("o3", "b")]))
        .await
        .unwrap();
    assert_eq!(
        store.backend().snapshot(&f).await.unwrap().unwrap().version,
        3
    );
}

async fn undo_across_commits(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    store
        .commit(&f, &request("u", vec![add("o1", "a")]))
        .await
        .unwrap();
    store
        .commit(&f, &request("u", vec![mv("o2", "a", 10)]))
        .await
        .unwrap();
    store
        .commit(&f, &request("v", vec![add("o3", "b")]))
        .await
        .unwrap();
    let out = store
        .commit(
            &f,
            &request("u", vec![json!({"op_id": "u1", "type": "undo"})]),
        )
        .await
        .unwrap();
    assert_eq!(out.applied[0].undo_of, Some(2));
    // Version 2 is undone already: anyone's explicit undo of it conflicts.
    let out = store
        .commit(
            &f,
            &request(
                "v",
                vec![json!({"op_id": "u2", "type": "undo", "version": 2})],
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.refused[0].reason, ConflictReason::UndoConflict);
    let out = store
        .commit(
            &f,
            &request("u", vec![json!({"op_id": "r1", "type": "redo"})]),
        )
        .await
        .unwrap();
    assert_eq!(out.applied.len(), 1);
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    assert_eq!(
        flow.nodes
            .iter()
            .find(|n| n.id.as_str() == "a")
            .unwrap()
            .position
            .x,
        10.0
    );
}

async fn executions_lifecycle(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "f").await;
    let node = |id: &str| NodeRun {
        node_id: NodeId::parse(id).unwrap(),
        status: NodeStatus::Pending,
        output: None,
        error: None,
        log: String::new(),
        log_index: 0,
    };
    let t0: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut ids = vec![];
    for (i, id) in ["x1", "x2"].into_iter().enumerate() {
        let e = Execution {
            id: ExecutionId::parse(id).unwrap(),
            flow_id: f.clone(),
            flow_version: 3,
            status: ExecutionStatus::Queued,
            error: None,
            created_at: t0 + chrono::Duration::seconds(i as i64),
            updated_at: t0,
            nodes: vec![node("b"), node("a")],
        };
        store.create_execution(&e).await.unwrap();
        ids.push(e.id.clone());
        assert!(matches!(
            store.create_execution(&e).await,
            Err(StoreError::ExecutionExists(_))
        ));
    }
    let x = &ids[0];
    store
        .set_execution_status(x, ExecutionStatus::Running, None)
        .await
        .unwrap();
    let a = NodeId::parse("a").unwrap();
    store
        .set_node_run(
            x,
            &NodeRunUpdate {
                node_id: a.clone(),
                status: NodeStatus::Running,
                output: None,
                error: None,
            },
        )
        .await
        .unwrap();
    // Saves of one chunk, then of two; one sent again (a retry whose answer was lost) is
    // stored once, and a save that carries on one whose answer was lost (chunks 3..5 with
    // 5..6) reads as the longer.
    store.append_node_log(x, &a, "Hel", 0..1).await.unwrap();
    store.append_node_log(x, &a, "lo", 1..3).await.unwrap();
    store.append_node_log(x, &a, "lo", 1..3).await.unwrap();
    store.append_node_log(x, &a, " 👋", 3..5).await.unwrap();
    store.append_node_log(x, &a, " 👋!", 3..6).await.unwrap();
    let mid = store.execution(x).await.unwrap().unwrap();
    assert_eq!(
        (mid.nodes[1].log.as_str(), mid.nodes[1].log_index),
        ("Hello 👋!", 6)
    );
    // A batch that was never stored leaves a hole; what follows it is still shown.
    store.append_node_log(x, &a, "?", 7..8).await.unwrap();
    store
        .set_node_run(
            x,
            &NodeRunUpdate {
                node_id: a.clone(),
                status: NodeStatus::Succeeded,
                output: Some(json!({"text": "Hello 👋", "n": 1.0})),
                error: None,
            },
        )
        .await
        .unwrap();
    store
        .set_execution_status(x, ExecutionStatus::Failed, Some("node b: boom"))
        .await
        .unwrap();
    // An ended execution keeps its final status: a late word (a cancel, a runner's
    // `succeeded` racing it) is refused with the status that stands.
    for late in [ExecutionStatus::Running, ExecutionStatus::Cancelled] {
        assert!(matches!(
            store.set_execution_status(x, late, None).await,
            Err(StoreError::ExecutionEnded {
                status: ExecutionStatus::Failed,
                ..
            })
        ));
    }
    let got = store.execution(x).await.unwrap().unwrap();
    assert_eq!(got.status, ExecutionStatus::Failed);
    assert_eq!(got.error.as_deref(), Some("node b: boom"));
    assert_eq!(
        got.nodes
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>(),
        ["b", "a"],
        "node order kept"
    );
    assert_eq!(got.nodes[1].status, NodeStatus::Succeeded);
    assert_eq!(got.nodes[1].log, "Hello 👋!?");
    assert_eq!(got.nodes[1].log_index, 8);
    assert_eq!(
        got.nodes[1].output,
        Some(json!({"text": "Hello 👋", "n": 1.0}))
    );
    assert!(got.updated_at > t0);
    let listed = store.executions(&f, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["x2", "x1"],
        "newest first"
    );
    // What a restarted process with an in-memory job queue queues again: every flow's
    // queued and running executions, oldest first; finished ones are left alone.
    let g = new_flow(&store, "g").await;
    let y = Execution {
        id: ExecutionId::parse("y1").unwrap(),
        flow_id: g.clone(),
        created_at: t0 + chrono::Duration::seconds(9),
        ..store.execution(&ids[1]).await.unwrap().unwrap()
    };
    store.create_execution(&y).await.unwrap();
    store
        .set_execution_status(&y.id, ExecutionStatus::Running, None)
        .await
        .unwrap();
    assert_eq!(
        store.unfinished_executions(10).await.unwrap(),
        [(f.clone(), ids[1].clone()), (g.clone(), y.id.clone())]
    );
    assert_eq!(store.unfinished_executions(1).await.unwrap().len(), 1);
    let missing = ExecutionId::parse("nope").unwrap();
    assert!(matches!(
        store
            .set_execution_status(&missing, ExecutionStatus::Running, None)
            .await,
        Err(StoreError::ExecutionNotFound(_))
    ));
    assert!(matches!(
        store
            .append_node_log(x, &NodeId::parse("zz").unwrap(), "x", 0..1)
            .await,
        Err(StoreError::ExecutionNotFound(_))
    ));
    assert!(store.execution(&missing).await.unwrap().is_none());
    store.delete_flow(&f).await.unwrap();
    assert!(store.execution(x).await.unwrap().is_none());
}

/// 8 writers × 200 ops on one flow, each through its own store handle: a gap-free log
/// 1..N, a snapshot equal to replaying it, no op applied twice, every op accounted for.
async fn concurrent_writers_leave_a_gap_free_log(place: &Place) {
    const WRITERS: usize = 8;
    const OPS: usize = 200;
    const BATCH: usize = 4;
    let config = StoreConfig {
        snapshot_every: 50,
        ..StoreConfig::default()
    };
    let setup = place.open(config.clone()).await;
    let f = new_flow(&setup, "hot").await;
    let mut tasks = vec![];
    for w in 0..WRITERS {
        let store = place.open(config.clone()).await;
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<String, Result<u64, ConflictReason>> = BTreeMap::new();
            let mut base = None;
            for chunk in 0..OPS / BATCH {
                let ops: Vec<Value> = (0..BATCH)
                    .map(|k| {
                        let i = chunk * BATCH + k;
                        let op_id = format!("w{w}-{i}");
                        let mut v = if i == 0 {
                            add(&op_id, &format!("n{w}"))
                        } else {
                            mv(&op_id, &format!("n{}", (w + i) % WRITERS), i as i64)
                        };
                        // Some ops carry the version this writer last saw: those may conflict.
                        if let Some(b) = base.filter(|_| i.is_multiple_of(3)) {
                            v["base_version"] = json!(b);
                        }
                        v
                    })
                    .collect();
                // Odd writers send each chunk as two requests committed as one group.
                let requests = if w % 2 == 1 {
                    let (a, b) = ops.split_at(BATCH / 2);
                    vec![
                        request(&format!("writer{w}"), a.to_vec()),
                        request(&format!("writer{w}"), b.to_vec()),
                    ]
                } else {
                    vec![request(&format!("writer{w}"), ops)]
                };
                let outs = loop {
                    match store.commit_group(&f, &requests).await {
                        Ok(outs) => break outs,
                        // A client retries a 503 with the same op ids.
                        Err(e) if e.is_transient() => continue,
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                };
                assert_eq!(outs.len(), requests.len(), "one outcome per request");
                for out in outs {
                    for e in out.applied.iter().chain(&out.replayed) {
                        assert!(
                            outcomes
                                .insert(e.op_id.to_string(), Ok(e.version))
                                .is_none(),
                            "{} twice",
                            e.op_id
                        );
                        base = Some(e.version);
                    }
                    for c in &out.refused {
                        assert!(
                            outcomes
                                .insert(c.op_id.to_string(), Err(c.reason))
                                .is_none()
                        );
                    }
                }
            }
            outcomes
        }));
    }
    let mut applied_versions = BTreeMap::new();
    let mut refused = 0;
    for t in tasks {
        for (op_id, outcome) in t.await.unwrap() {
            match outcome {
                Ok(v) => assert!(
                    applied_versions.insert(v, op_id).is_none(),
                    "version {v} reported twice"
                ),
                Err(_) => refused += 1,
            }
        }
    }
    assert_eq!(
        applied_versions.len() + refused,
        WRITERS * OPS,
        "every op applied or refused"
    );
    let log = setup.history(&f, 0, usize::MAX >> 1).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );
    assert_eq!(log.len(), applied_versions.len());
    let ids: HashSet<_> = log.iter().map(|e| e.op_id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "no op applied twice");
    for e in &log {
        assert_eq!(
            applied_versions.get(&e.version).map(String::as_str),
            Some(e.op_id.as_str())
        );
    }
    let flow = setup.get_flow(&f).await.unwrap().unwrap();
    assert_eq!(Canvas::from_flow(flow).unwrap(), replay(&f, &log));
}

/// Requests committed as one group: each sees the state the ones before it left, its
/// refusals touch only its own ops, an op id repeated in the group or already logged
/// applies once, and the log is what committing them one by one would have written.
async fn a_group_commit_is_each_request_in_turn(place: &Place) {
    let store = place.open(StoreConfig::default()).await;
    let f = new_flow(&store, "group").await;
    let with_if_match = |mut r: CommitRequest, v: u64| {
        r.if_match = Some(v);
        r
    };
    let group = vec![
        request("a", vec![add("a1", "n1"), add("a2", "n2")]),
        // Stale: the flow is at 2 once the first request applied.
        with_if_match(request("b", vec![mv("b1", "n1", 5)]), 0),
        // Current in the group's order.
        with_if_match(request("c", vec![mv("c1", "n1", 7)]), 2),
        // A missing node: this request's rest is skipped, no other request is touched.
        request("d", vec![mv("d1", "nope", 1), mv("d2", "n2", 1)]),
        // The first request's op id again: reported with its version, not applied again.
        request("a", vec![add("a1", "n1"), mv("e1", "n2", 9)]),
        // The same op id twice across requests of one group.
        request("f", vec![mv("f1", "n1", 11)]),
        request("f", vec![mv("f1", "n1", 11)]),
    ];
    let outs = store.commit_group(&f, &group).await.unwrap();
    assert_eq!(outs.len(), group.len());
    let applied = |i: usize| -> Vec<(String, u64)> {
        outs[i]
            .applied
            .iter()
            .map(|e| (e.op_id.to_string(), e.version))
            .collect()
    };
    let reasons =
        |i: usize| -> Vec<ConflictReason> { outs[i].refused.iter().map(|c| c.reason).collect() };
    assert_eq!(applied(0), [("a1".into(), 1), ("a2".into(), 2)]);
    assert_eq!(outs[0].prev_version, 0);
    assert_eq!(reasons(1), [ConflictReason::VersionMismatch]);
    assert_eq!(applied(2), [("c1".into(), 3)]);
    assert_eq!(outs[2].prev_version, 2);
    assert_eq!(
        reasons(3),
        [ConflictReason::NotFound, ConflictReason::Skipped]
    );
    assert_eq!(outs[4].replayed.len(), 1);
    assert_eq!(outs[4].replayed[0].version, 1);
    assert_eq!(applied(4), [("e1".into(), 4)]);
    assert_eq!(applied(5), [("f1".into(), 5)]);
    assert!(outs[6].applied.is_empty());
    assert_eq!(outs[6].replayed[0].version, 5);

    let log = store.history(&f, 0, 100).await.unwrap();
    assert_eq!(
        log.iter()
            .map(|e| (e.op_id.to_string(), e.version))
            .collect::<Vec<_>>(),
        [
            ("a1".into(), 1),
            ("a2".into(), 2),
            ("c1".into(), 3),
            ("e1".into(), 4),
            ("f1".into(), 5)
        ]
    );
    let flow = store.get_flow(&f).await.unwrap().unwrap();
    assert_eq!(Canvas::from_flow(flow).unwrap(), replay(&f, &log));

    // Retried as a whole later: every applied op is replayed, nothing applies again.
    let again = store.commit_group(&f, &group[..1]).await.unwrap();
    assert!(again[0].applied.is_empty());
    assert_eq!(again[0].replayed.len(), 2);
    // `undo` reaches an op committed earlier in the same group.
    let undo = vec![
        request("u", vec![mv("u1", "n2", 42)]),
        request("u", vec![json!({"op_id": "u2", "type": "undo"})]),
    ];
    let outs = store.commit_group(&f, &undo).await.unwrap();
    assert_eq!(outs[1].applied.len(), 1, "{:?}", outs[1].refused);
    assert_eq!(outs[1].applied[0].undo_of, Some(6));
}

#[tokio::test]
async fn an_unreachable_mongodb_is_a_typed_error() {
    let config = MongoConfig {
        uri: format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            flowsync_testkit::free_port()
        ),
        database: "nowhere".into(),
        server_selection_timeout: std::time::Duration::from_millis(300),
        ..MongoConfig::default()
    };
    let backend = MongoBackend::connect(&config).await.unwrap();
    let err = backend.ping().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable(_)) && err.is_transient(),
        "{err}"
    );
    let err = Store::new(Arc::new(backend), StoreConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn an_unopenable_sqlite_file_is_a_typed_error() {
    let err =
        SqliteBackend::open(std::path::Path::new("/nonexistent-dir/x/flowsync.db")).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
}
