//! Executions end to end: the API (over HTTP) queues them, a runner in this process runs
//! them one step at a time (`try_execute_next`), and what clients would see is read off
//! the bus. Embedded (SQLite, in-process bus and queue) and distributed (MongoDB, Redis)
//! backends from the test kit. The LLM endpoint is the test kit's `ChatStub` (it is outside
//! the product).

use std::time::Duration;

use flowsync_api::config::ApiConfig;
use flowsync_api::startup::{Application, Backends};
use flowsync_bus::jobs::JobsConfig;
use flowsync_bus::{Item, Subscription};
use flowsync_protocol::{EventBody, ExecutionStatus};
use flowsync_runner::kinds::LlmConfig;
use flowsync_runner::{Outcome, Runner, RunnerConfig};
use flowsync_testkit::{Place, Setup};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

/// One world: backends, the API on a free port, an HTTP client.
struct World {
    backends: Backends,
    base: String,
    http: reqwest::Client,
    _place: Place,
}

impl World {
    async fn new(setup: Setup, idle: Duration) -> Self {
        let place = Place::with_jobs(setup, JobsConfig { idle_timeout: idle });
        let backends = place.open().await;
        let app = Application::with_backends(
            &ApiConfig {
                listen: "127.0.0.1:0".into(),
                ..ApiConfig::default()
            },
            backends.clone(),
        )
        .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Self {
            backends,
            base,
            http: reqwest::Client::new(),
            _place: place,
        }
    }

    fn runner(&self, llm: Option<String>) -> Runner {
        Runner::new(
            self.backends.store.clone(),
            self.backends.bus.clone(),
            self.backends.jobs.clone(),
            RunnerConfig {
                poll: Duration::from_millis(200),
                touch_every: Duration::from_millis(100),
                llm: LlmConfig {
                    base_url: llm.unwrap_or_default(),
                    ..LlmConfig::default()
                },
                ..RunnerConfig::default()
            },
        )
    }

    /// A flow with these nodes (`[id, type, data]`) and edges (`[source, target]`).
    async fn flow(&self, id: &str, nodes: &[(&str, &str, Value)], edges: &[(&str, &str)]) {
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
    }

    async fn subscribe(&self, flow: &str) -> Subscription {
        self.backends
            .bus
            .subscribe(&flow.parse().unwrap())
            .await
            .unwrap()
    }

