//! Embedded SQLite backend: the one-binary mode's store (no server needed).
//!
//! One connection per backend handle behind a mutex, used from `spawn_blocking`; several
//! handles (or processes) may open the same file: WAL mode lets readers run beside the one
//! writer, and the unique keys decide commit races exactly as in MongoDB.
//!
//! Commits share transactions: a commit that arrives while another is being written waits
//! and goes into the next transaction with every other waiting commit, of any flow, each
//! in a savepoint of its own when there are several (a lost race rolls back only its own;
//! a commit alone rolls back the transaction). One fsync then makes a
//! whole batch durable (`synchronous = FULL`), which is what lifts commits past the disk's
//! fsync rate when many flows are written at once. The write path's reads (a commit's
//! snapshot, log and op ids) are batched the same way on the second connection: one
//! thread handoff and one read transaction for every read that waited.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use flowsync_canvas::LogEntry;
use flowsync_protocol::{
    ActorId, Execution, ExecutionId, ExecutionStatus, Flow, FlowId, NodeId, NodeRun, NodeStatus,
    OpId,
};
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params, params_from_iter};
use tokio::sync::oneshot;

use crate::StoreError;
use crate::backend::{Append, Base, CommitBase, Executions, FlowLog, NodeRunUpdate, join_batches};
use crate::codec::{ended_names, from_name, json, name, parse};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS flows (
    id TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL, created_at TEXT);
CREATE TABLE IF NOT EXISTS flow_log (
    flow_id TEXT NOT NULL, version INTEGER NOT NULL, op_id TEXT NOT NULL, actor_id TEXT NOT NULL,
    undo_of INTEGER, body TEXT NOT NULL,
    PRIMARY KEY (flow_id, version), UNIQUE (flow_id, op_id));
CREATE INDEX IF NOT EXISTS flow_log_actor ON flow_log (flow_id, actor_id, version);
DROP INDEX IF EXISTS flow_log_undo;
CREATE INDEX IF NOT EXISTS flow_log_undone ON flow_log (flow_id, undo_of) WHERE undo_of IS NOT NULL;
CREATE TABLE IF NOT EXISTS checkpoints (
    flow_id TEXT NOT NULL, version INTEGER NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (flow_id, version));
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, flow_version INTEGER NOT NULL, status TEXT NOT NULL,
    error TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_flow ON executions (flow_id, created_at);
CREATE INDEX IF NOT EXISTS executions_status ON executions (status, created_at);
CREATE TABLE IF NOT EXISTS execution_nodes (
    execution_id TEXT NOT NULL, node_id TEXT NOT NULL, position INTEGER NOT NULL, status TEXT NOT NULL,
    output TEXT, error TEXT, log TEXT NOT NULL DEFAULT '', log_index INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (execution_id, node_id));
CREATE TABLE IF NOT EXISTS execution_logs (
    execution_id TEXT NOT NULL, node_id TEXT NOT NULL, first_index INTEGER NOT NULL,
    log_index INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (execution_id, node_id, first_index, log_index));
";

/// Columns that databases made before them gain at start: `(table, column, definition)`.
/// `flows.created_at` tells a flow from a new one made under the same id (a held head's
/// check); rows made before it hold `NULL` until their next commit from a read.
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    ("execution_nodes", "log_index", "INTEGER NOT NULL DEFAULT 0"),
    ("flows", "created_at", "TEXT"),
];

/// WAL pages after which a commit copies the log back into the database (SQLite's default
/// is 1,000). A checkpoint writes each page the log holds once, however often commits
/// rewrote it, and fsyncs the database: with many flows written at once a commit dirties
/// a few index pages per flow, so 1,000 pages meant a checkpoint every few dozen commits,
/// and the writer spent more time copying pages than committing (100 flows, paired runs:
/// 16.0–17.5k ops/s at 1,000 pages, 21.3–24.4k at 10,000; BENCHMARKS.md "Ops"). The log
/// file grows to about 40 MiB (4 KiB pages) and is reused from its start after each
/// checkpoint.
const WAL_CHECKPOINT_PAGES: i64 = 10_000;

