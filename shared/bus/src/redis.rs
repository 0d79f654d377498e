//! The Redis bus: for API, gateway and runner processes on several machines.
//!
//! Per flow, with the hash tag `{flow_id}` so all of a flow lives on one cluster slot:
//! - `flow:{<id>}:meta` — hash `epoch`, `seq`;
//! - `flow:{<id>}:events` — the history stream, entry id `<seq>-0`, fields `t` (type),
//!   `e` (the event JSON) and, when there are, `v` (a `SYNC_CANVAS`'s version) and `p`
//!   (the `traceparent`), capped at `history_len` (approximately), expiring after
//!   `history_ttl` without a publish;
//! - channel `flow:<id>` — messages `<epoch> <seq> <type> <version> <traceparent> <json>`
//!   (`-` for what an event has not: epoch and seq for ephemeral events), so subscribers
//!   need no second lookup and never parse the JSON. Messages and entries of the older
//!   form, without version and traceparent, still read (the JSON starts with `{`).
//!
//! Every key and channel is prefixed with the configured namespace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use flowsync_protocol::{Epoch, Event, EventType, FlowId};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    Bus, BusConfig, BusError, History, Message, Position, RepairStats, Replay, Signal,
    Subscription, canvas_version, encode, new_epoch, traceparent,
};

/// Atomically, for a batch of one flow's events: the next seqs (a new epoch when the meta
/// is gone), a history entry and a PUBLISH per event, the TTLs. `ARGV`: channel, max
/// length, TTL, a new epoch, max bytes, then `type, version, traceparent, json` per event
/// (`-` for an absent version or traceparent); the JSON comes without `seq` and the script
/// adds it. Returns the epoch and the first event's seq.
///
/// Bytes: the meta's `bytes` counts what was added; `MAXLEN` trimming does not subtract,
/// so it over-counts, never under. Once it passes the bound the script sums the stream
/// for the true figure and drops the oldest entries (never the newest) until under three
/// quarters of it, so the sum is taken again only after a quarter of the bound was added.
const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'bytes', 0)
end
local n = (#ARGV - 5) / 4
local first = redis.call('HINCRBY', KEYS[1], 'seq', n) - n + 1
local added = 0
for i = 0, n - 1 do
  local seq = first + i
  local kind = ARGV[6 + 4 * i]
  local version = ARGV[7 + 4 * i]
  local trace = ARGV[8 + 4 * i]
  local json = '{"seq":' .. seq .. ',' .. string.sub(ARGV[9 + 4 * i], 2)
  added = added + #json
  local entry = {'t', kind, 'e', json}
  if version ~= '-' then table.insert(entry, 'v'); table.insert(entry, version) end
  if trace ~= '-' then table.insert(entry, 'p'); table.insert(entry, trace) end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', unpack(entry))
  redis.call('PUBLISH', ARGV[1],
    epoch .. ' ' .. seq .. ' ' .. kind .. ' ' .. version .. ' ' .. trace .. ' ' .. json)
end
local max_bytes = tonumber(ARGV[5])
if redis.call('HINCRBY', KEYS[1], 'bytes', added) > max_bytes then
  local entries = redis.call('XRANGE', KEYS[2], '-', '+')
  local total = 0
  for _, entry in ipairs(entries) do total = total + #entry[2][4] end
  -- Down to three quarters of the bound, so the sum is not taken at every publish.
  local i = 1
  while total > max_bytes * 3 / 4 and i < #entries do
    total = total - #entries[i][2][4]
    redis.call('XDEL', KEYS[2], entries[i][1])
    i = i + 1
  end
  redis.call('HSET', KEYS[1], 'bytes', total)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {epoch, first}
"#;

/// Events of one flow that may wait for the flow's publisher before publishes are refused.
const MAX_QUEUED: usize = 10_000;

/// Local subscribers per flow: the subscriber task dispatches into these.
type Subs = Arc<Mutex<HashMap<FlowId, broadcast::Sender<Signal>>>>;

/// Requests waiting for the subscriber task, at most.
const CONTROL: usize = 1024;

/// Unsubscribes that did not fit in the control channel: the subscriber task sends them
/// within a second (skipping flows followed again). A set of channels, so bounded by the
/// flows a process follows.
type Overflow = Arc<Mutex<std::collections::HashSet<String>>>;

/// Requests to the subscriber task (a bounded channel: subscribes wait for room).
#[derive(Debug)]
enum Control {
    /// SUBSCRIBE the channel; answer once Redis confirmed.
    Subscribe(String, oneshot::Sender<()>),
    /// UNSUBSCRIBE the channel (its last local subscriber left).
    Unsubscribe(String),
}

/// The Redis bus. Cheap to clone; clones share the pool and the subscriber connection.
#[derive(Debug, Clone)]
pub struct RedisBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: BusConfig,
    /// Connections for publish and history (see [`Conns`]).
    conns: Conns,
    /// The publish script (EVALSHA, reloaded on NOSCRIPT by `redis::Script`).
    script: redis::Script,
    subs: Subs,
    /// To the subscriber task; dropping the bus closes it and ends the task.
    control: mpsc::Sender<Control>,
    /// Unsubscribes the channel had no room for.
    overflow: Overflow,
    stats: Arc<RepairStats>,
    /// How many times the subscriber connection has been (re)established.
    connections: watch::Receiver<u64>,
    /// Whether the subscriber connection is up and every followed flow subscribed (and
    /// told to check its history): `ping`, so `/readyz`, reports the bus down otherwise.
    subscribed: watch::Receiver<bool>,
    /// Publishes waiting per flow (group commit, see [`RedisBus::flush`]).
    queues: Mutex<HashMap<FlowId, Vec<Pending>>>,
}