    async fn start(&self, flow: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/flows/{flow}/executions", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn started(&self, flow: &str) -> String {
        let r = self.start(flow).await;
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
}

/// The execution events seen so far, as `node:status` / `exec:status` / `log:<chunk>`.
/// A one-node flow whose `slow` node (`delay`, `ms`) is running when its execution is
/// cancelled in the store alone, with no event saying so; then the runner's outcome.
/// Returns the flow's subscription, the execution and the runner's outcome to come.
async fn cancel_in_the_store_alone(
    w: &World,
    flow: &str,
    ms: u64,
) -> (Subscription, String, impl Future<Output = Outcome> + use<>) {
    w.flow(flow, &[("slow", "delay", json!({"ms": ms}))], &[])
        .await;
    let mut sub = w.subscribe(flow).await;
    let id = w.started(flow).await;
    let runner = w.runner(None);
    let running = tokio::spawn(async move { runner.try_execute_next().await });
    drain(&mut sub, |s| s.iter().any(|x| x == "slow:running")).await;
    w.backends
        .store
        .set_execution_status(&id.parse().unwrap(), ExecutionStatus::Cancelled, None)
        .await
        .unwrap();
    let outcome = async move {
        tokio::time::timeout(PATIENCE, running)
            .await
            .expect("the runner ends")
            .unwrap()
            .unwrap()
    };
    (sub, id, outcome)
}

async fn drain(sub: &mut Subscription, until: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut seen = vec![];
    while !until(&seen) {
        let item = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        let Item::Message(m) = item else { continue };
        match m.event().unwrap().body {
            EventBody::ExecutionUpdate(u) => {
                if let (Some(node), Some(s)) = (u.node_id, u.node_status) {
                    seen.push(format!("{node}:{}", json!(s).as_str().unwrap()));
                }
                if let Some(s) = u.status {
                    seen.push(format!("exec:{}", json!(s).as_str().unwrap()));
                }
            }
            EventBody::LogStream(l) => {
                seen.push(format!(
                    "log:{}:{}:{}:{}",
                    l.node_id, l.index, l.chunk, l.done
                ));
            }
            _ => {}
        }
    }
    seen
}

fn pos(seen: &[String], item: &str) -> usize {
    seen.iter()
        .position(|s| s == item)
        .unwrap_or_else(|| panic!("{item} not in {seen:?}"))
}

fn ended(seen: &[String]) -> bool {
    seen.iter()
        .any(|s| ["exec:succeeded", "exec:failed", "exec:cancelled"].contains(&s.as_str()))
}

flowsync_testkit::both!(
    a_diamond_runs_in_dependency_order_with_outputs_downstream,
    a_failed_node_skips_its_downstream_and_fails_the_execution,
    cancel_stops_a_running_execution,
    a_cancel_lost_in_a_gap_of_the_runners_stream_still_stops_the_node,
    a_cancel_that_ends_the_execution_first_stands,
    a_dead_runners_job_is_finished_by_another_without_rerunning_finished_nodes,
    a_late_reader_of_a_node_retried_after_its_runner_died_sees_every_attempts_text,
);

/// A runner dies halfway through an LLM node; another takes the job after the queue's
/// idle timeout and runs the node again. The node's text is everything it streamed: the
/// dead attempt's part (stored as it streamed), then the retry's whole answer, its chunk
/// indices going on from where the stored text ends. A reader that joins halfway through
/// the retry (reads the execution, then applies the live chunks past its `log_index`, as
/// the client's `RunView` does) ends with exactly that text, as does the reader that was
/// there from the start, and the store.
async fn a_late_reader_of_a_node_retried_after_its_runner_died_sees_every_attempts_text(
    setup: Setup,
) {
    let first: Vec<String> = (0..10).map(|i| format!("a{i} ")).collect();
    let rest: Vec<String> = (10..20).map(|i| format!("a{i} ")).collect();
    let model: String = first.iter().chain(&rest).cloned().collect();
    let (stub, gate) = flowsync_testkit::ChatStub::gated(first.clone(), rest);
    let w = World::new(setup, Duration::from_millis(500)).await;
    w.flow("retry", &[("ask", "llm", json!({"prompt": "Count"}))], &[])
        .await;
    let mut from_start = w.subscribe("retry").await;
    let id = w.started("retry").await;
    let doomed = w.runner(Some(stub.url.clone()));
    let dying = tokio::spawn(async move { doomed.try_execute_next().await });
    let logs = |seen: &[String]| seen.iter().filter(|s| s.starts_with("log:")).count();
    let mut seen = drain(&mut from_start, |s| logs(s) == first.len()).await;
    dying.abort(); // halfway through the answer: no ack, no more touches
    let _ = dying.await;

    // The survivor retries the node; its answer stops at the gate halfway too.
    let survivor = w.runner(Some(stub.url.clone()));
    let surviving = tokio::spawn(async move {
        loop {
            match survivor.try_execute_next().await.unwrap() {
                Outcome::Idle => continue,
                finished => return finished,
            }
        }
    });
    seen.extend(drain(&mut from_start, |s| logs(s) == first.len()).await);

    // The late reader: its stream first, then the execution read, then the gate opens.
    let mut late = w.subscribe("retry").await;
    let read = |w: &World| {
        let (http, url) = (
            w.http.clone(),
            format!("{}/v1/flows/retry/executions/{id}", w.base),
        );
        async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<flowsync_protocol::Execution>()
                .await
                .unwrap()
        }
    };
    let mut view = flowsync_client::RunView::new(read(&w).await);
    let ask: flowsync_protocol::NodeId = "ask".parse().unwrap();
    let dead_part: String = first.concat();
    assert_eq!(
        view.text(&ask),
        Some(format!("{dead_part}{dead_part}").as_str()),
        "at once: the dead attempt's text, then the retry's so far"
    );
    gate.open();
    while !view.ended() {
        let item = tokio::time::timeout(PATIENCE, late.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        match item {
            Item::Message(m) => {
                let event = m.event().unwrap();
                if view.apply(&event) == flowsync_client::Step::Gap {
                    view.refresh(read(&w).await);
                }
            }
            Item::Gone => view.refresh(read(&w).await),
        }
    }
    let outcome = tokio::time::timeout(PATIENCE, surviving)
        .await
        .expect("the survivor finishes")
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Succeeded)),
        "{outcome:?}"
    );
    let expected = format!("{dead_part}{model}");
    assert_eq!(view.text(&ask), Some(expected.as_str()));
    assert_eq!(
        view.execution().nodes[0].output,
        Some(json!(model)),
        "the retry's answer"
    );
    seen.extend(drain(&mut from_start, ended).await);
    let mut streamed = String::new();
    let mut next = 0;
    for log in seen.iter().filter_map(|s| s.strip_prefix("log:ask:")) {
        let (index, rest) = log.split_once(':').unwrap();
        assert_eq!(
            index.parse::<u64>().unwrap(),
            next,
            "indices go on across the attempts"
        );
        next += 1;
        streamed.push_str(rest.rsplit_once(':').unwrap().0);
    }
    assert_eq!(streamed, expected, "the reader from the start saw the same");
    let stored = w.execution("retry", &id).await;
    assert_eq!(stored["nodes"][0]["log"], json!(expected));
    assert_eq!(stored["nodes"][0]["log_index"], json!(next));
}

