//! Who is connected to a flow right now, across every gateway (DESIGN §3 `GET …/presence`).
//!
//! A gateway [`join`](PresenceSet::join)s each SSE connection, [`refresh`](PresenceSet::refresh)es
//! its live connections well within [`PresenceConfig::ttl`], and
//! [`leave`](PresenceSet::leave)s them when they close. An entry that is not refreshed in
//! time — its gateway died — stops being listed after the TTL, so the set heals itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowsync_protocol::{Actor, ConnectionId, FlowId};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

use crate::BusError;

/// Presence settings.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// An entry not refreshed for this long, in seconds, is no longer listed (its gateway
    /// died).
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub ttl: Duration,
    /// How often a gateway refreshes its connections, in seconds (well below `ttl`).
    #[serde_as(as = "serde_with::DurationSecondsWithFrac<f64>")]
    pub refresh: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(45),
            refresh: Duration::from_secs(15),
        }
    }
}

/// One connection of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PresenceEntry {
    /// The SSE connection (its `READY` names it).
    pub connection_id: ConnectionId,
    /// Who is behind it.
    pub actor: Actor,
    /// When it connected.
    pub since: DateTime<Utc>,
}

/// The connections of each flow, shared by every gateway and read by the API.
#[async_trait]
pub trait PresenceSet: Send + Sync + fmt::Debug {
    /// Adds (or re-adds) a connection; it is listed until it leaves or is not refreshed
    /// within the TTL.
    async fn join(&self, flow: &FlowId, entry: &PresenceEntry) -> Result<(), BusError>;

    /// Keeps connections listed for another TTL.
    async fn refresh(&self, flow: &FlowId, entries: &[PresenceEntry]) -> Result<(), BusError>;

    /// Removes a connection.
    async fn leave(&self, flow: &FlowId, connection: &ConnectionId) -> Result<(), BusError>;

    /// The flow's live connections, oldest first.
    async fn list(&self, flow: &FlowId) -> Result<Vec<PresenceEntry>, BusError>;

    /// One live connection of the flow, if it is one.
    async fn get(
        &self,
        flow: &FlowId,
        connection: &ConnectionId,
    ) -> Result<Option<PresenceEntry>, BusError>;
}

fn sorted(mut entries: Vec<PresenceEntry>) -> Vec<PresenceEntry> {
    entries.sort_by(|a, b| (a.since, &a.connection_id).cmp(&(b.since, &b.connection_id)));
    entries
}

/// A flow's connections, each with its expiry.
type Connections = HashMap<ConnectionId, (PresenceEntry, tokio::time::Instant)>;

/// Presence in process, for the one-binary mode.
#[derive(Debug, Clone, Default)]
pub struct MemoryPresence {
    ttl: Duration,
    /// Per flow, each connection with its expiry.
    flows: Arc<Mutex<HashMap<FlowId, Connections>>>,
}

impl MemoryPresence {
    /// An empty set.
    pub fn new(config: &PresenceConfig) -> Self {
        Self {
            ttl: config.ttl,
            flows: Arc::default(),
        }
    }

    fn put(&self, flow: &FlowId, entries: &[PresenceEntry]) {
        let expires = tokio::time::Instant::now() + self.ttl;
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let conns = flows.entry(flow.clone()).or_default();
        for e in entries {
            conns.insert(e.connection_id.clone(), (e.clone(), expires));
        }
    }
}

#[async_trait]
impl PresenceSet for MemoryPresence {
    async fn join(&self, flow: &FlowId, entry: &PresenceEntry) -> Result<(), BusError> {
        self.put(flow, std::slice::from_ref(entry));
        Ok(())
    }

    async fn refresh(&self, flow: &FlowId, entries: &[PresenceEntry]) -> Result<(), BusError> {
        self.put(flow, entries);
        Ok(())
    }

    async fn leave(&self, flow: &FlowId, connection: &ConnectionId) -> Result<(), BusError> {
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conns) = flows.get_mut(flow) {
            conns.remove(connection);
            if conns.is_empty() {
                flows.remove(flow);
            }
        }
        Ok(())
    }

    async fn list(&self, flow: &FlowId) -> Result<Vec<PresenceEntry>, BusError> {
        let now = tokio::time::Instant::now();
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let Some(conns) = flows.get_mut(flow) else {
            return Ok(vec![]);
        };
        conns.retain(|_, (_, expires)| *expires > now);
        Ok(sorted(conns.values().map(|(e, _)| e.clone()).collect()))
    }

    async fn get(
        &self,
        flow: &FlowId,
        connection: &ConnectionId,
    ) -> Result<Option<PresenceEntry>, BusError> {
        let now = tokio::time::Instant::now();
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        Ok(flows
            .get(flow)
            .and_then(|conns| conns.get(connection))
            .filter(|(_, expires)| *expires > now)
            .map(|(e, _)| e.clone()))
    }
}

