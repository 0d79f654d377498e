//! MongoDB backend: the store of the distributed deployment.
//!
//! Canvas JSON (snapshots, log entries, outputs) is kept as opaque text fields beside the
//! few fields queries need: user data may hold keys MongoDB treats specially (`$ref`,
//! `a.b`) and numbers BSON would not round-trip exactly (u64, `1.0` vs `1`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowsync_canvas::LogEntry;
use flowsync_protocol::{
    ActorId, Execution, ExecutionId, ExecutionStatus, Flow, FlowId, NodeId, NodeRun, NodeStatus,
    OpId,
};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::StoreError;
use crate::backend::{Append, Executions, FlowLog, NodeRunUpdate, join_batches};
use crate::codec::{ended_names, from_name, json, name, parse};

/// How to reach MongoDB.
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// Connection string.
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Acknowledge writes once a majority of the replica set has them (DESIGN §1.5);
    /// `false` acknowledges on the primary alone.
    pub majority: bool,
    /// How long to look for a usable server before an operation fails as unavailable, in
    /// milliseconds.
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub server_selection_timeout: Duration,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            uri: "mongodb://127.0.0.1:27017".into(),
            database: "flowsync".into(),
            majority: true,
            server_selection_timeout: Duration::from_secs(5),
        }
    }
}

/// The MongoDB backend.
#[derive(Debug, Clone)]
pub struct MongoBackend {
    /// The database, for `ping` and `drop`.
    db: Database,
    /// `{_id: flow_id, version, body}`: the current snapshot of each flow.
    flows: Collection<Document>,
    /// `{flow_id, version, op_id, actor_id, undo_of, body}`: the flow log.
    log: Collection<Document>,
    /// `{flow_id, version, body}`: time-travel checkpoints.
    checkpoints: Collection<Document>,
    /// `{_id, flow_id, flow_version, status, error, created_at, updated_at}` (times in µs).
    executions: Collection<Document>,
    /// `{_id: "<execution>/<node>", execution_id, flow_id, node_id, position, status,
    /// output, error, log: [chunks], log_index}`: one document per node, with the text it
    /// was created with.
    execution_nodes: Collection<Document>,
    /// `{_id: "<execution>/<node>/<first>-<end>", execution_id, flow_id, node_id,
    /// first_index, log_index, text}`: a node's streamed text, one document per saved batch
    /// of chunks `first_index..log_index` (an append never rewrites the text so far).
    execution_logs: Collection<Document>,
}

impl MongoBackend {
    /// Connects (lazily: an unreachable server shows on the first operation).
    pub async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&config.uri).await?;
        options.server_selection_timeout = Some(config.server_selection_timeout);
        options.app_name = Some("flowsync".into());
        let client = Client::with_options(options)?;
        let db = client.database(&config.database);
        let concern = if config.majority {
            WriteConcern::majority()
        } else {
            WriteConcern::nodes(1)
        };
        let opts = CollectionOptions::builder().write_concern(concern).build();
        let coll = |name: &str| db.collection_with_options::<Document>(name, opts.clone());
        Ok(Self {
            flows: coll("flows"),
            log: coll("flow_log"),
            checkpoints: coll("checkpoints"),
            executions: coll("executions"),
            execution_nodes: coll("execution_nodes"),
            execution_logs: coll("execution_logs"),
            db,
        })
    }

    /// Drops the whole database (tests).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        Ok(self.db.drop().await?)
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    const DUPLICATE_KEY: i32 = 11000;
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|w| w.code == DUPLICATE_KEY)),
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

fn body<T: DeserializeOwned>(doc: &Document) -> Result<T, StoreError> {
    parse(doc.get_str("body").map_err(StoreError::corrupt)?)
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::corrupt(format!("bad timestamp {us}")))
}

fn opt_str(doc: &Document, key: &str) -> Option<String> {
    doc.get_str(key).ok().map(str::to_owned)
}