async fn a_diamond_runs_in_dependency_order_with_outputs_downstream(setup: Setup) {
    let w = World::new(setup, Duration::from_secs(30)).await;
    w.flow(
        "dia",
        &[
            ("a", "template", json!({"template": "A"})),
            ("b", "delay", json!({"ms": 20})),
            ("c", "template", json!({"template": "C{{a}}"})),
            ("d", "template", json!({"template": "{{b}}+{{c}}"})),
            ("n", "note", json!({"text": "canvas only"})),
        ],
        &[("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")],
    )
    .await;
    let mut sub = w.subscribe("dia").await;
    let id = w.started("dia").await;
    let outcome = w.runner(None).try_execute_next().await.unwrap();
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Succeeded)),
        "{outcome:?}"
    );
    let seen = drain(&mut sub, ended).await;
    assert!(pos(&seen, "exec:queued") < pos(&seen, "exec:running"));
    assert!(pos(&seen, "a:succeeded") < pos(&seen, "b:running"));
    assert!(pos(&seen, "a:succeeded") < pos(&seen, "c:running"));
    assert!(pos(&seen, "b:succeeded") < pos(&seen, "d:running"));
    assert!(pos(&seen, "c:succeeded") < pos(&seen, "d:running"));
    assert!(pos(&seen, "d:succeeded") < pos(&seen, "exec:succeeded"));
    pos(&seen, "n:skipped");
    // A reload shows the truth.
    let e = w.execution("dia", &id).await;
    assert_eq!(e["status"], "succeeded");
    let node = |n: &str| {
        e["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["node_id"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(node("d")["output"], "A+CA");
    assert_eq!(node("b")["output"], "A", "delay passes its upstream on");
    assert_eq!(node("n")["status"], "skipped");
    // Nothing else queued.
    assert_eq!(
        w.runner(None).try_execute_next().await.unwrap(),
        Outcome::Idle
    );
}

async fn a_failed_node_skips_its_downstream_and_fails_the_execution(setup: Setup) {
    let w = World::new(setup, Duration::from_secs(30)).await;
    let closed = flowsync_testkit::free_port();
    w.flow(
        "fail",
        &[
            (
                "a",
                "http",
                json!({"url": format!("http://127.0.0.1:{closed}/x")}),
            ),
            ("b", "template", json!({"template": "after {{a}}"})),
            ("c", "template", json!({"template": "independent"})),
        ],
        &[("a", "b")],
    )
    .await;
    let mut sub = w.subscribe("fail").await;
    let id = w.started("fail").await;
    let outcome = w.runner(None).try_execute_next().await.unwrap();
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Failed)),
        "{outcome:?}"
    );
    let seen = drain(&mut sub, ended).await;
    pos(&seen, "a:failed");
    pos(&seen, "b:skipped");
    pos(&seen, "c:succeeded");
    let e = w.execution("fail", &id).await;
    assert_eq!(e["status"], "failed");
    assert!(
        e["error"].as_str().unwrap().contains("node a failed"),
        "{e}"
    );
}