/// The SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteBackend {
    /// The connection; rusqlite is synchronous, so calls run on the blocking pool.
    conn: Arc<Mutex<Connection>>,
    /// A second connection for the write path's reads (snapshot, log, op ids): in WAL mode
    /// they need not wait behind a transaction being written.
    reader: Arc<Mutex<Connection>>,
    /// Commits waiting for the next shared transaction.
    commits: Arc<Batches<PendingCommit, Append>>,
    /// Commit bases waiting for the next shared read.
    bases: Arc<Batches<PendingBase, Option<CommitBase>>>,
}

/// Jobs for one connection, run in batches on the blocking pool: a job that arrives while
/// a batch runs waits for the next one, so a burst of jobs (commits or reads of many
/// flows) costs one thread handoff and one transaction, not one of each per job.
#[derive(Debug)]
struct Batches<J, T> {
    /// Waiting jobs with where their results go, and whether a blocking task drains them.
    state: Mutex<(Vec<Job<J, T>>, bool)>,
}

/// A job and where its result goes.
type Job<J, T> = (J, oneshot::Sender<Result<T, StoreError>>);

impl<J, T> Default for Batches<J, T> {
    fn default() -> Self {
        Self {
            state: Mutex::new((Vec::new(), false)),
        }
    }
}

impl<J: Send + 'static, T: Send + 'static> Batches<J, T> {
    /// Queues `job` and waits for its result. When no batch runs, starts a blocking task
    /// that hands `run` every waiting job, batch after batch, until none wait; `run`
    /// answers each job.
    async fn run(
        self: &Arc<Self>,
        job: J,
        run: impl Fn(Vec<Job<J, T>>) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, result) = oneshot::channel();
        let lead = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.0.push((job, done));
            !std::mem::replace(&mut state.1, true)
        };
        if lead {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                loop {
                    let batch = {
                        let mut state = this.state.lock().unwrap_or_else(|p| p.into_inner());
                        if state.0.is_empty() {
                            state.1 = false;
                            return;
                        }
                        std::mem::take(&mut state.0)
                    };
                    // Should `run` panic, its batch's waiters see their senders dropped
                    // and the jobs queued meanwhile still run.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(batch)));
                }
            });
        }
        result
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }
}

/// One flow's commit, serialised by its caller.
#[derive(Debug)]
struct PendingCommit {
    flow: String,
    /// `(version, op_id, actor_id, undo_of, body)` per entry.
    rows: Vec<(i64, String, String, Option<i64>, String)>,
    /// The snapshot's version, body and creation time.
    version: i64,
    body: String,
    created_at: String,
    from_version: i64,
    /// The flow must be exactly at `from_version` ([`Base::Held`]).
    held: bool,
    checkpoint: bool,
}

/// One commit's read of its flow ([`FlowLog::commit_base`]).
#[derive(Debug)]
struct PendingBase {
    flow: FlowId,
    op_ids: Vec<OpId>,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database file at `path`. Commits are fsynced
    /// (`synchronous = FULL`): an acknowledged op survives a power loss.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(Duration::from_secs(10))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            commits: Arc::default(),
            bases: Arc::default(),
        })
    }

    /// Writes a batch of commits in one transaction.
    fn write_commits(conn: &Mutex<Connection>, batch: Vec<Job<PendingCommit, Append>>) {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut results = Vec::with_capacity(batch.len());
        let written = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            // A commit alone needs no savepoint (SQLite copies every page it first touches
            // inside one): a lost race rolls the whole transaction back instead.
            let alone = batch.len() == 1;
            for (commit, _) in &batch {
                results.push(write_commit(&tx, commit, !alone)?);
            }
            if alone && results[0] == Append::Race {
                tx.rollback()
            } else {
                tx.commit()
            }
        })();
        drop(conn);
        match written {
            Ok(()) => {
                for ((_, done), result) in batch.into_iter().zip(results) {
                    let _ = done.send(Ok(result));
                }
            }
            Err(e) => fail(batch, &e),
        }
    }

    /// Reads a batch of commit bases in one read transaction.
    fn read_bases(conn: &Mutex<Connection>, batch: Vec<Job<PendingBase, Option<CommitBase>>>) {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return fail(batch, &e),
        };
        for (base, done) in batch {
            let _ = done.send(commit_base(&tx, &base.flow, &base.op_ids));
        }
        // Read only: ending it cannot lose anything.
        let _ = tx.commit();
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.conn.clone(), f).await
    }

    /// Runs a read-only `f` with the reading connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        Self::on(self.reader.clone(), f).await
    }

    async fn on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(Box::new(e)))?
    }
}

