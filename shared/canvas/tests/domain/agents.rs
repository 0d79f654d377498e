//! The three-agents scenario (issue: canvas domain): three agents edit one node from the
//! same version; the first wins, the others reload and resend, and all end up applied.

use flowsync_canvas::OpOutcome;
use flowsync_protocol::ConflictReason;
use serde_json::json;

use crate::support::*;

#[test]
fn three_agents_one_node() {
    let mut w = World::new();
    w.ok("u1", add_node("n")); // v1: every agent reads the canvas here
    let v1 = w.canvas.version();
    let patch = |agent: &str, base: u64| json!({"type":"node.update","id":"n","patch":{agent:true},"base_version":base});

    let mut losers = vec![];
    for agent in ["agent-a", "agent-b", "agent-c"] {
        let r = w.send(agent, vec![patch(agent, v1)]);
        match &r.outcomes[0] {
            OpOutcome::Applied(_) => assert_eq!(agent, "agent-a", "only the first applies"),
            OpOutcome::Refused(c) => {
                assert_eq!(c.reason, ConflictReason::VersionMismatch);
                assert_eq!(c.entity.as_ref().unwrap().version, Some(2));
                losers.push(agent);
            }
            OpOutcome::AlreadyApplied => panic!(),
        }
    }
    assert_eq!(losers, ["agent-b", "agent-c"]);

    // Each loser reloads (reads the current version) and resends.
    for agent in losers {
        let current = w.canvas.version();
        w.ok(agent, patch(agent, current));
    }
    let data = &w.canvas.node("n").unwrap().data;
    for agent in ["agent-a", "agent-b", "agent-c"] {
        assert_eq!(data[agent], true, "{agent}'s edit is there");
    }
    assert_eq!(w.canvas.version(), 4);
}