async fn cancel_stops_a_running_execution(setup: Setup) {
    let w = World::new(setup, Duration::from_secs(30)).await;
    w.flow(
        "cancel",
        &[
            ("slow", "delay", json!({"ms": 600_000})),
            ("after", "template", json!({"template": "never"})),
        ],
        &[("slow", "after")],
    )
    .await;
    let mut sub = w.subscribe("cancel").await;
    let id = w.started("cancel").await;
    let runner = w.runner(None);
    let running = tokio::spawn(async move { runner.try_execute_next().await });
    drain(&mut sub, |s| s.iter().any(|x| x == "slow:running")).await;
    let r = w
        .http
        .post(format!("{}/v1/flows/cancel/executions/{id}/cancel", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let outcome = tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Cancelled)),
        "{outcome:?}"
    );
    let e = w.execution("cancel", &id).await;
    assert_eq!(e["status"], "cancelled");
    assert_eq!(e["nodes"][0]["status"], "cancelled");
    assert_eq!(e["nodes"][1]["status"], "skipped");
    // An ended execution cannot be cancelled again.
    let r = w
        .http
        .post(format!("{}/v1/flows/cancel/executions/{id}/cancel", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// A cancel stored while the last node runs, its event never sent: the runner finishes the
/// node and its `succeeded` comes second — refused, so the cancel stands in the store and
/// the runner reports it (last-writer-wins would have turned it back into `succeeded`).
async fn a_cancel_that_ends_the_execution_first_stands(setup: Setup) {
    let w = World::new(setup, Duration::from_secs(30)).await;
    let (_sub, id, outcome) = cancel_in_the_store_alone(&w, "race", 1000).await;
    let outcome = outcome.await;
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Cancelled)),
        "{outcome:?}"
    );
    let e = w.execution("race", &id).await;
    assert_eq!(e["status"], "cancelled", "{e}");
}

/// The cancel's event never reaches the runner (here: stored without one), but its stream
/// reports a gap — the runner asks the store and stops the node.
async fn a_cancel_lost_in_a_gap_of_the_runners_stream_still_stops_the_node(setup: Setup) {
    let w = World::new(setup, Duration::from_secs(30)).await;
    let (_sub, id, outcome) = cancel_in_the_store_alone(&w, "gap", 600_000).await;
    let flow: flowsync_protocol::FlowId = "gap".parse().unwrap();
    // The bus loses the flow's history: the next event opens a new epoch, a gap to every
    // subscriber.
    w.backends.bus.drop_history(&flow).await.unwrap();
    w.backends
        .bus
        .publish(&flowsync_protocol::Event {
            body: EventBody::LogStream(flowsync_protocol::LogStream {
                execution_id: "other".parse().unwrap(),
                node_id: "n".parse().unwrap(),
                index: 0,
                chunk: "unrelated".into(),
                done: false,
            }),
            flow_id: flow,
            seq: None,
            ts: chrono::Utc::now(),
            actor: flowsync_protocol::Actor::system(),
            traceparent: None,
        })
        .await
        .unwrap();
    let outcome = outcome.await;
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Cancelled)),
        "{outcome:?}"
    );
    let e = w.execution("gap", &id).await;
    assert_eq!(e["nodes"][0]["status"], "cancelled", "{e}");
}

