//! One suite for both job queues: in process, and Redis (the test kit's server, a key
//! namespace per test).

use std::sync::Arc;
use std::time::Duration;

use flowsync_bus::jobs::{JobQueue, JobsConfig, MemoryJobs, RedisJobs};
use flowsync_protocol::{ExecutionId, FlowId};

const PATIENCE: Duration = Duration::from_secs(20);

async fn queues(idle: Duration) -> Vec<(&'static str, Arc<dyn JobQueue>, Arc<dyn JobQueue>)> {
    let config = JobsConfig { idle_timeout: idle };
    let memory = MemoryJobs::new(&config);
    let url = flowsync_testkit::redis().url();
    let ns = format!("{}:", flowsync_testkit::unique_name("jobs"));
    // Two handles on the Redis queue, as two runner processes would have.
    vec![
        (
            "memory",
            Arc::new(memory.clone()) as Arc<dyn JobQueue>,
            Arc::new(memory) as _,
        ),
        (
            "redis",
            Arc::new(RedisJobs::connect(&url, &ns, &config).unwrap()) as _,
            Arc::new(RedisJobs::connect(&url, &ns, &config).unwrap()) as _,
        ),
    ]
}

fn ids(n: &str) -> (FlowId, ExecutionId) {
    (FlowId::parse("f").unwrap(), ExecutionId::parse(n).unwrap())
}

#[tokio::test]
async fn jobs_are_handed_out_once_in_order_and_gone_when_acknowledged() {
    for (name, a, b) in queues(Duration::from_secs(60)).await {
        for n in ["e1", "e2", "e3"] {
            let (f, e) = ids(n);
            a.enqueue(&f, &e).await.unwrap();
        }
        let mut got = vec![];
        for runner in ["r1", "r2", "r1"] {
            let q = if runner == "r1" { &a } else { &b };
            let job = q.take(runner, PATIENCE).await.unwrap().expect("a job");
            assert!(!job.reclaimed, "{name}");
            got.push(job);
        }
        let names: Vec<&str> = got.iter().map(|j| j.execution.as_str()).collect();
        assert_eq!(names, ["e1", "e2", "e3"], "{name}");
        for job in &got {
            a.ack(job).await.unwrap();
        }
        assert_eq!(
            b.take("r2", Duration::from_millis(100)).await.unwrap(),
            None,
            "{name}: nothing left"
        );
    }
}

#[tokio::test]
async fn a_waiting_runner_is_woken_by_a_new_job() {
    for (name, a, b) in queues(Duration::from_secs(60)).await {
        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.take("r2", PATIENCE).await }
        });
        // Whether or not it is waiting yet, the job is there for it.
        let (f, e) = ids("late");
        a.enqueue(&f, &e).await.unwrap();
        let job = waiting.await.unwrap().unwrap().expect("woken with the job");
        assert_eq!(job.execution.as_str(), "late", "{name}");
    }
}

#[tokio::test]
async fn a_dead_runners_job_goes_to_another_runner_and_an_acked_one_never_does() {
    for (name, a, b) in queues(Duration::from_millis(300)).await {
        let (f, e) = ids("orphan");
        a.enqueue(&f, &e).await.unwrap();
        let first = a.take("dies", PATIENCE).await.unwrap().expect("a job");
        assert!(!first.reclaimed);
        // "dies" never touches nor acknowledges it: after the idle timeout it is handed
        // to the next runner that asks.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let second = loop {
            if let Some(job) = b
                .take("survives", Duration::from_millis(200))
                .await
                .unwrap()
            {
                break job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: never reclaimed"
            );
        };
        assert_eq!(second.execution.as_str(), "orphan", "{name}");
        assert!(second.reclaimed, "{name}");
        b.ack(&second).await.unwrap();
        // Acknowledged: not handed out again, however long it waits.
        assert_eq!(
            a.take("dies", Duration::from_millis(700)).await.unwrap(),
            None,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_runner_that_touches_its_job_keeps_it() {
    for (name, a, b) in queues(Duration::from_secs(1)).await {
        let (f, e) = ids("long");
        a.enqueue(&f, &e).await.unwrap();
        let job = a.take("busy", PATIENCE).await.unwrap().expect("a job");
        // Two and a half idle timeouts pass; touched every tenth of one, the job stays.
        for _ in 0..25 {
            a.touch("busy", &job).await.unwrap();
            assert_eq!(
                b.take("other", Duration::from_millis(100)).await.unwrap(),
                None,
                "{name}"
            );
        }
        a.ack(&job).await.unwrap();
    }
}

/// Redis restarted without its data: the runner's next takes make the consumer group
/// again (not `NOGROUP` for ever), the queue reports itself lost once — so the store's
/// queued executions are queued again — and lists what it holds, so none is queued twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_redis_lost_is_made_again_and_reported_lost_once() {
    let mut server = flowsync_testkit::RedisServer::start();
    let config = JobsConfig {
        idle_timeout: Duration::from_secs(60),
    };
    let queue = RedisJobs::connect(&server.url(), "lost:", &config).unwrap();
    let (f, e) = ids("before");
    queue.enqueue(&f, &e).await.unwrap();
    assert!(queue.take("r1", PATIENCE).await.unwrap().is_some());
    assert!(queue.take_lost(), "the first runner made the group");
    assert!(!queue.take_lost(), "reported once");
    assert_eq!(
        queue.queued_executions().await.unwrap(),
        [e.clone()].into(),
        "a taken job is still in the queue until acknowledged"
    );

    server.kill9();
    server.wipe();
    server.restart();
    let (f, late) = ids("after");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let job = loop {
        // The API's enqueue makes the stream, the take finds no group and makes it.
        let _ = queue.enqueue(&f, &late).await;
        if let Ok(Some(job)) = queue.take("r1", Duration::from_millis(100)).await {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job after the restart"
        );
    };
    assert_eq!(job.execution, late);
    assert!(queue.take_lost(), "the loss is reported");
    assert!(!queue.queued_executions().await.unwrap().contains(&e));
}