/// Answers every job of a batch whose transaction failed with `e`.
fn fail<J, T>(batch: Vec<Job<J, T>>, e: &rusqlite::Error) {
    let message = e.to_string();
    for (_, done) in batch {
        let _ = done.send(Err(StoreError::Unavailable(message.clone().into())));
    }
}

/// One commit, in a savepoint of its own when others share its transaction: its entries,
/// then (when they won) its snapshot and checkpoint. A taken version or op id rolls back
/// its savepoint, or is left to the caller to roll back with the transaction.
fn write_commit(
    tx: &rusqlite::Transaction<'_>,
    c: &PendingCommit,
    savepoint: bool,
) -> Result<Append, rusqlite::Error> {
    if savepoint {
        tx.prepare_cached("SAVEPOINT one_commit")?.execute([])?;
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO flow_log (flow_id, version, op_id, actor_id, undo_of, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (version, op_id, actor, undo_of, body) in &c.rows {
        match insert.execute(params![c.flow, version, op_id, actor, undo_of, body]) {
            Ok(_) => {}
            Err(e) if is_constraint(&e) => return lose(tx, savepoint),
            Err(e) => return Err(e),
        }
    }
    // Zero rows: a later writer already folded these entries (DESIGN §4 step 4) — or, for
    // a held head, the flow moved, went, or is a new one under the same id since this
    // process committed it: the log rows just written are rolled back, and the commit is
    // made again from a read.
    let advance = if c.held {
        "UPDATE flows SET version = ?1, body = ?2, created_at = ?5 WHERE id = ?3 AND version = ?4 AND created_at = ?5"
    } else {
        "UPDATE flows SET version = ?1, body = ?2, created_at = ?5 WHERE id = ?3 AND version = ?4"
    };
    let advanced = tx.prepare_cached(advance)?.execute(params![
        c.version,
        c.body,
        c.flow,
        c.from_version,
        c.created_at
    ])?;
    if c.held && advanced == 0 {
        return lose(tx, savepoint);
    }
    if c.checkpoint {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO checkpoints (flow_id, version, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![c.flow, c.version, c.body])?;
    }
    if savepoint {
        tx.prepare_cached("RELEASE one_commit")?.execute([])?;
    }
    Ok(Append::Done)
}

/// A commit that lost the race: its savepoint rolled back, or without one the whole
/// transaction left for the caller to roll back.
fn lose(tx: &rusqlite::Transaction<'_>, savepoint: bool) -> Result<Append, rusqlite::Error> {
    if savepoint {
        tx.execute_batch("ROLLBACK TO one_commit; RELEASE one_commit")?;
    }
    Ok(Append::Race)
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(StoreError::corrupt)
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

fn entries(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<LogEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let bodies = stmt
        .query_map(args, |row| row.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    bodies.iter().map(|b| parse(b)).collect()
}

/// The flow's snapshot.
fn snapshot(conn: &Connection, flow: &FlowId) -> Result<Option<Flow>, StoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM flows WHERE id = ?1")?
        .query_row([flow.as_str()], |r| r.get(0))
        .optional()?;
    body.as_deref().map(parse).transpose()
}

/// A commit's read of its flow: the snapshot, the log past it and the entries of `op_ids`,
/// in the caller's read transaction (the log read continues the snapshot read).
fn commit_base(
    tx: &rusqlite::Transaction<'_>,
    flow: &FlowId,
    op_ids: &[OpId],
) -> Result<Option<CommitBase>, StoreError> {
    let Some(snapshot) = snapshot(tx, flow)? else {
        return Ok(None);
    };
    let log = log(tx, flow, snapshot.version, None, None)?;
    let known = entries_by_op_id(tx, flow, op_ids)?;
    Ok(Some(CommitBase {
        snapshot,
        log,
        known,
    }))
}

/// The log read of [`log`].
const LOG: &str = "SELECT body FROM flow_log WHERE flow_id = ?1 AND version > ?2 AND version <= ?3 ORDER BY version LIMIT +?4";

/// Log entries with `after < version ≤ upto`, in version order, at most `limit`.
///
/// Every bound limit in this file is written `LIMIT +?n`: with a bare `LIMIT ?n` SQLite's
/// planner takes the bound value into account, so each new binding re-prepares the cached
/// statement (it made the write path's log read ~3× dearer); `+?n` is an expression,
/// planned once.
fn log(
    conn: &Connection,
    flow: &FlowId,
    after: u64,
    upto: Option<u64>,
    limit: Option<usize>,
) -> Result<Vec<LogEntry>, StoreError> {
    entries(
        conn,
        LOG,
        params![
            flow.as_str(),
            after as i64,
            upto.map_or(i64::MAX, |u| u as i64),
            limit.map_or(-1, |l| l as i64)
        ],
    )
}

/// The logged entries of these op ids.
fn entries_by_op_id(
    conn: &Connection,
    flow: &FlowId,
    op_ids: &[OpId],
) -> Result<Vec<LogEntry>, StoreError> {
    let values = op_ids.iter().map(|o| Value::Text(o.to_string()));
    entries_in(conn, flow, "op_id", values.collect())
}

/// The flow's log entries whose `column` (a name of this file's, never input) is one of
/// `values`.
fn entries_in(
    conn: &Connection,
    flow: &FlowId,
    column: &str,
    values: Vec<Value>,
) -> Result<Vec<LogEntry>, StoreError> {
    if values.is_empty() {
        return Ok(vec![]);
    }
    let sql = format!(
        "SELECT body FROM flow_log WHERE flow_id = ? AND {column} IN ({})",
        placeholders(values.len())
    );
    let args = std::iter::once(Value::Text(flow.to_string())).chain(values);
    entries(conn, &sql, params_from_iter(args))
}

/// The read of which of `n` versions were undone. Only `undo` entries are in the index it
/// reads (`flow_log_undone`, partial): the other ops, nearly all of them, cost no page of
/// it when written.
fn undone_among(n: usize) -> String {
    format!(
        "SELECT undo_of FROM flow_log WHERE flow_id = ? AND undo_of IS NOT NULL AND undo_of IN ({})",
        placeholders(n)
    )
}

/// `?, ?, …` for an `IN` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The arguments of `WHERE flow_id = ? AND … IN (?, …)` over versions.
fn flow_and_versions(flow: &FlowId, versions: &[u64]) -> Vec<Value> {
    std::iter::once(Value::Text(flow.to_string()))
        .chain(versions.iter().map(|v| Value::Integer(*v as i64)))
        .collect()
}

fn load_execution(conn: &Connection, id: &str) -> Result<Option<Execution>, StoreError> {
    let head = conn
        .prepare_cached("SELECT flow_id, flow_version, status, error, created_at, updated_at FROM executions WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .optional()?;
    let Some((flow_id, flow_version, status, error, created_at, updated_at)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT node_id, status, output, error, log, log_index FROM execution_nodes WHERE execution_id = ?1 ORDER BY position",
    )?;
    let rows = stmt
        .query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // A node's streamed text: what it was created with, then its saved batches in order.
    let mut saved: std::collections::HashMap<String, Vec<(u64, u64, String)>> = Default::default();
    let mut stmt = conn.prepare_cached(
        "SELECT node_id, first_index, log_index, text FROM execution_logs WHERE execution_id = ?1 \
         ORDER BY node_id, first_index, log_index DESC",
    )?;
    let mut batches = stmt.query([id])?;
    while let Some(r) = batches.next()? {
        saved.entry(r.get(0)?).or_default().push((
            r.get::<_, i64>(1)? as u64,
            r.get::<_, i64>(2)? as u64,
            r.get(3)?,
        ));
    }
    let nodes = rows
        .into_iter()
        .map(|(node_id, status, output, error, mut log, mut log_index)| {
            if let Some(batches) = saved.remove(&node_id) {
                let mut index = log_index as u64;
                join_batches(
                    &mut log,
                    &mut index,
                    batches.iter().map(|(f, e, t)| (*f, *e, t.as_str())),
                );
                log_index = index as i64;
            }
            Ok(NodeRun {
                node_id: NodeId::parse(node_id).map_err(StoreError::corrupt)?,
                status: from_name::<NodeStatus>(&status)?,
                output: output.as_deref().map(parse).transpose()?,
                error,
                log,
                log_index: log_index as u64,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(Execution {
        id: ExecutionId::parse(id).map_err(StoreError::corrupt)?,
        flow_id: FlowId::parse(flow_id).map_err(StoreError::corrupt)?,
        flow_version: flow_version as u64,
        status: from_name(&status)?,
        error,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
        nodes,
    }))
}

#[async_trait]
impl FlowLog for SqliteBackend {
    async fn init(&self) -> Result<(), StoreError> {
        self.run(|c| {
            c.execute_batch(SCHEMA)?;
            for (table, column, definition) in ADDED_COLUMNS {
                let present = c
                    .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
                    .exists([table, column])?;
                if !present {
                    c.execute_batch(&format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                    ))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn insert_flow(&self, flow: &Flow) -> Result<(), StoreError> {
        let (id, body, created_at) = (flow.id.clone(), json(flow)?, time(flow.created_at));
        self.run(move |c| {
            let tx = c.transaction()?;
            let exists = tx
                .query_row("SELECT 1 FROM flows WHERE id = ?1", [id.as_str()], |_| {
                    Ok(())
                })
                .optional()?
                .is_some();
            if exists {
                return Err(StoreError::FlowExists(id));
            }
            tx.execute("DELETE FROM flow_log WHERE flow_id = ?1", [id.as_str()])?;
            tx.execute("DELETE FROM checkpoints WHERE flow_id = ?1", [id.as_str()])?;
            tx.execute(
                "INSERT INTO flows (id, version, body, created_at) VALUES (?1, 0, ?2, ?3)",
                params![id.as_str(), body, created_at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn snapshot(&self, flow: &FlowId) -> Result<Option<Flow>, StoreError> {
        let id = flow.clone();
        self.read(move |c| snapshot(c, &id)).await
    }

    async fn list_snapshots(
        &self,
        after: Option<&FlowId>,
        limit: usize,
    ) -> Result<Vec<Flow>, StoreError> {
        let after = after.map(|a| a.to_string()).unwrap_or_default();
        self.run(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT body FROM flows WHERE id > ?1 ORDER BY id LIMIT +?2")?;
            let bodies = stmt
                .query_map(params![after, limit as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies.iter().map(|b| parse(b)).collect()
        })
        .await
    }

    async fn delete_flow(&self, flow: &FlowId) -> Result<bool, StoreError> {
        let id = flow.clone();
        self.run(move |c| {
            let tx = c.transaction()?;
            let deleted = tx.execute("DELETE FROM flows WHERE id = ?1", [id.as_str()])? > 0;
            tx.execute("DELETE FROM flow_log WHERE flow_id = ?1", [id.as_str()])?;
            tx.execute("DELETE FROM checkpoints WHERE flow_id = ?1", [id.as_str()])?;
            tx.execute(
                "DELETE FROM execution_nodes WHERE execution_id IN (SELECT id FROM executions WHERE flow_id = ?1)",
                [id.as_str()],
            )?;
            tx.execute(
                "DELETE FROM execution_logs WHERE execution_id IN (SELECT id FROM executions WHERE flow_id = ?1)",
                [id.as_str()],
            )?;
            tx.execute("DELETE FROM executions WHERE flow_id = ?1", [id.as_str()])?;
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn advance(&self, flow: &Flow, from_version: u64) -> Result<bool, StoreError> {
        let (id, version, body) = (flow.id.clone(), flow.version as i64, json(flow)?);
        self.run(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE flows SET version = ?1, body = ?2 WHERE id = ?3 AND version = ?4",
                )?
                .execute(params![version, body, id.as_str(), from_version as i64])?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_checkpoint(&self, flow: &Flow) -> Result<(), StoreError> {
        let (id, version, body) = (flow.id.clone(), flow.version as i64, json(flow)?);
        self.run(move |c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO checkpoints (flow_id, version, body) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id.as_str(), version, body])?;
            Ok(())
        })
        .await
    }

    async fn checkpoint_at_or_before(
        &self,
        flow: &FlowId,
        version: u64,
    ) -> Result<Option<Flow>, StoreError> {
        let id = flow.clone();
        self.run(move |c| {
            let body: Option<String> = c
                .prepare_cached(
                    "SELECT body FROM checkpoints WHERE flow_id = ?1 AND version <= ?2 ORDER BY version DESC LIMIT 1",
                )?
                .query_row(params![id.as_str(), version as i64], |r| r.get(0))
                .optional()?;
            body.as_deref().map(parse).transpose()
        })
        .await
    }

    async fn append(&self, flow: &FlowId, entries: &[LogEntry]) -> Result<Append, StoreError> {
        let id = flow.clone();
        let rows = entries
            .iter()
            .map(|e| {
                Ok((
                    e.version as i64,
                    e.op_id.to_string(),
                    e.actor.id.to_string(),
                    e.undo_of.map(|v| v as i64),
                    json(e)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.run(move |c| {
            // One transaction: the entries of a request land together or not at all.
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO flow_log (flow_id, version, op_id, actor_id, undo_of, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (version, op_id, actor, undo_of, body) in &rows {
                    match stmt.execute(params![id.as_str(), version, op_id, actor, undo_of, body]) {
                        Ok(_) => {}
                        Err(e) if is_constraint(&e) => return Ok(Append::Race),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            tx.commit()?;
            Ok(Append::Done)
        })
        .await
    }

    async fn commit(
        &self,
        flow: &FlowId,
        entries: &[LogEntry],
        snapshot: &Flow,
        from: Base,
        checkpoint: bool,
    ) -> Result<Append, StoreError> {
        let (from_version, held) = match from {
            Base::Read(v) => (v, false),
            Base::Held(v) => (v, true),
        };
        let rows = entries
            .iter()
            .map(|e| {
                Ok((
                    e.version as i64,
                    e.op_id.to_string(),
                    e.actor.id.to_string(),
                    e.undo_of.map(|v| v as i64),
                    json(e)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let commit = PendingCommit {
            flow: flow.to_string(),
            rows,
            version: snapshot.version as i64,
            body: json(snapshot)?,
            created_at: time(snapshot.created_at),
            from_version: from_version as i64,
            held,
            checkpoint,
        };
        let conn = self.conn.clone();
        self.commits
            .run(commit, move |batch| Self::write_commits(&conn, batch))
            .await
    }

    async fn log(
        &self,
        flow: &FlowId,
        after: u64,
        upto: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let id = flow.clone();
        self.read(move |c| log(c, &id, after, upto, limit)).await
    }

    async fn entries_by_op_id(
        &self,
        flow: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Vec<LogEntry>, StoreError> {
        if op_ids.is_empty() {
            return Ok(vec![]); // no read at all
        }
        let (id, op_ids) = (flow.clone(), op_ids.to_vec());
        self.read(move |c| entries_by_op_id(c, &id, &op_ids)).await
    }

    /// A commit writes its entries and advances the snapshot in one transaction, so the
    /// snapshot is always the log's head, and a held head is checked where it is written.
    fn holds_heads(&self) -> bool {
        true
    }

    async fn commit_base(
        &self,
        flow: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Option<CommitBase>, StoreError> {
        let base = PendingBase {
            flow: flow.clone(),
            op_ids: op_ids.to_vec(),
        };
        let reader = self.reader.clone();
        self.bases
            .run(base, move |batch| Self::read_bases(&reader, batch))
            .await
    }

    async fn entries_by_actor(
        &self,
        flow: &FlowId,
        actor: &ActorId,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let (id, actor) = (flow.clone(), actor.clone());
        self.read(move |c| {
            entries(
                c,
                "SELECT body FROM flow_log WHERE flow_id = ?1 AND actor_id = ?2 ORDER BY version DESC LIMIT +?3",
                params![id.as_str(), actor.as_str(), limit as i64],
            )
        })
        .await
    }

    async fn entries_at(
        &self,
        flow: &FlowId,
        versions: &[u64],
    ) -> Result<Vec<LogEntry>, StoreError> {
        if versions.is_empty() {
            return Ok(vec![]); // no read at all
        }
        let id = flow.clone();
        let values = versions.iter().map(|v| Value::Integer(*v as i64)).collect();
        self.read(move |c| entries_in(c, &id, "version", values))
            .await
    }

    async fn undone_among(&self, flow: &FlowId, versions: &[u64]) -> Result<Vec<u64>, StoreError> {
        if versions.is_empty() {
            return Ok(vec![]);
        }
        let sql = undone_among(versions.len());
        let args = flow_and_versions(flow, versions);
        self.read(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let undone = stmt
                .query_map(params_from_iter(args), |r| r.get::<_, i64>(0))?
                .map(|v| v.map(|v| v as u64))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(undone)
        })
        .await
    }
}

#[async_trait]
impl Executions for SqliteBackend {
    async fn insert_execution(&self, execution: &Execution) -> Result<(), StoreError> {
        let e = execution.clone();
        let status = name(&e.status)?;
        let nodes = e
            .nodes
            .iter()
            .map(|n| {
                Ok((
                    n.node_id.to_string(),
                    name(&n.status)?,
                    n.output.as_ref().map(json).transpose()?,
                    n.error.clone(),
                    n.log.clone(),
                    n.log_index as i64,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.run(move |c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                "INSERT INTO executions (id, flow_id, flow_version, status, error, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![e.id.as_str(), e.flow_id.as_str(), e.flow_version as i64, status, e.error, time(e.created_at), time(e.updated_at)],
            );
            match inserted {
                Err(err) if is_constraint(&err) => return Err(StoreError::ExecutionExists(e.id)),
                other => other?,
            };
            for (position, (node_id, status, output, error, log, log_index)) in
                nodes.iter().enumerate()
            {
                tx.execute(
                    "INSERT INTO execution_nodes (execution_id, node_id, position, status, output, error, log, log_index) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![e.id.as_str(), node_id, position as i64, status, output, error, log, log_index],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn set_execution_status(
        &self,
        id: &ExecutionId,
        status: ExecutionStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, status, error) = (id.clone(), name(&status)?, error.map(str::to_owned));
        let [succeeded, failed, cancelled] = ended_names()?;
        self.run(move |c| {
            let n = c.execute(
                "UPDATE executions SET status = ?1, error = ?2, updated_at = ?3 \
                 WHERE id = ?4 AND status NOT IN (?5, ?6, ?7)",
                params![
                    status,
                    error,
                    time(now),
                    id.as_str(),
                    succeeded,
                    failed,
                    cancelled
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_node_run(
        &self,
        id: &ExecutionId,
        update: &NodeRunUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, node) = (id.clone(), update.node_id.clone());
        let (status, output, error) = (
            name(&update.status)?,
            update.output.as_ref().map(json).transpose()?,
            update.error.clone(),
        );
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE execution_nodes SET status = ?1, output = ?2, error = ?3 WHERE execution_id = ?4 AND node_id = ?5",
                params![status, output, error, id.as_str(), node.as_str()],
            )?;
            tx.execute("UPDATE executions SET updated_at = ?1 WHERE id = ?2", params![time(now), id.as_str()])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn append_node_log(
        &self,
        id: &ExecutionId,
        node: &NodeId,
        text: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<bool, StoreError> {
        let (id, node, text) = (id.clone(), node.clone(), text.to_owned());
        self.run(move |c| append_log(c, &id, &node, &text, chunks))
            .await
    }

    async fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>, StoreError> {
        let id = id.clone();
        self.run(move |c| load_execution(c, id.as_str())).await
    }

    async fn executions(&self, flow: &FlowId, limit: usize) -> Result<Vec<Execution>, StoreError> {
        let id = flow.clone();
        self.run(move |c| {
            let ids = c
                .prepare_cached("SELECT id FROM executions WHERE flow_id = ?1 ORDER BY created_at DESC, id DESC LIMIT +?2")?
                .query_map(params![id.as_str(), limit as i64], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            ids.iter()
                .filter_map(|id| load_execution(c, id).transpose())
                .collect()
        })
        .await
    }

    async fn unfinished_executions(
        &self,
        limit: usize,
    ) -> Result<Vec<(FlowId, ExecutionId)>, StoreError> {
        let (queued, running) = (
            name(&ExecutionStatus::Queued)?,
            name(&ExecutionStatus::Running)?,
        );
        self.run(move |c| {
            c.prepare_cached(
                "SELECT flow_id, id FROM executions WHERE status IN (?1, ?2) ORDER BY created_at, id LIMIT +?3",
            )?
            .query_map(params![queued, running, limit as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .map(|row| {
                let (flow, id) = row?;
                Ok((
                    FlowId::parse(flow).map_err(StoreError::corrupt)?,
                    ExecutionId::parse(id).map_err(StoreError::corrupt)?,
                ))
            })
            .collect()
        })
        .await
    }
}

/// Saves a batch of a node's text as its own row (an append never rewrites the text so
/// far); a batch saved again is stored once. Whether the node exists.
fn append_log(
    c: &Connection,
    id: &ExecutionId,
    node: &NodeId,
    text: &str,
    chunks: std::ops::Range<u64>,
) -> Result<bool, StoreError> {
    if !c
        .prepare_cached("SELECT 1 FROM execution_nodes WHERE execution_id = ?1 AND node_id = ?2")?
        .exists(params![id.as_str(), node.as_str()])?
    {
        return Ok(false);
    }
    c.prepare_cached(
        "INSERT OR IGNORE INTO execution_logs (execution_id, node_id, first_index, log_index, text) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        id.as_str(),
        node.as_str(),
        chunks.start as i64,
        chunks.end as i64,
        text
    ])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn a_log_read_is_planned_once_whatever_its_bounds() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let flow = FlowId::parse("f").unwrap();
        for after in 0..5 {
            log(
                &conn,
                &flow,
                after,
                Some(after + 10),
                Some(after as usize + 1),
            )
            .unwrap();
        }
        let statement = conn.prepare_cached(LOG).unwrap();
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
    }

    #[test]
    fn the_writer_checkpoints_the_log_at_its_own_size_and_commits_durably() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::open(&dir.path().join("s.db")).unwrap();
        let conn = backend.conn.lock().unwrap();
        let pragma =
            |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
        assert_eq!(pragma("wal_autocheckpoint"), WAL_CHECKPOINT_PAGES);
        assert_eq!(pragma("synchronous"), 2, "FULL");
    }

    #[tokio::test]
    async fn a_batch_that_panics_fails_its_jobs_and_the_next_ones_still_run() {
        let batches: Arc<Batches<u32, u32>> = Arc::default();
        let run = |batch: Vec<Job<u32, u32>>| {
            for (n, done) in batch {
                assert_ne!(n, 0, "a job that panics its batch");
                let _ = done.send(Ok(n * 2));
            }
        };
        // The next job is queued as soon as the first fails: often while the drainer is
        // still unwinding, so it must go on draining rather than leave the job queued.
        // (A deadline, not a timing: a job left queued would wait forever.)
        let deadline = std::time::Duration::from_secs(30);
        for _ in 0..50 {
            assert!(batches.run(0, run).await.is_err());
            let next = tokio::time::timeout(deadline, batches.run(21, run)).await;
            assert_eq!(next.expect("the next job ran").unwrap(), 42);
        }
    }

    #[tokio::test]
    async fn a_database_made_before_gains_the_added_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE flows (id TEXT PRIMARY KEY, version INTEGER NOT NULL, body TEXT NOT NULL);
                 CREATE TABLE execution_nodes (execution_id TEXT NOT NULL, node_id TEXT NOT NULL,
                   position INTEGER NOT NULL, status TEXT NOT NULL, output TEXT, error TEXT,
                   log TEXT NOT NULL DEFAULT '', PRIMARY KEY (execution_id, node_id));",
            )
            .unwrap();
        SqliteBackend::open(&path).unwrap().init().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        for (table, column, _) in ADDED_COLUMNS {
            let present = conn
                .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")
                .unwrap()
                .exists([table, column])
                .unwrap();
            assert!(present, "{table}.{column}");
        }
    }

    #[test]
    fn undone_versions_are_read_from_the_partial_index() {
        let conn = Connection::open_in_memory().unwrap();
        // A database made when the index held every op, then opened now.
        let before = SCHEMA.split_once("DROP INDEX").unwrap().0;
        conn.execute_batch(before).unwrap();
        conn.execute_batch("CREATE INDEX flow_log_undo ON flow_log (flow_id, undo_of)")
            .unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", undone_among(3)))
            .unwrap()
            .query_map(params!["f", 1, 2, 3], |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step.contains("flow_log_undone")),
            "{plan:?}"
        );
        let indexes: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'flow_log'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !indexes.contains(&"flow_log_undo".to_string()),
            "{indexes:?}"
        );
    }
}
