//! The execution job queue (DESIGN §6): the API enqueues one job per execution; runners
//! take them, keep them claimed while they run, and acknowledge them when done. A job whose
//! runner died (not acknowledged, not touched for `idle_timeout`) is handed to another
//! runner, which finishes it.
//!
//! Redis: a stream `jobs` with a consumer group `runners` (`XREADGROUP`, `XAUTOCLAIM` for
//! idle jobs, `XACK`). In process: a queue and a pending map, for the one-binary mode.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowsync_protocol::{ExecutionId, FlowId};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::BusError;

/// Job queue settings.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// A taken job not touched for this long, in seconds, is given to another runner (its
    /// runner is presumed dead). Runners touch their jobs well within it.
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub idle_timeout: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// One execution to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The queue's id of the job (acknowledge and touch with it).
    pub id: String,
    /// The flow.
    pub flow: FlowId,
    /// The execution.
    pub execution: ExecutionId,
    /// Whether another runner had it before (it died): already finished nodes are kept.
    pub reclaimed: bool,
}

/// The queue of execution jobs.
#[async_trait]
pub trait JobQueue: Send + Sync + fmt::Debug {
    /// Adds a job; it is handed to exactly one runner at a time until acknowledged.
    async fn enqueue(&self, flow: &FlowId, execution: &ExecutionId) -> Result<(), BusError>;

    /// The next job for `runner`: one left idle by a dead runner first, else a new one,
    /// waiting up to `wait`. `None` when there is none.
    async fn take(&self, runner: &str, wait: Duration) -> Result<Option<Job>, BusError>;

    /// Keeps a taken job from being handed to another runner for another idle timeout.
    async fn touch(&self, runner: &str, job: &Job) -> Result<(), BusError>;

    /// The job is done (whatever its outcome): it is never handed out again.
    async fn ack(&self, job: &Job) -> Result<(), BusError>;

    /// True once after this queue found itself lost and made it anew (Redis restarted
    /// without its data): jobs queued before are gone, and the executions the store still
    /// has queued must be queued again (`flowsync_runner::requeue`).
    fn take_lost(&self) -> bool {
        false
    }

    /// The executions of the jobs in the queue now (taken or not), so that queuing again
    /// after a loss adds only what is missing.
    async fn queued_executions(&self) -> Result<HashSet<ExecutionId>, BusError> {
        Ok(HashSet::new())
    }
}

/// The in-process queue.
#[derive(Debug, Clone)]
pub struct MemoryJobs {
    inner: Arc<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    idle_timeout: Duration,
    state: Mutex<MemoryState>,
    /// Wakes a waiting `take` on `enqueue`.
    added: Notify,
}

#[derive(Debug, Default)]
struct MemoryState {
    next_id: u64,
    /// Jobs not handed out yet.
    ready: VecDeque<Job>,
    /// Jobs handed out and not acknowledged, with when they were last touched.
    taken: HashMap<String, (Job, Instant)>,
}

impl MemoryJobs {
    /// An empty queue.
    pub fn new(config: &JobsConfig) -> Self {
        Self {
            inner: Arc::new(MemoryInner {
                idle_timeout: config.idle_timeout,
                state: Mutex::default(),
                added: Notify::new(),
            }),
        }
    }

    fn try_take(&self) -> Option<Job> {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let idle = state
            .taken
            .values()
            .filter(|(_, touched)| now.duration_since(*touched) >= self.inner.idle_timeout)
            .map(|(job, _)| job.id.clone())
            .min();
        if let Some(id) = idle {
            let (mut job, _) = state.taken.remove(&id).expect("present");
            job.reclaimed = true;
            state.taken.insert(id, (job.clone(), now));
            return Some(job);
        }
        let job = state.ready.pop_front()?;
        state.taken.insert(job.id.clone(), (job.clone(), now));
        Some(job)
    }
}

#[async_trait]
impl JobQueue for MemoryJobs {
    async fn enqueue(&self, flow: &FlowId, execution: &ExecutionId) -> Result<(), BusError> {
        {
            let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            state.next_id += 1;
            let job = Job {
                id: format!("{:020}", state.next_id),
                flow: flow.clone(),
                execution: execution.clone(),
                reclaimed: false,
            };
            state.ready.push_back(job);
        }
        self.inner.added.notify_one();
        Ok(())
    }

    async fn take(&self, _runner: &str, wait: Duration) -> Result<Option<Job>, BusError> {
        let deadline = Instant::now() + wait;
        loop {
            let added = self.inner.added.notified();
            if let Some(job) = self.try_take() {
                return Ok(Some(job));
            }
            // Idle jobs become available by time alone: look again at least that often.
            let next_look = (Instant::now() + self.inner.idle_timeout).min(deadline);
            if tokio::time::timeout_at(next_look, added).await.is_err() && next_look >= deadline {
                return Ok(self.try_take());
            }
        }
    }

    async fn touch(&self, _runner: &str, job: &Job) -> Result<(), BusError> {
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, touched)) = state.taken.get_mut(&job.id) {
            *touched = Instant::now();
        }
        Ok(())
    }

    async fn ack(&self, job: &Job) -> Result<(), BusError> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .taken
            .remove(&job.id);
        Ok(())
    }
}