async fn collect(cursor: mongodb::Cursor<Document>) -> Result<Vec<Document>, StoreError> {
    Ok(cursor.try_collect().await?)
}

fn log_entries(docs: &[Document]) -> Result<Vec<LogEntry>, StoreError> {
    docs.iter().map(body).collect()
}

fn versions_bson(versions: &[u64]) -> Vec<Bson> {
    versions.iter().map(|v| Bson::Int64(*v as i64)).collect()
}

impl MongoBackend {
    async fn load_execution(&self, head: &Document) -> Result<Execution, StoreError> {
        let id = head.get_str("_id").map_err(StoreError::corrupt)?;
        let nodes = collect(
            self.execution_nodes
                .find(doc! {"execution_id": id})
                .sort(doc! {"position": 1})
                .await?,
        )
        .await?;
        // A node's streamed text: what it was created with, then its saved batches.
        let mut saved: std::collections::HashMap<&str, Vec<(u64, u64, &str)>> = Default::default();
        let batches = collect(
            self.execution_logs
                .find(doc! {"execution_id": id})
                .sort(doc! {"node_id": 1, "first_index": 1, "log_index": -1})
                .await?,
        )
        .await?;
        for b in &batches {
            let field = |name: &str| b.get_i64(name).map_err(StoreError::corrupt);
            saved
                .entry(b.get_str("node_id").map_err(StoreError::corrupt)?)
                .or_default()
                .push((
                    field("first_index")? as u64,
                    field("log_index")? as u64,
                    b.get_str("text").map_err(StoreError::corrupt)?,
                ));
        }
        let nodes = nodes
            .iter()
            .map(|n| {
                let mut log = n
                    .get_array("log")
                    .map_err(StoreError::corrupt)?
                    .iter()
                    .filter_map(Bson::as_str)
                    .collect::<String>();
                let mut log_index = n.get_i64("log_index").unwrap_or(0) as u64;
                if let Some(batches) = n
                    .get_str("node_id")
                    .ok()
                    .and_then(|node| saved.remove(node))
                {
                    join_batches(&mut log, &mut log_index, batches);
                }
                Ok(NodeRun {
                    node_id: NodeId::parse(n.get_str("node_id").map_err(StoreError::corrupt)?)
                        .map_err(StoreError::corrupt)?,
                    status: from_name::<NodeStatus>(
                        n.get_str("status").map_err(StoreError::corrupt)?,
                    )?,
                    output: opt_str(n, "output")
                        .map(|o| serde_json::from_str(&o))
                        .transpose()?,
                    error: opt_str(n, "error"),
                    log,
                    log_index,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Execution {
            id: ExecutionId::parse(id).map_err(StoreError::corrupt)?,
            flow_id: FlowId::parse(head.get_str("flow_id").map_err(StoreError::corrupt)?)
                .map_err(StoreError::corrupt)?,
            flow_version: head.get_i64("flow_version").map_err(StoreError::corrupt)? as u64,
            status: from_name(head.get_str("status").map_err(StoreError::corrupt)?)?,
            error: opt_str(head, "error"),
            created_at: from_micros(head.get_i64("created_at").map_err(StoreError::corrupt)?)?,
            updated_at: from_micros(head.get_i64("updated_at").map_err(StoreError::corrupt)?)?,
            nodes,
        })
    }
}

#[async_trait]
impl FlowLog for MongoBackend {
    async fn init(&self) -> Result<(), StoreError> {
        let unique = || IndexOptions::builder().unique(true).build();
        self.log
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "version": 1})
                    .options(unique())
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "op_id": 1})
                    .options(unique())
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "actor_id": 1, "version": -1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "undo_of": 1})
                    .build(),
            ])
            .await?;
        self.checkpoints
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "version": 1})
                    .options(unique())
                    .build(),
            )
            .await?;
        self.executions
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! {"flow_id": 1, "created_at": -1})
                    .build(),
                IndexModel::builder()
                    .keys(doc! {"status": 1, "created_at": 1})
                    .build(),
            ])
            .await?;
        self.execution_nodes
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"execution_id": 1, "position": 1})
                    .build(),
            )
            .await?;
        self.execution_logs
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"execution_id": 1, "node_id": 1, "first_index": 1})
                    .build(),
            )
            .await?;
        self.execution_logs
            .create_index(IndexModel::builder().keys(doc! {"flow_id": 1}).build())
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    async fn insert_flow(&self, flow: &Flow) -> Result<(), StoreError> {
        let id = flow.id.as_str();
        if self.flows.find_one(doc! {"_id": id}).await?.is_some() {
            return Err(StoreError::FlowExists(flow.id.clone()));
        }
        // Leftovers of a deleted flow of the same id must not fold into the new one.
        self.log.delete_many(doc! {"flow_id": id}).await?;
        self.checkpoints.delete_many(doc! {"flow_id": id}).await?;
        match self
            .flows
            .insert_one(doc! {"_id": id, "version": flow.version as i64, "body": json(flow)?})
            .await
        {
            Err(e) if is_duplicate_key(&e) => Err(StoreError::FlowExists(flow.id.clone())),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    async fn snapshot(&self, flow: &FlowId) -> Result<Option<Flow>, StoreError> {
        self.flows
            .find_one(doc! {"_id": flow.as_str()})
            .await?
            .as_ref()
            .map(body)
            .transpose()
    }

    async fn list_snapshots(
        &self,
        after: Option<&FlowId>,
        limit: usize,
    ) -> Result<Vec<Flow>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let filter = match after {
            Some(a) => doc! {"_id": {"$gt": a.as_str()}},
            None => doc! {},
        };
        let docs = collect(
            self.flows
                .find(filter)
                .sort(doc! {"_id": 1})
                .limit(limit as i64)
                .await?,
        )
        .await?;
        docs.iter().map(body).collect()
    }

    async fn delete_flow(&self, flow: &FlowId) -> Result<bool, StoreError> {
        let id = flow.as_str();
        let deleted = self.flows.delete_one(doc! {"_id": id}).await?.deleted_count > 0;
        self.log.delete_many(doc! {"flow_id": id}).await?;
        self.checkpoints.delete_many(doc! {"flow_id": id}).await?;
        self.execution_nodes
            .delete_many(doc! {"flow_id": id})
            .await?;
        self.execution_logs
            .delete_many(doc! {"flow_id": id})
            .await?;
        self.executions.delete_many(doc! {"flow_id": id}).await?;
        Ok(deleted)
    }

    async fn advance(&self, flow: &Flow, from_version: u64) -> Result<bool, StoreError> {
        let r = self
            .flows
            .update_one(
                doc! {"_id": flow.id.as_str(), "version": from_version as i64},
                doc! {"$set": {"version": flow.version as i64, "body": json(flow)?}},
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    async fn put_checkpoint(&self, flow: &Flow) -> Result<(), StoreError> {
        self.checkpoints
            .replace_one(
                doc! {"flow_id": flow.id.as_str(), "version": flow.version as i64},
                doc! {"flow_id": flow.id.as_str(), "version": flow.version as i64, "body": json(flow)?},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn checkpoint_at_or_before(
        &self,
        flow: &FlowId,
        version: u64,
    ) -> Result<Option<Flow>, StoreError> {
        self.checkpoints
            .find_one(doc! {"flow_id": flow.as_str(), "version": {"$lte": version as i64}})
            .sort(doc! {"version": -1})
            .await?
            .as_ref()
            .map(body)
            .transpose()
    }

    async fn append(&self, flow: &FlowId, entries: &[LogEntry]) -> Result<Append, StoreError> {
        let docs = entries
            .iter()
            .map(|e| {
                Ok(doc! {
                    "flow_id": flow.as_str(),
                    "version": e.version as i64,
                    "op_id": e.op_id.as_str(),
                    "actor_id": e.actor.id.as_str(),
                    "undo_of": e.undo_of.map(|v| v as i64),
                    "body": json(e)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Ordered: inserts stop at the first taken version, so what landed is a prefix of
        // whole entries, which the retry finds by op id (DESIGN §4).
        match self.log.insert_many(docs).ordered(true).await {
            Ok(_) => Ok(Append::Done),
            Err(e) if is_duplicate_key(&e) => Ok(Append::Race),
            Err(e) => Err(e.into()),
        }
    }

    async fn log(
        &self,
        flow: &FlowId,
        after: u64,
        upto: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<LogEntry>, StoreError> {
        // MongoDB reads `limit(0)` as "no limit".
        if limit == Some(0) {
            return Ok(vec![]);
        }
        let mut range = doc! {"$gt": after as i64};
        if let Some(upto) = upto {
            range.insert("$lte", upto as i64);
        }
        let mut find = self
            .log
            .find(doc! {"flow_id": flow.as_str(), "version": range})
            .sort(doc! {"version": 1});
        if let Some(limit) = limit {
            find = find.limit(limit as i64);
        }
        log_entries(&collect(find.await?).await?)
    }

    async fn entries_by_op_id(
        &self,
        flow: &FlowId,
        op_ids: &[OpId],
    ) -> Result<Vec<LogEntry>, StoreError> {
        if op_ids.is_empty() {
            return Ok(vec![]);
        }
        let ids: Vec<&str> = op_ids.iter().map(OpId::as_str).collect();
        log_entries(
            &collect(
                self.log
                    .find(doc! {"flow_id": flow.as_str(), "op_id": {"$in": ids}})
                    .await?,
            )
            .await?,
        )
    }

    async fn entries_by_actor(
        &self,
        flow: &FlowId,
        actor: &ActorId,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let find = self
            .log
            .find(doc! {"flow_id": flow.as_str(), "actor_id": actor.as_str()})
            .sort(doc! {"version": -1})
            .limit(limit as i64);
        log_entries(&collect(find.await?).await?)
    }

    async fn entries_at(
        &self,
        flow: &FlowId,
        versions: &[u64],
    ) -> Result<Vec<LogEntry>, StoreError> {
        if versions.is_empty() {
            return Ok(vec![]);
        }
        let find = self
            .log
            .find(doc! {"flow_id": flow.as_str(), "version": {"$in": versions_bson(versions)}});
        log_entries(&collect(find.await?).await?)
    }

    async fn undone_among(&self, flow: &FlowId, versions: &[u64]) -> Result<Vec<u64>, StoreError> {
        if versions.is_empty() {
            return Ok(vec![]);
        }
        let docs = collect(
            self.log
                .find(doc! {"flow_id": flow.as_str(), "undo_of": {"$in": versions_bson(versions)}})
                .projection(doc! {"undo_of": 1})
                .await?,
        )
        .await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_i64("undo_of").ok())
            .map(|v| v as u64)
            .collect())
    }
}

#[async_trait]
impl Executions for MongoBackend {
    async fn insert_execution(&self, e: &Execution) -> Result<(), StoreError> {
        let head = doc! {
            "_id": e.id.as_str(),
            "flow_id": e.flow_id.as_str(),
            "flow_version": e.flow_version as i64,
            "status": name(&e.status)?,
            "error": e.error.clone(),
            "created_at": micros(e.created_at),
            "updated_at": micros(e.updated_at),
        };
        match self.executions.insert_one(head).await {
            Err(err) if is_duplicate_key(&err) => {
                return Err(StoreError::ExecutionExists(e.id.clone()));
            }
            other => other?,
        };
        if e.nodes.is_empty() {
            return Ok(());
        }
        let nodes = e
            .nodes
            .iter()
            .enumerate()
            .map(|(position, n)| {
                let log: Vec<&str> = if n.log.is_empty() {
                    vec![]
                } else {
                    vec![n.log.as_str()]
                };
                Ok(doc! {
                    "_id": format!("{}/{}", e.id, n.node_id),
                    "execution_id": e.id.as_str(),
                    "flow_id": e.flow_id.as_str(),
                    "node_id": n.node_id.as_str(),
                    "position": position as i64,
                    "status": name(&n.status)?,
                    "output": n.output.as_ref().map(json).transpose()?,
                    "error": n.error.clone(),
                    "log": log,
                    "log_index": n.log_index as i64,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.execution_nodes.insert_many(nodes).await?;
        Ok(())
    }

    async fn set_execution_status(
        &self,
        id: &ExecutionId,
        status: ExecutionStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = self
            .executions
            .update_one(
                doc! {"_id": id.as_str(), "status": {"$nin": ended_names()?.to_vec()}},
                doc! {"$set": {"status": name(&status)?, "error": error, "updated_at": micros(now)}},
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    async fn set_node_run(
        &self,
        id: &ExecutionId,
        update: &NodeRunUpdate,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let r = self
            .execution_nodes
            .update_one(
                doc! {"_id": format!("{id}/{}", update.node_id)},
                doc! {"$set": {
                    "status": name(&update.status)?,
                    "output": update.output.as_ref().map(json).transpose()?,
                    "error": update.error.clone(),
                }},
            )
            .await?;
        self.executions
            .update_one(
                doc! {"_id": id.as_str()},
                doc! {"$set": {"updated_at": micros(now)}},
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    async fn append_node_log(
        &self,
        id: &ExecutionId,
        node: &NodeId,
        text: &str,
        chunks: std::ops::Range<u64>,
    ) -> Result<bool, StoreError> {
        let key = format!("{id}/{node}");
        let Some(run) = self.execution_nodes.find_one(doc! {"_id": &key}).await? else {
            return Ok(false);
        };
        let batch = doc! {
            "_id": format!("{key}/{}-{}", chunks.start, chunks.end),
            "execution_id": id.as_str(),
            "flow_id": run.get_str("flow_id").map_err(StoreError::corrupt)?,
            "node_id": node.as_str(),
            "first_index": chunks.start as i64,
            "log_index": chunks.end as i64,
            "text": text,
        };
        match self.execution_logs.insert_one(batch).await {
            Ok(_) => Ok(true),
            // The same batch saved again (a retry whose first answer was lost).
            Err(e) if is_duplicate_key(&e) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    async fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>, StoreError> {
        match self.executions.find_one(doc! {"_id": id.as_str()}).await? {
            Some(head) => self.load_execution(&head).await.map(Some),
            None => Ok(None),
        }
    }

    async fn executions(&self, flow: &FlowId, limit: usize) -> Result<Vec<Execution>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let heads = collect(
            self.executions
                .find(doc! {"flow_id": flow.as_str()})
                .sort(doc! {"created_at": -1, "_id": -1})
                .limit(limit as i64)
                .await?,
        )
        .await?;
        let mut out = Vec::with_capacity(heads.len());
        for head in &heads {
            out.push(self.load_execution(head).await?);
        }
        Ok(out)
    }

    async fn unfinished_executions(
        &self,
        limit: usize,
    ) -> Result<Vec<(FlowId, ExecutionId)>, StoreError> {
        if limit == 0 {
            return Ok(vec![]);
        }
        let statuses = [
            name(&ExecutionStatus::Queued)?,
            name(&ExecutionStatus::Running)?,
        ];
        let heads = collect(
            self.executions
                .find(doc! {"status": {"$in": statuses.to_vec()}})
                .projection(doc! {"flow_id": 1})
                .sort(doc! {"created_at": 1, "_id": 1})
                .limit(limit as i64)
                .await?,
        )
        .await?;
        heads
            .iter()
            .map(|head| {
                let text = |key| head.get_str(key).map_err(StoreError::corrupt);
                Ok((
                    FlowId::parse(text("flow_id")?).map_err(StoreError::corrupt)?,
                    ExecutionId::parse(text("_id")?).map_err(StoreError::corrupt)?,
                ))
            })
            .collect()
    }
}