/// A publish waiting for its flow's next script call.
#[derive(Debug)]
struct Pending {
    kind: EventType,
    /// A `SYNC_CANVAS`'s version.
    version: Option<u64>,
    /// The trace context, when it can travel beside the JSON.
    traceparent: Option<String>,
    /// The event JSON without `seq`.
    json: Vec<u8>,
    done: oneshot::Sender<Result<Position, BusError>>,
}

/// Most events one script call publishes (bounds the script's run time and reply).
const MAX_BATCH: usize = 256;

pub(crate) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> BusError {
    BusError::Unavailable(Arc::new(e))
}

impl RedisBus {
    /// Connects to Redis at `url` (lazily: an unreachable Redis shows on first use) and
    /// starts the subscriber task on the current tokio runtime.
    pub fn connect(url: &str, config: BusConfig) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let conns = Conns::new(client.clone(), config.pool_size);
        let subs: Subs = Arc::default();
        let (control, rx) = mpsc::channel(CONTROL);
        let overflow = Overflow::default();
        let (connected, connections) = watch::channel(0);
        let (up, subscribed) = watch::channel(false);
        tokio::spawn(run_subscriber(
            client,
            subs.clone(),
            rx,
            overflow.clone(),
            format!("{}flow:", config.namespace),
            connected,
            up,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                conns,
                script: redis::Script::new(PUBLISH_LUA),
                subs,
                control,
                overflow,
                stats: Arc::new(RepairStats::default()),
                connections,
                subscribed,
                queues: Mutex::default(),
            }),
        })
    }

    /// What subscriptions had to repair.
    pub fn repair_stats(&self) -> &RepairStats {
        &self.inner.stats
    }

    /// Counts the subscriber connection's (re)connections; changes once every flow has been
    /// re-subscribed and told to check history.
    pub fn connections(&self) -> watch::Receiver<u64> {
        self.inner.connections.clone()
    }

    fn channel(&self, flow: &str) -> String {
        format!("{}flow:{flow}", self.inner.config.namespace)
    }

    fn keys(&self, flow: &str) -> (String, String) {
        let ns = &self.inner.config.namespace;
        (
            format!("{ns}flow:{{{flow}}}:meta"),
            format!("{ns}flow:{{{flow}}}:events"),
        )
    }

    async fn conn(&self) -> Result<ConnectionManager, BusError> {
        self.inner.conns.get().await
    }

    /// Group commit: publishes the flow's queued events, up to [`MAX_BATCH`] per script
    /// call, until the queue is empty. One flush per flow at a time keeps the flow's order.
    async fn flush(self, flow: FlowId) {
        let (meta, stream) = self.keys(flow.as_str());
        let channel = self.channel(flow.as_str());
        let config = &self.inner.config;
        loop {
            let batch: Vec<Pending> = {
                let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
                let queue = queues
                    .get_mut(&flow)
                    .expect("the flushing flow has a queue");
                if queue.is_empty() {
                    queues.remove(&flow);
                    return;
                }
                let n = queue.len().min(MAX_BATCH);
                queue.drain(..n).collect()
            };
            let mut call = self.inner.script.key(&meta);
            call.key(&stream)
                .arg(&channel)
                .arg(config.history_len.max(1))
                .arg(config.history_ttl.as_secs().max(1))
                .arg(new_epoch().as_str())
                .arg(config.history_bytes);
            for p in &batch {
                call.arg(p.kind.as_str());
                match p.version {
                    Some(v) => call.arg(v),
                    None => call.arg("-"),
                };
                call.arg(p.traceparent.as_deref().unwrap_or("-"))
                    .arg(&p.json);
            }
            let result: Result<(String, u64), BusError> = match self.conn().await {
                Ok(mut conn) => call.invoke_async(&mut conn).await.map_err(unavailable),
                Err(e) => Err(e),
            };
            let epoch = result.and_then(|(epoch, first)| {
                Ok((
                    Epoch::parse(epoch).map_err(|e| BusError::Malformed(e.to_string()))?,
                    first,
                ))
            });
            for (i, p) in batch.into_iter().enumerate() {
                let _ = p.done.send(match &epoch {
                    Ok((epoch, first)) => Ok(Position {
                        epoch: epoch.clone(),
                        seq: first + i as u64,
                    }),
                    Err(e) => Err(e.clone()),
                });
            }
        }
    }

    /// Runs an idempotent command, once more if the connection turned out to be dead (a
    /// multiplexed connection learns that on use, then reconnects). Publishes are not
    /// retried here: a lost reply may hide a publish that happened.
    async fn idempotent<T, F, Fut>(&self, run: F) -> Result<T, BusError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match run(self.conn().await?).await {
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                run(self.conn().await?).await.map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }
}