async fn a_dead_runners_job_is_finished_by_another_without_rerunning_finished_nodes(setup: Setup) {
    let w = World::new(setup, Duration::from_millis(500)).await;
    w.flow(
        "crash",
        &[
            ("first", "template", json!({"template": "done once"})),
            ("second", "delay", json!({"ms": 1500})),
        ],
        &[("first", "second")],
    )
    .await;
    let mut sub = w.subscribe("crash").await;
    let id = w.started("crash").await;
    let doomed = w.runner(None);
    let dying = tokio::spawn(async move { doomed.try_execute_next().await });
    let before = drain(&mut sub, |s| s.iter().any(|x| x == "second:running")).await;
    dying.abort(); // the runner dies mid-job: no ack, no more touches
    let _ = dying.await;
    // The survivor gets the job once it has been idle for the queue's idle timeout.
    let survivor = w.runner(None);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let outcome = loop {
        match survivor.try_execute_next().await.unwrap() {
            Outcome::Idle => assert!(tokio::time::Instant::now() < deadline, "never reclaimed"),
            finished => break finished,
        }
    };
    let seen = drain(&mut sub, ended).await;
    assert!(
        matches!(outcome, Outcome::Finished(_, ExecutionStatus::Succeeded)),
        "{outcome:?}"
    );
    let all: Vec<&String> = before.iter().chain(&seen).collect();
    assert_eq!(
        all.iter().filter(|s| **s == "first:running").count(),
        1,
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|s| **s == "second:succeeded").count(),
        1,
        "{all:?}"
    );
    assert_eq!(w.execution("crash", &id).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_node_streams_its_tokens_as_ordered_log_chunks() {
    let w = World::new(Setup::Embedded, Duration::from_secs(30)).await;
    let url = flowsync_testkit::ChatStub::start(["Hel", "lo", ", wor", "ld"]).url;
    w.flow(
        "llm",
        &[
            ("topic", "template", json!({"template": "rust"})),
            ("ask", "llm", json!({"prompt": "Say hello about {{topic}}"})),
        ],
        &[("topic", "ask")],
    )
    .await;
    let mut sub = w.subscribe("llm").await;
    let id = w.started("llm").await;
    w.runner(Some(url)).try_execute_next().await.unwrap();
    let seen = drain(&mut sub, ended).await;
    let logs: Vec<&String> = seen.iter().filter(|s| s.starts_with("log:")).collect();
    assert_eq!(
        logs,
        [
            "log:ask:0:Hel:false",
            "log:ask:1:lo:false",
            "log:ask:2:, wor:false",
            "log:ask:3:ld:false",
            "log:ask:4::true"
        ]
    );
    assert!(pos(&seen, "log:ask:4::true") < pos(&seen, "ask:succeeded"));
    let e = w.execution("llm", &id).await;
    let ask = &e["nodes"][1];
    assert_eq!(ask["output"], "Hello, world");
    assert_eq!(ask["log"], "Hello, world", "the aggregated log is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_that_cannot_run_are_refused_naming_the_node() {
    let w = World::new(Setup::Embedded, Duration::from_secs(30)).await;
    w.flow(
        "cyc",
        &[("a", "template", json!({})), ("b", "template", json!({}))],
        &[("a", "b"), ("b", "a")],
    )
    .await;
    let r = w.start("cyc").await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_flow");
    assert!(["a", "b"].contains(&body["error"]["details"]["node"].as_str().unwrap()));
    w.flow("odd", &[("z", "teleport", json!({}))], &[]).await;
    let body: Value = w.start("odd").await.json().await.unwrap();
    assert_eq!(body["error"]["details"]["node"], "z");
    assert_eq!(w.start("nope").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_worker_publishes_through_the_api() {
    let w = World::new(Setup::Embedded, Duration::from_secs(30)).await;
    w.flow("ext", &[("n1", "template", json!({}))], &[]).await;
    w.flow("other", &[("n1", "template", json!({}))], &[]).await;
    let id = w.started("ext").await;
    let foreign = w.started("other").await;
    let mut sub = w.subscribe("ext").await;
    let post = |eid: &str, body: Value| {
        w.http
            .post(format!("{}/v1/flows/ext/executions/{eid}/events", w.base))
            .json(&body)
            .send()
    };
    let r = post(
        &id,
        json!({"type": "LOG_STREAM", "data": {"execution_id": id, "node_id": "n1",
        "index": 0, "chunk": "from outside", "done": false}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let r = post(
        &id,
        json!({"type": "EXECUTION_UPDATE", "data": {"execution_id": id,
        "node_id": "n1", "node_status": "succeeded", "output": "ok"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let seen = drain(&mut sub, |s| s.iter().any(|x| x == "n1:succeeded")).await;
    pos(&seen, "log:n1:0:from outside:false");
    let e = w.execution("ext", &id).await;
    assert_eq!(e["nodes"][0]["log"], "from outside");
    assert_eq!(e["nodes"][0]["output"], "ok");
    // Another flow's execution, a mismatched id, a wrong type: refused.
    let r = post(
        &foreign,
        json!({"type": "LOG_STREAM", "data": {"execution_id": foreign,
        "node_id": "n1", "index": 0, "chunk": "x", "done": false}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(
        &id,
        json!({"type": "LOG_STREAM", "data": {"execution_id": foreign,
        "node_id": "n1", "index": 0, "chunk": "x", "done": false}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(&id, json!({"type": "SYNC_CANVAS", "data": {}}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_runner_finishes_the_execution_it_runs_then_takes_no_more() {
    let world = World::new(Setup::Embedded, Duration::from_secs(30)).await;
    world
        .flow("stop", &[("wait", "delay", json!({"ms": 300}))], &[])
        .await;
    let mut sub = world.subscribe("stop").await;
    let runner = world.runner(None);
    assert!(runner.health().alive() && runner.health().step_ok());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let runner = runner.clone();
        async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        }
    });
    let first = world.started("stop").await;
    drain(&mut sub, |seen| seen.iter().any(|s| s == "wait:running")).await;
    stop.send(()).unwrap();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the runner stops")
        .unwrap();
    // Asked to stop mid-node, it finished the execution before it returned…
    assert_eq!(world.execution("stop", &first).await["status"], "succeeded");
    // …and took nothing after: a second execution waits for another runner.
    let second = world.started("stop").await;
    assert_eq!(world.execution("stop", &second).await["status"], "queued");
    assert!(runner.health().alive() && runner.health().step_ok());
}
