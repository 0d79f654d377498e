//! A tiny in-memory "store" driving the engine as the real store does.

use std::collections::HashSet;

use flowsync_canvas::{Batch, BatchResult, Canvas, Env, History, Limits, OpOutcome, apply_batch};
use flowsync_protocol::{
    Actor, ActorId, ActorKind, ClientId, Conflict, ConflictReason, FlowId, Op, OpId,
};
use serde_json::Value;

pub(crate) fn actor(id: &str) -> Actor {
    Actor {
        id: ActorId::parse(id).unwrap(),
        kind: if id.starts_with("agent") {
            ActorKind::Agent
        } else {
            ActorKind::User
        },
        name: id.to_uppercase(),
    }
}

pub(crate) fn op(v: Value) -> Op {
    Op::from_value(v).unwrap()
}

/// A flow with its log, as a store would keep it.
pub(crate) struct World {
    pub(crate) canvas: Canvas,
    pub(crate) history: History,
    pub(crate) limits: Limits,
    pub(crate) applied: HashSet<OpId>,
    next_id: u64,
    next_op: u64,
}

impl World {
    pub(crate) fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub(crate) fn with_limits(limits: Limits) -> Self {
        Self {
            canvas: Canvas::new(FlowId::parse("f1").unwrap(), "Flow"),
            history: History::new(),
            limits,
            applied: HashSet::new(),
            next_id: 0,
            next_op: 0,
        }
    }

    /// Sends ops (JSON, `op_id` filled in when missing) as `who`; logs what applied.
    pub(crate) fn send(&mut self, who: &str, ops: Vec<Value>) -> BatchResult {
        self.send_with(who, None, ops)
    }

    pub(crate) fn send_with(
        &mut self,
        who: &str,
        if_match: Option<u64>,
        ops: Vec<Value>,
    ) -> BatchResult {
        let ops: Vec<Op> = ops
            .into_iter()
            .map(|mut v| {
                if v.get("op_id").is_none() {
                    self.next_op += 1;
                    v["op_id"] = format!("op{}", self.next_op).into();
                }
                op(v)
            })
            .collect();
        self.send_ops(who, if_match, &ops)
    }

    pub(crate) fn send_ops(&mut self, who: &str, if_match: Option<u64>, ops: &[Op]) -> BatchResult {
        let actor = actor(who);
        let client = ClientId::parse(format!("{who}-tab")).unwrap();
        let batch = Batch {
            actor: &actor,
            client_id: &client,
            if_match,
            ops,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        };
        let applied = &self.applied;
        let next_id = &mut self.next_id;
        let mut new_id = || {
            *next_id += 1;
            format!("gen{next_id}")
        };
        let result = apply_batch(
            &mut self.canvas,
            &batch,
            &mut Env {
                limits: &self.limits,
                history: &self.history,
                already_applied: &|id| applied.contains(id),
                new_id: &mut new_id,
            },
        );
        for entry in &result.entries {
            self.applied.insert(entry.op_id.clone());
            self.history.insert(entry.clone());
        }
        result
    }

    /// Sends one op and expects it applied.
    pub(crate) fn ok(&mut self, who: &str, v: Value) -> flowsync_canvas::LogEntry {
        let before = self.canvas.version();
        let shown = v.to_string();
        let r = self.send(who, vec![v]);
        match &r.outcomes[..] {
            [OpOutcome::Applied(0)] => {}
            other => panic!("{shown} was not applied: {other:?}"),
        }
        assert_eq!(self.canvas.version(), before + 1);
        r.entries[0].clone()
    }

    /// Sends one op and expects it refused for `reason`; checks nothing changed.
    pub(crate) fn refused(&mut self, who: &str, v: Value, reason: ConflictReason) -> Conflict {
        let before = self.canvas.clone();
        let shown = v.to_string();
        let r = self.send(who, vec![v]);
        let v = shown;
        assert_eq!(self.canvas, before, "a refused op changed the canvas: {v}");
        match r.outcomes.into_iter().next() {
            Some(OpOutcome::Refused(c)) => {
                assert_eq!(c.reason, reason, "{v}: {}", c.message);
                assert_eq!(c.current_version, before.version());
                c
            }
            other => panic!("{v} was not refused: {other:?}"),
        }
    }
}

/// The node add op most tests start from.
pub(crate) fn add_node(id: &str) -> Value {
    serde_json::json!({"type":"node.add","node":{"id":id,"type":"note","position":{"x":0.0,"y":0.0},"data":{"text":""}}})
}

pub(crate) fn add_edge(id: &str, from: &str, to: &str) -> Value {
    serde_json::json!({"type":"edge.add","edge":{"id":id,"source":from,"target":to}})
}