/// A few multiplexed connections, used round-robin. Each pipelines the requests of every
/// task using it on one socket (one syscall for many publishes, which is what Redis spends
/// its time on otherwise), and reconnects by itself after Redis comes back. Chosen over a
/// pool (`deadpool-redis`), where each request holds a connection for a full round trip:
/// measured 57k vs 41k publishes/s on the 2-core machine.
///
/// A multiplexed connection learns that Redis went away only when a command fails on it,
/// and only then reconnects: so each connected slot is pinged every [`KEEPALIVE`], and
/// after a Redis restart it is the ping that fails and reconnects, not the first request
/// (a publish, which cannot be retried blindly, would answer `503`).
#[derive(Debug)]
struct Conns {
    client: redis::Client,
    /// Held only here: the keepalive tasks end once the bus (and this) is dropped.
    alive: Arc<()>,
    slots: Vec<tokio::sync::OnceCell<ConnectionManager>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Conns {
    fn new(client: redis::Client, n: usize) -> Self {
        Self {
            client,
            alive: Arc::new(()),
            slots: (0..n.max(1))
                .map(|_| tokio::sync::OnceCell::new())
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A connection; the first use of a slot connects it and starts its keepalive.
    async fn get(&self) -> Result<ConnectionManager, BusError> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.slots.len();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        self.slots[i]
            .get_or_try_init(|| async {
                let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
                tokio::spawn(keepalive(conn.clone(), Arc::downgrade(&self.alive)));
                Ok::<_, redis::RedisError>(conn)
            })
            .await
            .cloned()
            .map_err(unavailable)
    }
}

/// How often a pooled connection is pinged.
pub(crate) const KEEPALIVE: Duration = Duration::from_millis(500);

/// Pings `conn` until its owner is dropped (`alive` can no longer be upgraded), so a
/// connection that broke while Redis was away is replaced before a request needs it.
pub(crate) async fn keepalive(mut conn: ConnectionManager, alive: std::sync::Weak<()>) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            return;
        }
        let _ = redis::cmd("PING").query_async::<()>(&mut conn).await;
    }
}