/// The Redis queue: stream `<namespace>jobs`, consumer group `runners`.
#[derive(Clone)]
pub struct RedisJobs {
    /// Short commands (enqueue, ack, claim), multiplexed.
    conn: redis::aio::ConnectionManager,
    /// Blocking reads: their own connection, so they hold up nobody else's commands.
    blocking: Arc<tokio::sync::Mutex<redis::aio::ConnectionManager>>,
    key: String,
    idle_timeout: Duration,
    /// The consumer group is known to exist (cleared when Redis says it does not).
    group: Arc<std::sync::atomic::AtomicBool>,
    /// This queue created the group: whatever was queued before is lost.
    lost: Arc<std::sync::atomic::AtomicBool>,
    /// Ends the short commands' connection keepalive when the last clone goes.
    _alive: Arc<()>,
}

impl fmt::Debug for RedisJobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisJobs").field("key", &self.key).finish()
    }
}

const GROUP: &str = "runners";

impl RedisJobs {
    /// A queue in Redis at `url`; the stream is created by the first enqueue, the group by
    /// the first runner's take. Its short-command connection is kept alive (pinged), so a
    /// Redis restart is noticed before a request needs it.
    pub fn connect(url: &str, namespace: &str, config: &JobsConfig) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(crate::redis::unavailable)?;
        let manager = |response: Duration| {
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(response))
                .set_number_of_retries(1)
        };
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(
            client.clone(),
            manager(Duration::from_secs(5)),
        )
        .map_err(crate::redis::unavailable)?;
        // Blocking reads wait up to a minute; the response timeout must exceed that.
        let blocking = redis::aio::ConnectionManager::new_lazy_with_config(
            client,
            manager(Duration::from_secs(75)),
        )
        .map_err(crate::redis::unavailable)?;
        let alive = Arc::new(());
        tokio::spawn(crate::redis::keepalive(
            conn.clone(),
            Arc::downgrade(&alive),
        ));
        Ok(Self {
            _alive: alive,
            conn,
            blocking: Arc::new(tokio::sync::Mutex::new(blocking)),
            key: format!("{namespace}jobs"),
            idle_timeout: config.idle_timeout,
            group: Arc::default(),
            lost: Arc::default(),
        })
    }

    /// Creates the stream and its consumer group unless known to exist. Only runners do
    /// (the API's `XADD` makes the stream): a runner that creates the group — on a fresh
    /// Redis, or one that lost its data — flags the queue lost, so the store's queued
    /// executions are queued again; one that finds it (`BUSYGROUP`) does not.
    async fn ensure_group(&self) -> Result<(), BusError> {
        use std::sync::atomic::Ordering;
        if self.group.load(Ordering::Acquire) {
            return Ok(());
        }
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match created {
            Ok(()) => self.lost.store(true, Ordering::Release),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(crate::redis::unavailable(e)),
        }
        self.group.store(true, Ordering::Release);
        Ok(())
    }

    /// Maps a Redis error; `NOGROUP` (Redis lost the group) makes the next call create it.
    fn failed(&self, e: redis::RedisError) -> BusError {
        if e.code() == Some("NOGROUP") {
            tracing::warn!(
                "the job queue's consumer group is gone (Redis lost its data); making it again"
            );
            self.group
                .store(false, std::sync::atomic::Ordering::Release);
        }
        crate::redis::unavailable(e)
    }

    /// A job from a stream entry's fields.
    fn job(id: String, fields: &HashMap<String, redis::Value>, reclaimed: bool) -> Option<Job> {
        let text = |k: &str| match fields.get(k)? {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        };
        Some(Job {
            id,
            flow: FlowId::parse(text("flow")?).ok()?,
            execution: ExecutionId::parse(text("execution")?).ok()?,
            reclaimed,
        })
    }
}

#[async_trait]
impl JobQueue for RedisJobs {
    async fn enqueue(&self, flow: &FlowId, execution: &ExecutionId) -> Result<(), BusError> {
        redis::cmd("XADD")
            .arg(&self.key)
            .arg("*")
            .arg("flow")
            .arg(flow.as_str())
            .arg("execution")
            .arg(execution.as_str())
            .query_async::<String>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(crate::redis::unavailable)
    }

    async fn take(&self, runner: &str, wait: Duration) -> Result<Option<Job>, BusError> {
        self.ensure_group().await?;
        // A dead runner's job first.
        let claimed: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(runner)
            .arg(self.idle_timeout.as_millis() as u64)
            .arg("0")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        if let Some(entry) = claimed.claimed.into_iter().next() {
            return Ok(Self::job(entry.id, &entry.map, true));
        }
        let wait = wait.min(Duration::from_secs(60));
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(runner)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(wait.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(&mut *self.blocking.lock().await)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
            .and_then(|entry| Self::job(entry.id, &entry.map, false)))
    }

    async fn touch(&self, runner: &str, job: &Job) -> Result<(), BusError> {
        // Claiming it again for the same runner resets its idle time.
        redis::cmd("XCLAIM")
            .arg(&self.key)
            .arg(GROUP)
            .arg(runner)
            .arg(0)
            .arg(&job.id)
            .arg("JUSTID")
            .query_async::<Vec<String>>(&mut self.conn.clone())
            .await
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    async fn ack(&self, job: &Job) -> Result<(), BusError> {
        redis::pipe()
            .cmd("XACK")
            .arg(&self.key)
            .arg(GROUP)
            .arg(&job.id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.key)
            .arg(&job.id)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))
    }

    fn take_lost(&self) -> bool {
        self.lost.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    async fn queued_executions(&self) -> Result<HashSet<ExecutionId>, BusError> {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(entries
            .ids
            .iter()
            .filter_map(|entry| Self::job(entry.id.clone(), &entry.map, false))
            .map(|job| job.execution)
            .collect())
    }
}