/// Presence in Redis: per flow a hash `presence:{<flow>}` from connection id to the entry
/// and its expiry (ms since the Unix epoch). Expired fields are listed by nobody and
/// removed by the next `list`; the whole key expires when no gateway refreshes it.
#[derive(Clone)]
pub struct RedisPresence {
    conn: redis::aio::ConnectionManager,
    namespace: String,
    ttl: Duration,
    /// Ends the connection's keepalive when the last clone goes.
    _alive: std::sync::Arc<()>,
}

impl fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresence")
            .field("namespace", &self.namespace)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// What a hash field holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Expiry, ms since the Unix epoch.
    exp: i64,
    entry: PresenceEntry,
}

impl RedisPresence {
    /// Connects (lazily) to Redis at `url`; keys are prefixed with `namespace`.
    pub async fn connect(
        url: &str,
        namespace: &str,
        config: &PresenceConfig,
    ) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(crate::redis::unavailable)?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(crate::redis::unavailable)?;
        let alive = std::sync::Arc::new(());
        tokio::spawn(crate::redis::keepalive(
            conn.clone(),
            std::sync::Arc::downgrade(&alive),
        ));
        Ok(Self {
            conn,
            namespace: namespace.to_owned(),
            ttl: config.ttl,
            _alive: alive,
        })
    }

    fn key(&self, flow: &FlowId) -> String {
        format!("{}presence:{{{flow}}}", self.namespace)
    }

    async fn put(&self, flow: &FlowId, entries: &[PresenceEntry]) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let exp = Utc::now().timestamp_millis() + self.ttl.as_millis() as i64;
        let mut fields = Vec::with_capacity(entries.len());
        for entry in entries {
            let stored = serde_json::to_string(&Stored {
                exp,
                entry: entry.clone(),
            })?;
            fields.push((entry.connection_id.as_str(), stored));
        }
        let key = self.key(flow);
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, self.ttl.as_millis() as i64)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(crate::redis::unavailable)
    }
}

#[async_trait]
impl PresenceSet for RedisPresence {
    async fn join(&self, flow: &FlowId, entry: &PresenceEntry) -> Result<(), BusError> {
        self.put(flow, std::slice::from_ref(entry)).await
    }

    async fn refresh(&self, flow: &FlowId, entries: &[PresenceEntry]) -> Result<(), BusError> {
        self.put(flow, entries).await
    }

    async fn leave(&self, flow: &FlowId, connection: &ConnectionId) -> Result<(), BusError> {
        self.conn
            .clone()
            .hdel::<_, _, ()>(self.key(flow), connection.as_str())
            .await
            .map_err(crate::redis::unavailable)
    }

    async fn list(&self, flow: &FlowId) -> Result<Vec<PresenceEntry>, BusError> {
        let key = self.key(flow);
        let all: HashMap<String, String> = self
            .conn
            .clone()
            .hgetall(&key)
            .await
            .map_err(crate::redis::unavailable)?;
        let now = Utc::now().timestamp_millis();
        let (mut live, mut expired) = (vec![], vec![]);
        for (field, value) in all {
            match serde_json::from_str::<Stored>(&value) {
                Ok(s) if s.exp > now => live.push(s.entry),
                _ => expired.push(field),
            }
        }
        if !expired.is_empty() {
            // Entries of a gateway that died: nobody will remove them otherwise.
            let _: Result<(), _> = self.conn.clone().hdel(&key, expired).await;
        }
        Ok(sorted(live))
    }

    async fn get(
        &self,
        flow: &FlowId,
        connection: &ConnectionId,
    ) -> Result<Option<PresenceEntry>, BusError> {
        let stored: Option<String> = self
            .conn
            .clone()
            .hget(self.key(flow), connection.as_str())
            .await
            .map_err(crate::redis::unavailable)?;
        let now = Utc::now().timestamp_millis();
        Ok(stored
            .and_then(|s| serde_json::from_str::<Stored>(&s).ok())
            .filter(|s| s.exp > now)
            .map(|s| s.entry))
    }
}