/// Unsubscribes the flow when its last local subscriber goes.
struct Guard {
    flow: FlowId,
    channel: String,
    subs: Subs,
    control: mpsc::Sender<Control>,
    overflow: Overflow,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if subs
            .get(&self.flow)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            subs.remove(&self.flow);
            let unsubscribe = Control::Unsubscribe(std::mem::take(&mut self.channel));
            if let Err(mpsc::error::TrySendError::Full(Control::Unsubscribe(channel))) =
                self.control.try_send(unsubscribe)
            {
                self.overflow
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(channel);
            }
        }
    }
}

#[async_trait]
impl History for RedisBus {
    async fn history(
        &self,
        flow: &FlowId,
        epoch: &Epoch,
        after: u64,
        limit: usize,
    ) -> Result<Replay, BusError> {
        let (meta, stream) = self.keys(flow.as_str());
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hget(&meta, "epoch")
            .hget(&meta, "seq")
            .cmd("XRANGE")
            .arg(&stream)
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1));
        let (current, head, entries): (Option<String>, Option<u64>, Vec<Entry>) = self
            .idempotent(|mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let head = head.unwrap_or(0);
        if current.as_deref() != Some(epoch.as_str()) || after > head {
            return Ok(Replay::Gone);
        }
        if after == head || limit == 0 {
            return Ok(Replay::Events(vec![]));
        }
        let mut events = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let seq = id
                .split_once('-')
                .and_then(|(s, _)| s.parse().ok())
                .ok_or_else(|| BusError::Malformed(format!("stream entry id {id}")))?;
            events.push(Arc::new(entry_message(
                Position {
                    epoch: epoch.clone(),
                    seq,
                },
                fields,
            )?));
        }
        // The first event must follow `after` directly, or history was trimmed past it.
        if events.first().and_then(|m| m.seq()) != Some(after + 1) {
            return Ok(Replay::Gone);
        }
        Ok(Replay::Events(events))
    }

    async fn head(&self, flow: &FlowId) -> Result<Option<Position>, BusError> {
        let (meta, _) = self.keys(flow.as_str());
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&meta).arg("epoch").arg("seq");
        let (epoch, seq): (Option<String>, Option<u64>) = self
            .idempotent(|mut c| {
                let cmd = cmd.clone();
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        match (epoch, seq) {
            (Some(epoch), Some(seq)) if seq > 0 => Ok(Some(Position {
                epoch: Epoch::parse(epoch).map_err(|e| BusError::Malformed(e.to_string()))?,
                seq,
            })),
            _ => Ok(None),
        }
    }

    async fn drop_history(&self, flow: &FlowId) -> Result<(), BusError> {
        let (meta, stream) = self.keys(flow.as_str());
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&meta).arg(&stream);
        self.idempotent(|mut c| {
            let cmd = cmd.clone();
            async move { cmd.query_async::<()>(&mut c).await }
        })
        .await
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, event: &Event) -> Result<Position, BusError> {
        self.publish_all(std::slice::from_ref(event))
            .await
            .map(|mut p| p.remove(0))
    }

    /// Queues every event at once (in order, under one lock) for the flows' group commits,
    /// then waits for all: one script call can carry a whole run of a writer's chunks.
    async fn publish_all(&self, events: &[Event]) -> Result<Vec<Position>, BusError> {
        let mut waiting = Vec::with_capacity(events.len());
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            if !event.body.is_sequenced() {
                return Err(BusError::Invalid(format!(
                    "{} is not a sequenced event",
                    event.event_type()
                )));
            }
            let (done, result) = oneshot::channel();
            waiting.push(result);
            pending.push((
                event.flow_id.clone(),
                Pending {
                    kind: event.event_type(),
                    version: canvas_version(event),
                    traceparent: traceparent(event).map(str::to_owned),
                    json: encode(event)?,
                    done,
                },
            ));
        }
        let mut leads = vec![];
        {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            // Back-pressure: a flow whose publishes outrun Redis refuses more (a 503 at the
            // API) rather than queue without bound.
            for (flow, _) in &pending {
                if queues.get(flow).is_some_and(|q| q.len() >= MAX_QUEUED) {
                    return Err(BusError::unavailable(format!(
                        "{MAX_QUEUED} events of flow {flow} wait to be published"
                    )));
                }
            }
            for (flow, p) in pending {
                match queues.get_mut(&flow) {
                    // A flush of this flow is under way: it will take this event too.
                    Some(queue) => queue.push(p),
                    None => {
                        queues.insert(flow.clone(), vec![p]);
                        leads.push(flow);
                    }
                }
            }
        }
        for flow in leads {
            // In its own task, so a caller that gives up cannot strand the queue.
            tokio::spawn(self.clone().flush(flow));
        }
        let mut positions = Vec::with_capacity(waiting.len());
        for result in waiting {
            positions.push(match result.await {
                Ok(Ok(position)) => position,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(BusError::Closed),
            });
        }
        Ok(positions)
    }

    async fn publish_ephemeral(&self, event: &Event) -> Result<(), BusError> {
        let mut payload = format!(
            "- - {} - {} ",
            event.event_type(),
            traceparent(event).unwrap_or("-")
        )
        .into_bytes();
        payload.extend(encode(event)?);
        redis::cmd("PUBLISH")
            .arg(self.channel(event.flow_id.as_str()))
            .arg(payload)
            .query_async::<()>(&mut self.conn().await?)
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self, flow: &FlowId) -> Result<Subscription, BusError> {
        let rx = self
            .inner
            .subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(flow.clone())
            .or_insert_with(|| broadcast::channel(self.inner.config.channel_capacity.max(1)).0)
            .subscribe();
        let channel = self.channel(flow.as_str());
        let guard = Guard {
            flow: flow.clone(),
            channel: channel.clone(),
            subs: self.inner.subs.clone(),
            control: self.inner.control.clone(),
            overflow: self.inner.overflow.clone(),
        };
        // Every subscriber waits for Redis to confirm (SUBSCRIBE is idempotent), so none
        // reads history before live delivery is on.
        let (ack, confirmed) = oneshot::channel();
        let asked = async {
            self.inner
                .control
                .send(Control::Subscribe(channel, ack))
                .await
                .map_err(|_| BusError::Closed)?;
            Ok::<_, BusError>(confirmed.await)
        };
        let refused = match tokio::time::timeout(self.inner.config.subscribe_timeout, asked).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Err(e)) => Some(e),
            _ => Some(BusError::unavailable(format!(
                "Redis did not confirm the subscription within {:?}",
                self.inner.config.subscribe_timeout
            ))),
        };
        if let Some(e) = refused {
            // The receiver first, so the guard sees the flow unfollowed and unsubscribes.
            drop(rx);
            drop(guard);
            return Err(e);
        }
        let mut subscription = Subscription::new(
            flow.clone(),
            rx,
            Arc::new(self.clone()),
            self.inner.stats.clone(),
            Box::new(guard),
        );
        subscription.start_at_head().await?;
        Ok(subscription)
    }

    async fn ping(&self) -> Result<(), BusError> {
        if !*self.inner.subscribed.borrow() {
            return Err(BusError::unavailable(
                "the bus subscriber is not connected to Redis",
            ));
        }
        self.idempotent(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}

/// Parses `<epoch> <seq> <type> <version> <traceparent> <json>` (`-` for what is absent;
/// the older `<epoch> <seq> <type> <json>` too).
fn parse_message(payload: &[u8]) -> Result<Message, BusError> {
    let bad = || {
        BusError::Malformed(String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned())
    };
    let mut parts = payload.splitn(4, |b| *b == b' ');
    let mut part = || parts.next().ok_or_else(bad);
    let (epoch, seq, kind, rest) = (part()?, part()?, part()?, part()?);
    let (version, trace, json) = match rest.first() {
        Some(b'{') => (&b"-"[..], &b"-"[..], rest),
        _ => {
            let mut parts = rest.splitn(3, |b| *b == b' ');
            let mut part = || parts.next().ok_or_else(bad);
            (part()?, part()?, part()?)
        }
    };
    let position = match (epoch, seq) {
        (b"-", b"-") => None,
        _ => Some(Position {
            epoch: Epoch::parse(text(epoch).ok_or_else(bad)?).map_err(|_| bad())?,
            seq: text(seq).ok_or_else(bad)?.parse().map_err(|_| bad())?,
        }),
    };
    let kind: EventType = text(kind).and_then(|k| k.parse().ok()).ok_or_else(bad)?;
    Ok(Message {
        position,
        kind,
        version: match optional(version) {
            Some(v) => Some(v.parse().map_err(|_| bad())?),
            None => older_version(kind, json),
        },
        traceparent: optional(trace).map(Into::into),
        json: Bytes::copy_from_slice(json),
    })
}

/// A history entry's message from its fields `t`, `e` and, when there are, `v` and `p`.
fn entry_message(position: Position, fields: Vec<(String, Vec<u8>)>) -> Result<Message, BusError> {
    let bad = |what: &str| BusError::Malformed(format!("history entry {position}: {what}"));
    let (mut kind, mut version, mut traceparent, mut json) = (None, None, None, None);
    for (name, value) in fields {
        match name.as_str() {
            "t" => kind = text(&value).and_then(|k| k.parse::<EventType>().ok()),
            "v" => version = text(&value).and_then(|v| v.parse::<u64>().ok()),
            "p" => traceparent = text(&value).map(Into::into),
            "e" => json = Some(Bytes::from(value)),
            _ => {}
        }
    }
    let kind = kind.ok_or_else(|| bad("no known type"))?;
    let json = json.ok_or_else(|| bad("no event"))?;
    Ok(Message {
        kind,
        version: version.or_else(|| older_version(kind, &json)),
        traceparent,
        json,
        position: Some(position),
    })
}

/// A `SYNC_CANVAS` of the older form (published before messages carried it, during a
/// rolling upgrade) has its version only in its JSON.
fn older_version(kind: EventType, json: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Sync {
        data: Versioned,
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: u64,
    }
    (kind == EventType::SyncCanvas)
        .then(|| serde_json::from_slice::<Sync>(json).ok())
        .flatten()
        .map(|s| s.data.version)
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// A field that is `-` when absent.
fn optional(b: &[u8]) -> Option<&str> {
    text(b).filter(|t| *t != "-")
}

/// The one subscriber connection of this process: SUBSCRIBEs flows with local
/// subscribers, dispatches their messages, reconnects with backoff and then tells every
/// flow to check history for what it missed.
async fn run_subscriber(
    client: redis::Client,
    subs: Subs,
    mut control: mpsc::Receiver<Control>,
    overflow: Overflow,
    prefix: String,
    connected: watch::Sender<u64>,
    up: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut waiting: Vec<oneshot::Sender<()>> = vec![];
    let mut connected_before = false;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "bus subscriber cannot connect to Redis");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    c = control.recv() => match c {
                        None => return,
                        Some(Control::Subscribe(_, ack)) => {
                            // Callers that gave up (their timeout) are not kept.
                            waiting.retain(|a| !a.is_closed());
                            waiting.push(ack);
                        }
                        // Channels are subscribed from `subs` on connecting: nothing to do.
                        Some(Control::Unsubscribe(_)) => {}
                    },
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (mut sink, mut stream) = pubsub.split();
        let channels: Vec<String> = subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|f| format!("{prefix}{f}"))
            .collect();
        if !channels.is_empty() && sink.subscribe(&channels).await.is_err() {
            continue;
        }
        // A new connection follows exactly `subs`: nothing earlier needs unsubscribing.
        overflow.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for ack in waiting.drain(..) {
            let _ = ack.send(());
        }
        if connected_before {
            tracing::info!(flows = channels.len(), "bus subscriber reconnected");
            for tx in subs.lock().unwrap_or_else(|p| p.into_inner()).values() {
                let _ = tx.send(Signal::Reconnected);
            }
        }
        connected_before = true;
        connected.send_modify(|n| *n += 1);
        up.send_replace(true);
        // Unsubscribes that overflowed go out within a second.
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => dispatch(&subs, &prefix, &msg),
                    None => break,
                },
                _ = sweep.tick() => {
                    if !unsubscribe_overflow(&overflow, &subs, &prefix, &mut sink).await {
                        break;
                    }
                }
                c = control.recv() => match c {
                    None => return,
                    Some(Control::Subscribe(channel, ack)) => {
                        if sink.subscribe(&channel).await.is_ok() {
                            let _ = ack.send(());
                        } else {
                            waiting.push(ack);
                            break;
                        }
                    }
                    Some(Control::Unsubscribe(channel)) => {
                        if sink.unsubscribe(&channel).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        up.send_replace(false);
        tracing::warn!("bus subscriber lost its Redis connection");
    }
}

