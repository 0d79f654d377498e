//! 20 writers — people and agents — send random ops through both APIs while SSE clients on
//! both gateways follow with the dumb reducer. At the end every copy of the canvas is the
//! same, every op has exactly one result, and no stream saw a gap or a duplicate.

use std::collections::HashSet;
use std::time::Duration;

use flowsync_client::{FlowSession, OpExt, Outcome, SessionConfig};
use flowsync_cluster_tests::{Cluster, Shape, Watcher, replay_history, server_canvas};
use flowsync_protocol::{ClientId, FlowId, Op, OpId};
use serde_json::{Value, json};

const WRITERS: usize = 20;
const REQUESTS: usize = 15;

fn op(value: Value) -> Op {
    flowsync_client::op_from_json(value).expect("a valid op")
}

/// A random request of 1–3 ops over nodes `n0..n11` and their edges; people send base
/// versions (and get conflicts), agents send none (last writer wins) and append text.
fn request(rng: &mut fastrand::Rng, agent: bool, version: u64) -> Vec<Op> {
    let node = |rng: &mut fastrand::Rng| format!("n{}", rng.usize(..12));
    (0..rng.usize(1..=3))
        .map(|_| {
            let id = node(rng);
            let op = match rng.usize(..7) {
                0 => op(
                    json!({"type": "node.add", "node": {"id": id, "type": "note",
                    "position": {"x": rng.i32(..500), "y": rng.i32(..500)}, "data": {"text": ""}}}),
                ),
                1 => op(json!({"type": "node.move", "id": id,
                    "position": {"x": rng.i32(..500), "y": rng.i32(..500)}})),
                2 => op(json!({"type": "node.update", "id": id,
                    "patch": {"label": format!("l{}", rng.u32(..100))}})),
                3 => op(json!({"type": "text.append", "id": id, "path": "/text",
                    "text": format!("t{} ", rng.u32(..100))})),
                4 => op(
                    json!({"type": "edge.add", "edge": {"id": format!("e{}", rng.usize(..8)),
                    "source": id, "target": node(rng)}}),
                ),
                5 if rng.usize(..3) == 0 => op(json!({"type": "node.delete", "id": id})),
                _ => op(json!({"type": "edge.delete", "id": format!("e{}", rng.usize(..8))})),
            };
            if agent { op } else { op.based_on(version) }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_converges_and_every_op_has_one_result() {
    let _serial = flowsync_cluster_tests::serial().await;
    let cluster = Cluster::start(
        Shape {
            apis: 2,
            gateways: 2,
            runners: 0,
        },
        &[],
    );
    let flow = FlowId::parse("consistency").unwrap();
    let admin = cluster.client("admin", "user");
    admin.create_flow(Some(&flow), "Consistency").await.unwrap();

    // Two SSE clients on each gateway, before anyone writes.
    let mut watchers = vec![];
    for (i, gateway) in cluster.gateways.iter().chain(&cluster.gateways).enumerate() {
        let client = cluster.client_via(
            &cluster.apis[0].url(),
            &gateway.url(),
            &format!("w{i}"),
            "user",
        );
        watchers.push(Watcher::start(client, &flow).await);
    }

    // 20 writers, half people half agents, alternating APIs and gateways.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (api, gateway) = (&cluster.apis[w % 2], &cluster.gateways[(w / 2) % 2]);
        let agent = w % 2 == 1;
        let kind = if agent { "agent" } else { "user" };
        let client = cluster.client_via(&api.url(), &gateway.url(), &format!("writer{w}"), kind);
        let flow = flow.clone();
        writers.spawn(async move {
            let config = SessionConfig {
                client_id: ClientId::parse(format!("writer{w}")).unwrap(),
                op_timeout: Duration::from_secs(20),
                ..SessionConfig::default()
            };
            let session = FlowSession::open(client, flow, config).await.unwrap();
            let mut rng = fastrand::Rng::with_seed(w as u64);
            let mut sent: Vec<(OpId, Outcome)> = vec![];
            for _ in 0..REQUESTS {
                let ops = request(&mut rng, agent, session.version());
                let ids: Vec<OpId> = ops.iter().map(|o| o.op_id.clone()).collect();
                let outcomes = session.send(ops).await.unwrap();
                sent.extend(ids.into_iter().zip(outcomes));
            }
            sent
        });
    }
    let mut sent = vec![];
    while let Some(done) = writers.join_next().await {
        sent.extend(done.unwrap());
    }
    let applied = sent.iter().filter(|(_, o)| o.applied().is_some()).count();
    assert!(
        applied > 0 && applied < sent.len(),
        "a mix of applied ops and conflicts"
    );

    let server = server_canvas(&admin, &flow).await;
    assert_eq!(
        server.version() as usize,
        applied,
        "one version per applied op"
    );
    assert_eq!(replay_history(&admin, &flow, "Consistency").await, server);
    let ids: HashSet<&OpId> = sent.iter().map(|(id, _)| id).collect();
    for watcher in &mut watchers {
        let seen = watcher.converges_to(&server).await;
        assert_eq!(
            seen.results.len(),
            ids.len(),
            "a result for every op, no other"
        );
        for (id, n) in &seen.results {
            assert!(ids.contains(id), "a result for an op nobody sent: {id}");
            assert_eq!(*n, 1, "op {id} has {n} results");
        }
    }
}