/// Sends the unsubscribes that did not fit in the control channel; false when the
/// connection failed.
async fn unsubscribe_overflow(
    overflow: &Overflow,
    subs: &Subs,
    prefix: &str,
    sink: &mut redis::aio::PubSubSink,
) -> bool {
    // A flow followed again since is not unsubscribed.
    let channels: Vec<String> = {
        let followed = subs.lock().unwrap_or_else(|p| p.into_inner());
        overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .filter(|c| {
                c.strip_prefix(prefix)
                    .and_then(|f| FlowId::parse(f).ok())
                    .is_none_or(|f| !followed.contains_key(&f))
            })
            .collect()
    };
    channels.is_empty() || sink.unsubscribe(&channels).await.is_ok()
}

fn dispatch(subs: &Subs, prefix: &str, msg: &redis::Msg) {
    let Some(flow) = msg.get_channel_name().strip_prefix(prefix) else {
        return;
    };
    let message = match parse_message(msg.get_payload_bytes()) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::warn!(error = %e, "dropping a malformed bus message");
            return;
        }
    };
    if let Some(tx) = subs.lock().unwrap_or_else(|p| p.into_inner()).get(flow) {
        let _ = tx.send(Signal::Message(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse() {
        let m =
            parse_message(br#"abc 7 SYNC_CANVAS 12 00-ab-cd-01 {"seq":7,"x":" a b "}"#).unwrap();
        assert_eq!(
            m.position.as_ref().map(|p| (p.epoch.as_str(), p.seq)),
            Some(("abc", 7))
        );
        assert_eq!(m.kind, EventType::SyncCanvas);
        assert_eq!(m.version, Some(12));
        assert_eq!(m.traceparent.as_deref(), Some("00-ab-cd-01"));
        assert_eq!(&m.json[..], br#"{"seq":7,"x":" a b "}"#);
        let m = parse_message(br#"- - PRESENCE - - {}"#).unwrap();
        assert_eq!((m.position, m.version, m.traceparent), (None, None, None));
        // The older form, without version and traceparent.
        let m = parse_message(br#"abc 8 LOG_STREAM {"seq":8}"#).unwrap();
        assert_eq!((m.kind, m.version), (EventType::LogStream, None));
        assert_eq!(&m.json[..], br#"{"seq":8}"#);
        let m = parse_message(br#"abc 9 SYNC_CANVAS {"seq":9,"data":{"version":4}}"#).unwrap();
        assert_eq!(m.version, Some(4), "read from the JSON");
        assert!(parse_message(b"abc 7 SYNC_CANVAS").is_err());
        assert!(parse_message(b"abc 7 X {}").is_err());
        assert!(parse_message(b"a-b 7 READY {}").is_err());
        assert!(parse_message(b"abc x READY {}").is_err());
        assert!(parse_message(b"abc 7 SYNC_CANVAS x - {}").is_err());
    }
}
